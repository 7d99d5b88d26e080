"""Discovery (issue 13 §3): GetServerInfo from the client and the CLI, checked
against the method registry and the server's own limits; the CLI's option
flags and help come from the schema."""
from __future__ import annotations

import json
import platform
from dataclasses import fields
from importlib import metadata

import grpc
import pytest
import torch
import torchvision

from netscope import cli
from netscope.cli import explain_schema
from netscope.cli.option_flags import chosen_options
from netscope.client import Client, NetscopeError
from netscope.server.explain import methods as registry
from netscope.server.rpc import security
from netscope.server.app import Server, ServerConfig
from netscope.server.imaging import COLORMAPS
from netscope.server.models.registry import DTYPES

READ_TOKEN, ADMIN_TOKEN = "discovery-read-token-0123456789", "discovery-admin-token-0123456789"


def check_against_registry(info, limits) -> None:
    """Every number and name of `info` as the registry and `limits` (the
    server's service.Limits) have it."""
    specs = registry.methods()
    assert [m.name for m in info.methods] == list(specs)
    for m in info.methods:
        s = specs[m.name]
        assert (m.family, m.description, m.source, m.cost) == (s.family, s.description, s.source, s.cost)
        assert set(m.needs) == set(s.needs) and m.options == s.options
        assert (m.draws_noise, m.may_batch, m.signed) == (s.draws_noise, s.may_batch, s.signed)
    options = registry.options()
    assert [o.name for o in info.options] == list(options)
    for o in info.options:
        s = options[o.name]
        assert (o.type, o.default, o.minimum, o.choices, o.description) == (
            s.type, s.default, s.minimum, tuple(s.choices), s.description)
        assert o.ceiling == (s.ceiling or "")
        assert (o.minimum_exclusive, o.within_input, o.requires) == (s.exclusive, s.within_input, s.requires or "")
        assert o.ceiling_value == (getattr(limits.explain, s.ceiling) if s.ceiling else None)
        assert o.methods == tuple(n for n, m in specs.items() if o.name in m.options)
    assert info.default_method == registry.DEFAULT_METHOD
    lim = info.limits
    assert (lim.max_message_bytes, lim.max_pixels, lim.max_images, lim.stream_batch) == (
        limits.max_message_bytes, limits.max_pixels, limits.max_images, limits.stream_batch)
    assert lim.explain == {f.name: getattr(limits.explain, f.name) for f in fields(limits.explain)}


def test_server_info_from_the_client(client, server):
    info = client.server_info()
    assert info.version == metadata.version("netscope")
    b = info.build
    assert (b.python, b.torch, b.torchvision, b.cuda) == (platform.python_version(), torch.__version__,
                                                          torchvision.__version__, torch.version.cuda or "")
    assert b.captum and b.grpc == grpc.__version__
    assert [d.name for d in info.devices] == ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    for d in info.devices[1:]:
        assert d.description and d.total_memory_bytes > 0 and len(d.capability) == 2
    assert info.dtypes == list(DTYPES) and info.colormaps == list(COLORMAPS)
    assert set(info.models) == {m.id for m in server.registry.list()} >= {"r18", "mnv3"}
    check_against_registry(info, server.service.limits)
    assert info.method("grad_cam").family == "cam"
    with pytest.raises(KeyError, match="grad_cam"):
        info.method("grad_kam")


def test_a_servers_own_limits_are_reported(tmp_path):
    """Not the defaults: what this server was started with."""
    config = ServerConfig(address="127.0.0.1:0", store=str(tmp_path), device="cpu", workers=2, max_images=5,
                          max_pixels=123_456, stream_batch=3, max_message_mb=7, grace_s=1,
                          explain_limits={"steps": 7, "samples": 11, "memory_mb": 99})
    srv = Server(config).start()
    try:
        with Client(srv.address, timeout=30) as c:
            info = c.server_info()
        assert info.models == []
        assert (info.limits.max_images, info.limits.max_pixels, info.limits.stream_batch) == (5, 123_456, 3)
        with pytest.warns(DeprecationWarning, match="use Limits.max_images"):
            assert info.limits.max_batch == 5  # the old name, for one release
        assert info.limits.max_message_bytes == 7 * 2**20
        assert info.limits.explain["steps"] == 7 and info.limits.explain["memory_mb"] == 99
        if "steps" in registry.options():
            assert info.option("steps").ceiling_value == 7
        check_against_registry(info, srv.service.limits)
    finally:
        srv.stop(0)


