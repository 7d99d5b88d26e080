"""Bounded explanations through a real server: every request is checked
before any work (options, ceilings, rendering, working memory, the answer's
size), and a map, logit or probability that is not finite is never OK."""
from __future__ import annotations

import time

import grpc
import numpy as np
import pytest
import torch

from netscope.client import Client, NetscopeError
from netscope.server.app import ModelSpec, Server, ServerConfig
from netscope.server.errors import FailedPrecondition
from netscope.server.explain import Ceilings
from netscope.server.explain.maps import first_component
from netscope.v1 import inspector_pb2 as pb

from ..conftest import encode


def refused(call) -> tuple[NetscopeError, float]:
    start = time.perf_counter()
    with pytest.raises(NetscopeError) as exc:
        call()
    return exc.value, time.perf_counter() - start


@pytest.fixture(scope="module")
def jpeg(photos):
    return encode(photos["chelsea"])


def test_bad_rendering_is_refused_before_a_long_explanation(client, jpeg):
    # What the refused request would cost: 1000 of the passes a 10-step IG makes.
    start = time.perf_counter()
    client.explain("r18", jpeg, method="integrated_gradients", steps=10)
    ten_steps = time.perf_counter() - start
    for bad in (dict(colormap="rainbowz"), dict(alpha=1.5), dict(alpha=float("nan"))):
        err, took = refused(lambda: client.explain("r18", jpeg, method="integrated_gradients", steps=1000,
                                                   overlay=True, **bad))
        assert err.code == grpc.StatusCode.INVALID_ARGUMENT
        assert ("colormap" in err.message) or ("render.alpha" in err.message)
        assert took < 2 * ten_steps, (bad, took, ten_steps)  # not one step of the 1000 was computed


@pytest.mark.parametrize("method,options,target,name,limit", [
    ("integrated_gradients", dict(steps=5000), {}, "steps", Ceilings.steps),
    ("score_cam", dict(batch_size=100_000), {}, "batch_size", Ceilings.batch_size),
    ("lime", dict(samples=50_000), {}, "samples", Ceilings.samples),
    ("saliency", dict(noise_tunnel="smoothgrad", nt_samples=100_000), {}, "nt_samples", Ceilings.nt_samples),
    ("finer_cam", dict(finer_classes=500), {}, "finer_classes", Ceilings.finer_classes),
    ("grad_cam", {}, dict(top_k=1000), "top_k", Ceilings.top_k),
])
def test_counts_over_a_ceiling_are_refused_naming_the_option_and_limit(client, jpeg, method, options, target,
                                                                       name, limit):
    err, took = refused(lambda: client.explain("r18", jpeg, method=method, **target, **options))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert f"{name} " in err.message and f"limit of {limit}" in err.message
    assert f"--explain-limit {name}=N" in err.message
    assert err.metadata.get("limit") == str(limit)
    assert any(f.endswith(name) for f, _ in err.field_violations)
    assert took < 5


def test_working_memory_over_the_budget_is_refused_up_front(client, jpeg):
    # steps=256 x batch_size=256 on resnet18 took +5.3 GB before; now refused, naming batch_size.
    err, took = refused(lambda: client.explain("r18", jpeg, method="integrated_gradients", steps=256,
                                               batch_size=256))
    assert err.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "batch_size" in err.message and "MiB" in err.message and "memory_mb" in err.message
    assert took < 5


def test_an_answer_too_large_for_a_message_is_refused_before_computing(client, jpeg):
    err, took = refused(lambda: client.explain("r18", [jpeg] * 3, top_k=100, overlay=True, heatmap_png=True))
    assert err.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "fewer classes" in err.message and "PNGs" in err.message and "fewer images" in err.message
    assert took < 10


def test_faithfulness_is_bounded_in_maps(client, jpeg):
    err, _ = refused(lambda: client.explain("mnv3", [jpeg] * 9, top_k=8, faithfulness=True))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT and "faithfulness_maps" in err.message


def test_on_a_stream_an_oversized_item_gets_its_own_error_and_the_rest_are_answered(client, jpeg):
    def item(i, **kw):
        req = pb.ExplainRequest(model="r18", images=[pb.Image(encoded=jpeg)], method="grad_cam", **kw)
        return pb.ExplainStreamRequest(id=str(i), request=req)

    big = pb.ExplainRequest(model="r18", images=[pb.Image(encoded=jpeg)] * 3, target=pb.Target(top_k=100),
                            render_overlay=True, render_heatmap=True)
    items = [item(0), item(1, target=pb.Target(top_k=400)), pb.ExplainStreamRequest(id="2", request=big),
             item(3), item(4)]
    got = {r.id: r for r in client.stub.ExplainStream(iter(items), timeout=120)}
    assert set(got) == {"0", "1", "2", "3", "4"}
    assert got["1"].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and "top_k" in got["1"].error.message
    assert got["2"].error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    for i in ("0", "3", "4"):
        assert not got[i].HasField("error") and len(got[i].response.explanations) == 1


