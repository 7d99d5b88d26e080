"""ExplainStream shares the one torch thread fairly, and leaves nothing waiting.

Found by the soak (tests/bench/test_soak.py): a 4-item stream waited out its
30 s deadline, and everything behind it waited too. It was queued behind
another stream's 8 Score-CAM items, which the server had merged into one
device batch: one indivisible piece of torch work, as long as the 8 maps
together, whose first answer came only when all 8 were done, so the caller
that meant to cancel after its first answer could not. Methods whose forward
passes already hold batch_size inputs (MethodSpec.sampled) gain nothing from
a shared batch, so a stream now computes them item by item
(server/runtime/stream.py, `batches_well`).

A real server on a loopback port with a small CNN (simple_cnn, untrained);
images are float tensors, so their size sets the cost.
"""
from __future__ import annotations

import threading
import time

import grpc
import numpy as np
import pytest

from netscope.server.runtime import torch_thread
from netscope.server.app import Server, ServerConfig
from netscope.v1 import inspector_pb2 as pb
from netscope.v1 import inspector_pb2_grpc as pb_grpc

from .test_cancel import left_clean

SIZE = 64  # score_cam on simple_cnn at 64x64: 128 masked copies, about a tenth of a second on 2 cores


def tensor(size: int = SIZE, seed: int = 0) -> pb.Image:
    a = np.random.default_rng(seed).standard_normal((3, size, size)).astype(np.float32)
    return pb.Image(tensor=pb.Tensor(dtype=pb.FLOAT32, shape=[3, size, size], data=a.tobytes()))


def item(i: int, method: str = "score_cam", size: int = SIZE) -> pb.ExplainStreamRequest:
    return pb.ExplainStreamRequest(id=str(i), request=pb.ExplainRequest(model="tiny", method=method,
                                                                        images=[tensor(size, seed=i)]))


@pytest.fixture(scope="module")
def tiny(store):
    srv = Server(ServerConfig(address="127.0.0.1:0", models=[], store=str(store), device="cpu", workers=16,
                              grace_s=1)).start()
    srv.registry.load(model_id="tiny", source="simple_cnn", num_classes=10)
    channel = grpc.insecure_channel(srv.address)
    yield srv, pb_grpc.InspectorStub(channel)
    channel.close()
    srv.stop(grace=1)


def stream_images(srv, model: str = "tiny") -> int:
    """Images the server has answered over ExplainStream for `model` (its metrics)."""
    value = srv.service.metrics.registry.get_sample_value(
        "netscope_inference_count_total", {"rpc": "ExplainStream", "model": model})
    return int(value or 0)


def test_a_sampled_method_is_answered_item_by_item_and_stops_after_the_callers_first_answer(tiny):
    """8 Score-CAM items: the first answer is one image's device batch, and a
    caller that cancels after it costs the server at most the items already
    under way, not all 8 (before the fix: one batch of 8, all computed before
    the first answer)."""
    srv, stub = tiny
    before = stream_images(srv)
    call = stub.ExplainStream(iter([item(i) for i in range(8)]), timeout=120)
    first = next(call)
    call.cancel()
    assert not first.HasField("error"), first.error.message
    assert first.response.timing.device_batch_size == 1
    assert torch_thread.wait_idle(30)
    time.sleep(0.3)  # the handler's last render, if any
    explained = stream_images(srv) - before
    assert 1 <= explained <= 3, f"{explained} of 8 items explained for a caller that stopped after its first answer"


def test_cheap_methods_still_share_a_device_batch(tiny):
    """grad_cam runs one pass per batch: consecutive items still merge."""
    _, stub = tiny
    answers = list(stub.ExplainStream(iter([item(i, "grad_cam", 64) for i in range(4)]), timeout=120))
    assert [a.HasField("error") for a in answers] == [False] * 4
    assert max(a.response.timing.device_batch_size for a in answers) > 1


def test_other_callers_are_not_queued_behind_a_whole_stream(tiny):
    """A grad_cam sent once a 5-item Score-CAM stream has given its first
    answer waits for at most the item being computed: at least two of the
    stream's answers come after it (before the fix: none; it waited for
    the whole batch)."""
    _, stub = tiny
    arrived: list[float] = []
    call = stub.ExplainStream(iter([item(i) for i in range(5)]), timeout=120)
    first = next(call)
    arrived.append(time.monotonic())
    rest = threading.Thread(target=lambda: arrived.extend(time.monotonic() for _ in call), daemon=True)
    rest.start()
    stub.Explain(pb.ExplainRequest(model="tiny", method="grad_cam", images=[tensor(64, seed=99)]), timeout=120)
    answered = time.monotonic()
    rest.join(120)
    assert not first.HasField("error") and len(arrived) == 5
    after = sum(t > answered for t in arrived)
    assert after >= 2, f"only {after} of the stream's 5 answers came after the other caller's grad_cam"


def test_after_a_storm_of_cancels_and_deadlines_nothing_is_left_waiting(tiny):
    """Three callers fire Explain / Predict with 30 ms deadlines, cancelled
    calls and cancelled streams while a fourth runs the soak's 4-item stream
    (grad_cam, eigen_cam, gradient_shap, an unknown method): every stream is
    answered in full, and afterwards the torch thread is idle, a Predict
    answers at once and the model carries no hooks or gradients."""
    srv, stub = tiny
    stop = threading.Event()
    errors: list[str] = []
    soak_items = [item(i, m, 48) for i, m in enumerate(("grad_cam", "eigen_cam", "gradient_shap", "bogus_method"))]

    def storm(k: int) -> None:
        i = k
        while not stop.is_set():
            i += 1
            try:
                if i % 4 == 0:
                    stub.Explain(item(i, size=48).request, timeout=0.03)
                elif i % 4 == 1:
                    f = stub.Explain.future(pb.ExplainRequest(
                        model="tiny", method="integrated_gradients", images=[tensor(48, seed=i)],
                        options=pb.ExplainOptions(steps=256, batch_size=8)), timeout=30)
                    time.sleep(0.02)
                    f.cancel()
                elif i % 4 == 2:
                    stub.Predict(pb.PredictRequest(model="tiny", images=[tensor(48, seed=i)] * 2), timeout=0.03)
                else:
                    c = stub.ExplainStream(iter([item(j, size=48) for j in range(8)]), timeout=30)
                    next(c, None)  # the soak's cancelled stream: cancel after the first answer
                    c.cancel()
            except (grpc.RpcError, grpc.FutureCancelledError):
                pass
            except Exception as exc:  # noqa: BLE001
                errors.append(repr(exc))

    threads = [threading.Thread(target=storm, args=(k,), daemon=True) for k in range(3)]
    for t in threads:
        t.start()
    try:
        for _ in range(2):
            answers = {a.id: a for a in stub.ExplainStream(iter(soak_items), timeout=60)}
            assert sorted(answers) == ["0", "1", "2", "3"]
            assert [answers[i].HasField("error") for i in "0123"] == [False, False, False, True]
            assert answers["3"].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert not errors, errors
    assert torch_thread.wait_idle(10), "the torch thread still had work 10 s after the storm"
    start = time.monotonic()
    stub.Predict(pb.PredictRequest(model="tiny", images=[tensor(64)]), timeout=10)
    assert time.monotonic() - start < 2.0
    left_clean(srv.registry.get("tiny").module)