def test_serve_max_images_and_its_deprecated_names(tmp_path, capsys):
    """--max-images (images in one request) beside --max-batch-size (the device batch of dynamic batching);
    the old --max-batch and TOML key max_batch still set it, with a warning naming the new name."""
    parser = cli.build_parser()
    serve = ["serve", "--model", "m=resnet18", "--store", str(tmp_path)]
    config = cli.serve.server_config(parser.parse_args([*serve, "--max-images", "9", "--max-batch-size", "4"]))
    assert config.max_images == 9 and config.models[0].options.batching.max_batch_size == 4
    assert "deprecated" not in capsys.readouterr().err
    config = cli.serve.server_config(parser.parse_args([*serve, "--max-batch", "7"]))
    assert config.max_images == 7 and config.models[0].options.batching.max_batch_size == 1  # the default: off
    assert "--max-batch is deprecated" in capsys.readouterr().err
    toml = tmp_path / "serve.toml"
    toml.write_text("max_batch = 6\n")
    config = cli.serve.server_config(parser.parse_args([*serve, "--config", str(toml)]))
    assert config.max_images == 6
    err = capsys.readouterr().err
    assert "max_batch" in err and "deprecated" in err and "use max_images" in err
    toml.write_text("max_batch = 6\nmax_images = 8\n")
    with pytest.raises(SystemExit, match="keep only max_images"):
        cli.serve.server_config(parser.parse_args([*serve, "--config", str(toml)]))
    help_text = parser._subparsers._group_actions[0].choices["serve"].format_help()
    assert "--max-images" in help_text and "--max-batch " not in help_text and "--max-batch\n" not in help_text


def test_a_read_token_may_ask(tmp_path):
    assert security.required_role("/netscope.v1.Inspector/GetServerInfo") == security.READ
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{READ_TOKEN} read\n{ADMIN_TOKEN} admin\n")
    srv = Server(ServerConfig(address="127.0.0.1:0", store=str(tmp_path), device="cpu", workers=2, grace_s=1,
                              auth_tokens=str(tokens))).start()
    try:
        with Client(srv.address, token=READ_TOKEN, timeout=30) as c:
            assert c.server_info().version == metadata.version("netscope")
        with Client(srv.address, timeout=30) as c, pytest.raises(NetscopeError) as err:
            c.server_info()
        assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
    finally:
        srv.stop(0)


# ---------------------------------------------------------------- the CLI

def test_cli_methods_table_and_json(run_cli, client, server):
    code, out, err = run_cli("methods")
    assert code == 0, err
    lines = out.splitlines()
    for name, spec in registry.methods().items():
        row = next((l for l in lines if l.split()[:1] == [name]), None)
        assert row is not None, f"{name} missing from `netscope methods`"
        assert spec.family in row and spec.cost in row
    assert f"{registry.DEFAULT_METHOD} *" in out
    code, out, err = run_cli("methods", "--json")
    assert code == 0, err
    d = json.loads(out)
    methods, options = explain_schema.from_dict(d)
    info = client.server_info()
    assert methods == info.methods and options == info.options
    assert d["limits"]["max_images"] == server.service.limits.max_images


