"""Work never outlives its caller (server/runtime/cancel.py), through a real server.

Each test puts long torch work in flight on the server's one torch thread,
lets its caller go (a deadline, an explicit cancel, a dropped stream), then
asks for a small grad_cam on another model: it can only run once the long
work has left the torch thread, so its latency says how soon the work
stopped. "Soon" is measured against the long work's own cost, estimated in
the same test from a short calibration run, never a fixed number of seconds.
"""
from __future__ import annotations

import math
import time

import grpc
import numpy as np
import pytest

from netscope.server.app import ModelSpec, Server, ServerConfig
from netscope.v1 import inspector_pb2 as pb

SIZE = 128  # input side: resnet18 at 128x128 costs a few tens of ms per integrated-gradients step on 2 cores
STEPS = 1000  # the long Explain: about 30 s uncancelled on 2 cores
CAL_STEPS = 64
BATCH = 8  # integrated-gradients steps per forward pass: the work checks its caller at every block of each


def image(size: int = SIZE, seed: int = 0) -> pb.Image:
    a = np.random.default_rng(seed).standard_normal((3, size, size)).astype(np.float32)
    return pb.Image(tensor=pb.Tensor(dtype=pb.FLOAT32, shape=[3, size, size], data=a.tobytes()))


def ig(steps: int, model: str = "r18", seed: int = 0) -> pb.ExplainRequest:
    return pb.ExplainRequest(model=model, method="integrated_gradients", images=[image(seed=seed)],
                             options=pb.ExplainOptions(steps=steps, batch_size=BATCH))


def follow_up(stub) -> float:
    """Seconds a small grad_cam on the other model takes: it waits for the torch thread."""
    start = time.monotonic()
    stub.Explain(pb.ExplainRequest(model="mnv3", method="grad_cam", images=[image(64, seed=1)]), timeout=300)
    return time.monotonic() - start


LONG_S = 30  # how long the uncancelled work should take, whatever the machine's speed


def side_for(per_image_s: float, n: int, side: int, max_side: int) -> int:
    """The image side at which n images cost about LONG_S, given that one at `side`
    costs per_image_s (the work grows with the pixels): calibration sizes the work,
    so a fast idle machine still has enough of it to tell a stop from an end."""
    scale = (LONG_S / max(n * per_image_s, 1e-3)) ** 0.5
    return int(min(max_side, max(side, side * scale)))


def calls_for(per_call_s: float) -> int:
    """How many equal calls, queued one behind the other, make about LONG_S of work."""
    return max(2, math.ceil(LONG_S / max(per_call_s, 1e-3)))


def timed(call) -> float:
    start = time.monotonic()
    call()
    return time.monotonic() - start


def left_clean(module) -> None:
    """No hooks of any kind on any module, no .grad on any parameter, eval mode."""
    for name, m in module.named_modules():
        hooks = (m._forward_hooks, m._forward_pre_hooks, m._backward_hooks, m._backward_pre_hooks)
        assert not any(hooks), f"{name or 'model'} kept hooks"
    assert not any(p.grad is not None for p in module.parameters())
    assert not module.training


def assert_stopped_early(stub, estimate_s: float, started: float, let_go: float, what: str) -> float:
    """The torch thread is free well before the long work would have ended.
    Returns seconds from letting go to the follow-up's answer."""
    follow_up(stub)
    freed = time.monotonic() - let_go
    remaining = estimate_s - (let_go - started)
    assert remaining > 8, f"calibration says the {what} would end in {remaining:.1f} s: too short to tell"
    assert freed < remaining / 2, (f"the torch thread was busy {freed:.1f} s after the {what}'s caller went, "
                                   f"against {remaining:.1f} s left uncancelled")
    return freed


@pytest.fixture(scope="module")
def ig_s_per_step(client):
    """Seconds per integrated-gradients step on r18, measured now (after a warm-up)."""
    client.stub.Explain(ig(8), timeout=300)
    return timed(lambda: client.stub.Explain(ig(CAL_STEPS), timeout=300)) / CAL_STEPS


@pytest.fixture
def r18(server):
    return server.registry.get("r18").module


def test_an_explain_past_its_deadline_stops_and_frees_the_torch_thread(client, ig_s_per_step, r18):
    estimate = ig_s_per_step * STEPS
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as err:
        client.stub.Explain(ig(STEPS), timeout=1.5)
    let_go = time.monotonic()
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert_stopped_early(client.stub, estimate, started, let_go, "deadline-exceeded Explain")
    left_clean(r18)


def test_a_cancelled_explain_stops_and_frees_the_torch_thread(client, ig_s_per_step, r18):
    estimate = ig_s_per_step * STEPS
    started = time.monotonic()
    future = client.stub.Explain.future(ig(STEPS), timeout=300)
    time.sleep(1.0)
    future.cancel()
    let_go = time.monotonic()
    assert future.cancelled()
    assert_stopped_early(client.stub, estimate, started, let_go, "cancelled Explain")
    left_clean(r18)


def test_queued_work_of_a_gone_caller_never_starts(client, ig_s_per_step, r18):
    """Three long Explains queue behind each other on the torch thread; all
    three callers go: none of them runs to its end, nor starts late."""
    estimate = 3 * ig_s_per_step * STEPS
    started = time.monotonic()
    futures = [client.stub.Explain.future(ig(STEPS, seed=i), timeout=2.0) for i in range(3)]
    for f in futures:
        with pytest.raises(grpc.RpcError) as err:
            f.result()
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    let_go = time.monotonic()
    assert_stopped_early(client.stub, estimate, started, let_go, "three queued Explains")
    left_clean(r18)


