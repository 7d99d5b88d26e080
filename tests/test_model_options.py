"""One set of model options (issue 13 §5): the same ModelOptions reach a model
from the client's keywords, `netscope load` flags, a TOML [[models]] table and
an older client's LoadModelRequest fields; GetModelInfo reports them; every
path refuses the same bad values naming `options.NAME`."""
from __future__ import annotations

import argparse
import json

import grpc
import pytest

from netscope import cli
from netscope.cli import model_flags
from netscope.client import NetscopeError
from netscope.server.app import ModelSpec, Server, ServerConfig
from netscope.server.models.model_options import Batching, ModelOptions
from netscope.v1 import inspector_pb2 as pb

SOURCE = "squeezenet1_1"


@pytest.fixture
def unload(client):
    ids = []
    yield ids.append
    for model in ids:
        try:
            client.unload_model(model)
        except NetscopeError:
            pass


def test_client_keywords_reach_the_model_and_info_reports_them(client, unload):
    info = client.load_model("mo-client", SOURCE, max_batch_size=3, max_delay_ms=7.5, channels_last=True,
                             pin_memory=False, dtype="bfloat16")
    unload("mo-client")
    assert info.options == {"device": "cpu", "dtype": "bfloat16", "max_batch_size": 3, "max_delay_ms": 7.5,
                            "max_queue": 0, "channels_last": True, "compile": "", "compile_batch_sizes": [],
                            "device_decode": False, "pin_memory": False, "backend": "torch"}
    assert client.model_info("mo-client").options == info.options
    assert info.batching["max_batch_size"] == 3 and info.channels_last  # the older ModelInfo fields still filled
    with pytest.raises(TypeError, match="max_batch_size"):
        client.load_model("mo-typo", SOURCE, max_batch=3)


@pytest.mark.parametrize("options, field", [
    ({"max_batch_size": -1}, "options.batching.max_batch_size"),
    ({"max_delay_ms": float("nan")}, "options.batching.max_delay_ms"),
    ({"dtype": "float8"}, "options.dtype"),
    ({"device": "tpu"}, "options.device"),
])
def test_bad_options_are_invalid_argument_naming_the_field(client, options, field):
    with pytest.raises(NetscopeError) as err:
        client.load_model("mo-bad", SOURCE, **options)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.field_violations[0][0] == field
    assert "mo-bad" not in [m.model for m in client.list_models()]


def test_an_older_clients_fields_still_work_and_merge(client, unload):
    old = pb.LoadModelRequest(model="mo-old", source=SOURCE, device="cpu", channels_last=True, pin_memory=False,
                              batching=pb.BatchingOptions(max_batch_size=4, max_delay_ms=2))
    old.options.batching.max_queue = 9  # the rest in the new message: merged
    info = client.call("LoadModel", old).info
    unload("mo-old")
    assert (info.options.batching.max_batch_size, info.options.batching.max_queue) == (4, 9)
    assert info.options.channels_last and not info.options.pin_memory and info.options.device == "cpu"


@pytest.mark.parametrize("legacy, new, field", [
    ({"batching": pb.BatchingOptions(max_batch_size=4)}, {"batching": pb.BatchingOptions(max_batch_size=2)},
     "options.batching.max_batch_size"),
    ({"dtype": "float16"}, {"dtype": "float32"}, "options.dtype"),
    ({"pin_memory": True}, {"pin_memory": False}, "options.pin_memory"),
    ({"compile_batch_sizes": [1]}, {"compile_batch_sizes": [2]}, "options.compile_batch_sizes"),
])
def test_a_setting_given_both_ways_differently_is_invalid(client, legacy, new, field):
    req = pb.LoadModelRequest(model="mo-twice", source=SOURCE, options=pb.ModelOptions(**new), **legacy)
    with pytest.raises(NetscopeError) as err:
        client.call("LoadModel", req)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT and err.value.reason == "OPTION_SET_TWICE"
    assert err.value.field_violations[0][0] == field and "set it once" in err.value.message