def test_cli_one_method(run_cli):
    spec = next(s for s in registry.methods().values() if s.options)
    code, out, err = run_cli("methods", spec.name)
    assert code == 0, err
    assert spec.description in out and spec.source in out
    for name in spec.options:
        assert any(l.split()[:1] == [name] for l in out.splitlines()), name
    code, out, err = run_cli("methods", "grad_kam")
    assert code == 2 and "no method 'grad_kam'" in err and "grad_cam" in err


def test_cli_server_info(run_cli, server):
    code, out, err = run_cli("server-info")
    assert code == 0, err
    assert f"netscope {metadata.version('netscope')}" in out and f"torch {torch.__version__}" in out
    assert "devices: cpu" in out and "r18" in out
    limits = server.service.limits
    assert f"{limits.max_images} images per request" in out and f"steps {limits.explain.steps}" in out
    code, out, err = run_cli("server-info", "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["limits"]["explain"]["steps"] == limits.explain.steps and "r18" in d["models"]


def test_committed_schema_is_the_registrys():
    """The CLI's offline copy of the schema (cli/explain_schema.json) is
    what the registry declares (regenerate: scripts/gen_schema.py)."""
    methods, options = explain_schema.load()
    assert [m.name for m in methods] == list(registry.methods())
    assert [(o.name, o.type, o.default, o.description) for o in options] == [
        (s.name, s.type, s.default, s.description) for s in registry.options().values()]


def test_registry_order_does_not_depend_on_import_order():
    """The committed schema is in the registry's order however a process first reaches it
    (a test suite that imports attributions before cams once saw Captum's methods first)."""
    import subprocess
    import sys

    code = ("import netscope.server.explain.attributions\n"
            "from netscope.server.explain import methods\n"
            "print(','.join(methods.methods()), ','.join(methods.options()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    methods, options = explain_schema.load()
    assert out == [",".join(m.name for m in methods), ",".join(o.name for o in options)]


def test_every_option_has_a_flag_with_its_help(capsys):
    parser = cli.build_parser()
    for command in (["explain"], ["pointing"], ["bench"]):
        with pytest.raises(SystemExit):
            parser.parse_args([*command, "--help"])
        text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
        for o in registry.options().values():
            flag = "--" + o.name.replace("_", "-")
            assert flag in text, (command, flag)
            assert " ".join(o.description.split())[:40] in text, (command, o.name)


def test_option_flags_are_typed_by_the_schema(capsys):
    parser = cli.build_parser()
    args = parser.parse_args(["explain", "x.jpg", "--model", "m", "--out", "o", "--steps", "4", "--aug-smooth",
                              "--baseline", "blur", "--option", "seed=3"])
    assert chosen_options(args) == {"steps": 4, "aug_smooth": True, "baseline": "blur", "seed": 3}
    args = parser.parse_args(["bench", "--model", "m", "--rpc", "explain", "--batch-size", "8"])
    assert chosen_options(args) == {"batch_size": 8} and args.images_per_request == 1
    for bad in (["--steps", "ten"], ["--baseline", "plaid"], ["--aug-smooth", "maybe"]):
        with pytest.raises(SystemExit):
            parser.parse_args(["explain", "x.jpg", "--model", "m", "--out", "o", *bad])
        assert bad[0] in capsys.readouterr().err


def test_an_option_flag_reaches_the_server(run_cli, photo_files, tmp_path):
    """`--steps` through `netscope explain` to the server and back: accepted
    for the method that takes it."""
    out = tmp_path / "ig"
    code, stdout, err = run_cli("explain", str(photo_files["chelsea"]), "--model", "r18", "--method",
                                "integrated_gradients", "--steps", "2", "--out", str(out))
    assert code == 0, err + stdout
    job = json.loads((out / "job.json").read_text())
    assert _find(job, "steps") in (2, {"int_value": "2"}, {"intValue": "2"})  # a typed field or the map


def _find(d, key):
    """The value of `key` anywhere in nested dicts, or None."""
    if isinstance(d, dict):
        if key in d:
            return d[key]
        return next((v for v in (_find(x, key) for x in d.values()) if v is not None), None)
    return None