def test_limits_are_configurable(store, jpeg):
    config = ServerConfig(address="127.0.0.1:0", models=[ModelSpec("t", "resnet18")], store=str(store),
                          device="cpu", workers=4, explain_limits={"steps": 8, "memory_mb": 10_000})
    srv = Server(config).start()
    try:
        with Client(srv.address, timeout=60) as c:
            err, _ = refused(lambda: c.explain("t", jpeg, method="integrated_gradients", steps=9))
            assert "limit of 8" in err.message
            assert len(c.explain("t", jpeg, method="integrated_gradients", steps=8)) == 1
    finally:
        srv.stop(grace=0)
    with pytest.raises(ValueError, match="unknown explain limit"):
        Ceilings().with_overrides({"stepz": 3})


# ---------------------------------------------------------------- finite or refused


@pytest.fixture(scope="module")
def half_server(store):
    config = ServerConfig(address="127.0.0.1:0", store=str(store), device="cpu", workers=4,
                          models=[ModelSpec("h", "resnet18", dtype="float16"), ModelSpec("f", "resnet18")])
    srv = Server(config).start()
    with Client(srv.address, timeout=120) as c:
        yield c
    srv.stop(grace=0)


HALF_OPTIONS = {"deeplift": {}, "gradient_shap": {"seed": 3}, "integrated_gradients": {"steps": 8},
                "occlusion": {"window": 56}}


@pytest.mark.parametrize("method", sorted(HALF_OPTIONS))
def test_float16_models_give_finite_maps_close_to_float32(half_server, photos, method):
    img = encode(photos["astronaut"])
    opts = HALF_OPTIONS[method]
    half = half_server.explain("h", img, method=method, target=3, **opts)[0][0].heatmap
    full = half_server.explain("f", img, method=method, target=3, **opts)[0][0].heatmap
    assert np.isfinite(half).all()
    corr = np.corrcoef(half.ravel(), full.ravel())[0, 1]
    assert corr > 0.95, (method, corr)


def test_non_finite_logits_are_failed_precondition_never_ok(half_server):
    # Finite float32 input that overflows float16 inside the network.
    huge = np.full((3, 224, 224), 6e4, np.float32)
    for call in (lambda: half_server.predict("h", huge), lambda: half_server.explain("h", huge, method="grad_cam"),
                 lambda: half_server.explain("h", huge, method="saliency")):
        err, _ = refused(call)
        assert err.code == grpc.StatusCode.FAILED_PRECONDITION, err
        assert "non-finite" in err.message and "'h'" in err.message


def test_first_component_of_degenerate_maps():
    constant = torch.ones(2, 8, 7, 7)
    assert torch.equal(first_component(constant), torch.zeros(2, 7, 7))  # no variation: a zero map
    huge = torch.randn(1, 8, 7, 7, generator=torch.Generator().manual_seed(0)) * 1e36
    assert torch.isfinite(first_component(huge)).all()
    bad = torch.ones(1, 8, 7, 7)
    bad[0, 0, 0, 0] = float("inf")
    with pytest.raises(FailedPrecondition, match="non-finite"):
        first_component(bad)


def test_inputs_too_small_for_the_network_say_so():
    from netscope.server.errors import InvalidArgument
    from netscope.server.explain import explain

    from .conftest import batch, tiny

    for method in ("grad_cam", "saliency", "score_cam"):
        with pytest.raises(InvalidArgument, match="1x1 input is too small"):
            explain(tiny(), batch(1, 1), method)


def test_serve_flag_reaches_the_config():
    from netscope import cli

    args = cli.build_parser().parse_args(["serve", "--explain-limit", "steps=2000", "--explain-limit", "memory_mb=8192"])
    assert dict(args.explain_limit) == {"steps": 2000, "memory_mb": 8192}
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["serve", "--explain-limit", "stepz=3"])


def test_the_cpu_allocator_failing_is_resource_exhausted():
    from netscope.server.errors import status_of

    exc = RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: "
                       "you tried to allocate 21474836480 bytes.")
    code, message = status_of(exc)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "lower batch_size" in message


@pytest.mark.parametrize("bins,lo,hi,word", [(5, float("nan"), 1.0, "finite"), (5, -1e308, 1e308, "float32"),
                                             (5, 1.0, 1.0 + 1e-12, "empty in float32"), (10**6, 0.0, 0.0, "bins")])
def test_degenerate_histogram_options_are_invalid_argument(client, jpeg, bins, lo, hi, word):
    for images in (None, jpeg):
        err, _ = refused(lambda: client.layer_stats("r18", "fc", bins=bins, hist_range=(lo, hi), images=images))
        assert err.code == grpc.StatusCode.INVALID_ARGUMENT and word in err.message