def test_a_dropped_explain_stream_stops_its_torch_work(client, ig_s_per_step, r18):
    estimate = ig_s_per_step * STEPS

    def items():
        for i in range(3):
            yield pb.ExplainStreamRequest(id=str(i), request=ig(STEPS, seed=i))
        time.sleep(600)  # the caller keeps the stream open, then drops it

    started = time.monotonic()
    call = client.stub.ExplainStream(items(), timeout=300)
    time.sleep(1.5)
    call.cancel()
    let_go = time.monotonic()
    assert_stopped_early(client.stub, estimate, started, let_go, "dropped ExplainStream")
    left_clean(r18)


def test_faithfulness_metrics_stop_with_their_caller(client, r18):
    """The metrics run after the maps, chunk by chunk, one class map at a time."""
    def request(n, size=64):
        return pb.ExplainRequest(model="r18", method="grad_cam", images=[image(size, seed=i) for i in range(n)],
                                 target=pb.Target(top_k=4), options=pb.ExplainOptions(faithfulness=True))

    client.stub.Explain(request(1), timeout=300)  # warm
    # 16 images x 4 classes of maps at the input's size must fit the message limit: at most 224 px.
    size = side_for(timed(lambda: client.stub.Explain(request(1), timeout=300)), 16, 64, 224)
    estimate = 16 * timed(lambda: client.stub.Explain(request(1, size), timeout=300))  # 64 maps
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as err:
        client.stub.Explain(request(16, size), timeout=max(1.0, estimate / 8))
    let_go = time.monotonic()
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert_stopped_early(client.stub, estimate, started, let_go, "faithfulness metrics")
    left_clean(r18)


def feature_maps(n: int) -> pb.FeatureMapsRequest:
    return pb.FeatureMapsRequest(model="r18", layers=["conv1", "layer1", "layer2", "layer3"],
                                 grid=pb.GridOptions(render=True, upsample_to_input=True),
                                 images=[image(seed=i) for i in range(n)])


def test_feature_maps_stop_with_their_caller(client, r18):
    client.stub.GetFeatureMaps(feature_maps(1), timeout=300)  # warm
    per_call = 16 * timed(lambda: client.stub.GetFeatureMaps(feature_maps(4), timeout=300))  # 64 images
    n = calls_for(per_call)  # one runs, the rest queue behind it and must never start
    estimate = n * per_call
    started = time.monotonic()
    futures = [client.stub.GetFeatureMaps.future(feature_maps(64), timeout=300) for _ in range(n)]
    time.sleep(max(0.5, per_call / 10))
    for f in futures:
        f.cancel()
    let_go = time.monotonic()
    assert_stopped_early(client.stub, estimate, started, let_go, f"{n} feature-maps calls")
    left_clean(r18)


def test_layer_stats_stop_with_their_caller(client, r18):
    def stats(n):
        return pb.LayerStatsRequest(model="r18", images=[image(seed=i) for i in range(n)], bins=4096)

    client.stub.GetLayerStats(stats(1), timeout=300)  # warm
    per_call = 16 * timed(lambda: client.stub.GetLayerStats(stats(4), timeout=300))  # 64 images
    n = calls_for(per_call)  # in a row: those queued behind the first must never start
    estimate = n * per_call
    started = time.monotonic()
    futures = [client.stub.GetLayerStats.future(stats(64), timeout=max(0.5, per_call / 10)) for _ in range(n)]
    for f in futures:
        with pytest.raises(grpc.RpcError) as err:
            f.result()
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    let_go = time.monotonic()
    assert_stopped_early(client.stub, estimate, started, let_go, f"{n} layer-stats calls")
    left_clean(r18)


@pytest.fixture(scope="module")
def batching_server(store):
    """resnet18 with dynamic batching: concurrent equal Explains share a device batch."""
    spec = ModelSpec("b18", "resnet18", max_batch_size=4, max_delay_ms=300)
    srv = Server(ServerConfig(address="127.0.0.1:0", models=[spec, ModelSpec("mnv3", "mobilenet_v3_small")],
                              store=str(store), device="cpu", grace_s=1)).start()
    channel = grpc.insecure_channel(srv.address)
    from netscope.v1 import inspector_pb2_grpc as pb_grpc

    yield srv, pb_grpc.InspectorStub(channel)
    channel.close()
    srv.stop(grace=0)


def test_a_shared_batch_goes_on_for_its_remaining_caller_and_stops_when_all_have_gone(batching_server, ig_s_per_step):
    srv, stub = batching_server
    module = srv.registry.get("b18").module
    stub.Explain(ig(8, model="b18"), timeout=300)  # warm
    # One caller of a two-request batch leaves: the other still gets its answer, from the shared batch.
    steps = CAL_STEPS
    leaver = stub.Explain.future(ig(steps, model="b18", seed=1), timeout=300)
    stayer = stub.Explain.future(ig(steps, model="b18", seed=2), timeout=300)
    time.sleep(0.6 + 2 * ig_s_per_step * steps / 4)  # the batch is under way
    leaver.cancel()
    answer = stayer.result()
    assert answer.timing.device_batch_size == 2
    assert len(answer.explanations) == 1
    left_clean(module)

    # Both callers of a long batch leave: its work stops.
    estimate = 2 * ig_s_per_step * STEPS
    started = time.monotonic()
    futures = [stub.Explain.future(ig(STEPS, model="b18", seed=i), timeout=300) for i in range(2)]
    time.sleep(1.5)
    for f in futures:
        f.cancel()
    let_go = time.monotonic()
    assert_stopped_early(stub, estimate, started, let_go, "cancelled shared batch")
    left_clean(module)
