"""Structured error details through a real server: google.rpc.Status in the
trailers (ErrorInfo, BadRequest), decoded by the typed client and shown by the
CLI; the same on ExplainStream items; and the length cap on every string."""
from __future__ import annotations

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2, status_pb2

from netscope.client import NetscopeError
from netscope.v1 import inspector_pb2 as pb

from .conftest import encode

IMAGE = (np.arange(64 * 64 * 3) % 251).astype(np.uint8).reshape(64, 64, 3)


def failure(call) -> NetscopeError:
    with pytest.raises(NetscopeError) as info:
        call()
    return info.value


def test_not_found_carries_the_closest_names_in_error_info(client):
    err = failure(lambda: client.predict("r19", IMAGE))
    assert err.code == grpc.StatusCode.NOT_FOUND
    assert err.reason == "MODEL_NOT_FOUND" and err.domain == "netscope.dev"
    assert err.closest[0] == "r18" and err.metadata["closest"].startswith("r18")
    assert err.field_violations and err.field_violations[0][0] == "model"
    assert isinstance(err.details, status_pb2.Status) and err.details.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert err.details.message == err.message


def test_unknown_layer_names_its_neighbours(client):
    err = failure(lambda: client.feature_maps("r18", IMAGE, "layer5"))
    assert err.code == grpc.StatusCode.NOT_FOUND and err.reason == "LAYER_NOT_FOUND"
    assert "layer4" in err.closest


def test_invalid_argument_names_the_field(client):
    err = failure(lambda: client.explain("r18", IMAGE, method="grad_camm"))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT and err.reason == "METHOD_NOT_FOUND"
    assert [f for f, _ in err.field_violations] == ["method"]
    assert "grad_cam" in err.closest
    assert err.field_violations[0][1] == err.message


def test_details_are_standard_trailers_any_grpc_client_decodes(server):
    """No netscope client: the raw stub, and grpcio-status's own decoder."""
    from grpc_status import rpc_status

    from netscope.v1 import inspector_pb2_grpc as pb_grpc

    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.InspectorStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.Predict(pb.PredictRequest(model="mnv4", images=[pb.Image(encoded=encode(IMAGE))]), timeout=30)
    status = rpc_status.from_call(info.value)
    assert status is not None and status.code == grpc.StatusCode.NOT_FOUND.value[0]
    kinds = {d.type_url.rsplit("/", 1)[-1] for d in status.details}
    assert kinds == {"google.rpc.ErrorInfo", "google.rpc.BadRequest"}
    info_ = error_details_pb2.ErrorInfo()
    next(d for d in status.details if d.Is(info_.DESCRIPTOR)).Unpack(info_)
    assert info_.metadata["closest"].split(",")[0] == "mnv3"


def test_stream_item_errors_carry_the_same_details(client):
    items = [("one", IMAGE), ("two", IMAGE[::-1])]
    results = {r.id: r for r in client.explain_many(items, model="r18", method="grad_camm")}
    assert set(results) == {"one", "two"}  # an unknown method fails every item, each with its own details
    for r in results.values():
        assert r.error is not None and r.error.code == grpc.StatusCode.INVALID_ARGUMENT
        assert r.error.reason == "METHOD_NOT_FOUND" and "grad_cam" in r.error.closest
        assert r.error.field_violations[0][0] == "method"
        assert r.error.details.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    results = {r.id: r for r in client.explain_many([("a", IMAGE)], model="r17")}
    assert results["a"].error.code == grpc.StatusCode.NOT_FOUND and results["a"].error.closest[0] == "r18"


@pytest.mark.parametrize("call, field", [
    (lambda c: c.predict("x" * 100_000, IMAGE), "model"),
    (lambda c: c.explain("r18", IMAGE, layers=["layer4", "l" * 300]), "layers[1]"),
    (lambda c: c.explain("r18", IMAGE, baseline="z" * 1000), "options.baseline"),
    (lambda c: c.explain("r18", IMAGE, colormap="c" * 257), "render.colormap"),
    (lambda c: c.explain("r18", IMAGE, target="t" * 500), "target.label"),
    (lambda c: c.load_model("m", "s" * 5000), "source"),
    (lambda c: c.unload_model("u" * 300), "model"),
])
def test_every_string_field_is_capped_before_any_work(client, call, field):
    err = failure(lambda: call(client))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT and err.reason == "STRING_TOO_LONG"
    assert err.field_violations[0][0] == field
    limit = int(err.metadata["limit"])
    assert limit in (256, 1024) and f"at most {limit}" in err.message
    assert len(err.message) < 200  # the client's text is never echoed back


def test_a_long_string_on_a_stream_fails_its_item_only(client):
    items = [("long", IMAGE), ("fine", IMAGE)]
    got = {r.id: r for r in client.explain_many(items[:1], model="r18", layers=["x" * 1000])}
    assert got["long"].error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert got["long"].error.field_violations[0][0] == "layers[0]"
    got = {r.id: r for r in client.explain_many(items[1:], model="r18")}
    assert got["fine"].error is None and got["fine"].classes


def test_too_many_entries_in_a_repeated_string(client):
    err = failure(lambda: client.feature_maps("r18", IMAGE, ["layer1"] * 5000))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT and err.reason == "TOO_MANY_ENTRIES"
    assert err.field_violations[0][0] == "layers" and err.metadata["limit"] == "4096"


def test_messages_quote_only_a_prefix_of_client_text(client):
    name = "q" * 200  # under the cap, still never echoed whole
    err = failure(lambda: client.predict(name, IMAGE))
    assert err.code == grpc.StatusCode.NOT_FOUND
    assert name not in err.message and "(200 characters)" in err.message


def test_cli_prints_the_field_and_closest_names(run_cli, tmp_path):
    path = tmp_path / "x.png"
    path.write_bytes(encode(IMAGE, ".png"))
    code, _, err = run_cli("predict", "--model", "r19", str(path))
    assert code == 1 and "NOT_FOUND" in err and "field: model" in err and "r18" in err