def test_the_same_value_both_ways_is_fine(client, unload):
    req = pb.LoadModelRequest(model="mo-same", source=SOURCE, dtype="float32",
                              options=pb.ModelOptions(dtype="float32"))
    assert client.call("LoadModel", req).info.options.dtype == "float32"
    unload("mo-same")


def test_load_cli_flags(run_cli, client, unload):
    code, out, err = run_cli("load", "mo-cli", SOURCE, "--max-batch-size", "5", "--max-delay-ms", "3",
                             "--channels-last", "--no-pin-memory", "--json")
    unload("mo-cli")
    assert code == 0, err
    options = json.loads(out)["options"]
    assert (options["max_batch_size"], options["max_delay_ms"], options["channels_last"], options["pin_memory"]) == \
        (5, 3.0, True, False)
    code, _, err = run_cli("load", "mo-cli2", SOURCE, "--max-batch-size", "-2")
    assert code == 1 and "options.batching.max_batch_size" in err


def _flags(parser: argparse.ArgumentParser) -> dict[str, str]:
    return {a.option_strings[0]: a.dest for a in parser._actions if a.option_strings}


def test_serve_and_load_share_one_set_of_model_flags():
    sub = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    serve, load = _flags(sub.choices["serve"]), _flags(sub.choices["load"])
    for flag, _ in model_flags.MODEL_OPTION_FLAGS:
        assert serve[flag] == load[flag]
    # The flags' names are the options' flat names: the TOML keys and the client's keywords.
    assert set(model_flags.MODEL_OPTION_NAMES) == set(ModelOptions().flat())


def test_toml_models_table_and_serve_flags(tmp_path, store):
    toml = tmp_path / "serve.toml"
    toml.write_text('[[models]]\nid = "t"\nsource = "squeezenet1_1"\ndevice = "cpu"\nmax_batch_size = 6\n'
                    'channels_last = true\n[[models]]\nid = "u"\nsource = "squeezenet1_1"\n')
    args = cli.build_parser().parse_args(["serve", "--config", str(toml), "--max-delay-ms", "4", "--max-batch-size",
                                          "2", "--device", "cpu", "--store", str(store), "--address", "127.0.0.1:0"])
    config = cli.serve.server_config(args)
    t, u = config.models
    assert t.options == ModelOptions(device="cpu", batching=Batching(6, 4.0, 0), channels_last=True)  # the table wins
    assert u.options == ModelOptions(batching=Batching(2, 4.0, 0))
    assert config.device == "cpu"  # --device: the server's default for every model
    srv = Server(ServerConfig(address="127.0.0.1:0", models=[t], store=str(store), device="cpu", workers=2)).start()
    try:
        from netscope.client import Client

        with Client(srv.address, timeout=60) as c:
            info = c.model_info("t")
        assert (info.options["max_batch_size"], info.options["max_delay_ms"], info.options["channels_last"]) == \
            (6, 4.0, True)
    finally:
        srv.stop(grace=0)
    toml.write_text('[[models]]\nid = "t"\nsource = "squeezenet1_1"\nmax_batch = 6\n')
    with pytest.raises(SystemExit, match="max_batch_size"):  # an unknown key lists the known ones
        cli.serve.server_config(cli.build_parser().parse_args(["serve", "--config", str(toml)]))


def test_model_spec_and_registry_take_the_options_by_flat_name():
    spec = ModelSpec("r", "resnet18", device="cpu", max_batch_size=8, compile_batch_sizes=[1, 8])
    assert spec.options.batching.max_batch_size == 8 and spec.options.compile_batch_sizes == (1, 8)
    assert spec.with_options(max_queue=3).options.batching == Batching(8, 0.0, 3)
    with pytest.raises(TypeError, match="known"):
        ModelSpec("r", "resnet18", max_batch=8)
    opts = ModelOptions(dtype="float16", batching=Batching(4, 1.0, 2), compile_batch_sizes=(1, 4), pin_memory=False)
    assert ModelOptions.from_proto(opts.to_proto()) == opts
