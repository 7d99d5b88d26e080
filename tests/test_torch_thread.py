"""A CPU model's torch work runs on the server's one torch thread
(server/runtime/torch_thread.py): every RPC that runs the model, through a real server."""
from __future__ import annotations

import contextvars
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from netscope.server.runtime import torch_thread


@pytest.fixture
def forward_threads(server):
    """Names of the threads that run forward passes of the session's r18 while the test runs."""
    module = server.registry.get("r18").module
    names: list[str] = []
    handle = module.register_forward_pre_hook(lambda m, args: names.append(threading.current_thread().name))
    yield names
    handle.remove()


def test_every_rpc_runs_the_model_on_the_torch_thread(client, forward_threads, photos):
    rgb = photos["chelsea"][:128, :128]
    client.predict("r18", rgb)
    client.explain("r18", rgb, method="grad_cam")
    client.explain("r18", rgb, method="grad_cam", faithfulness=True)
    client.feature_maps("r18", rgb, ["layer1"], top_channels=2)
    client.layer_stats("r18", layers=["fc"], images=rgb)
    client.model_info("r18", input_size=(3, 64, 64))  # a summary at another size runs the model
    assert len(forward_threads) >= 6
    assert {name.split("_")[0] for name in forward_threads} == {"netscope-torch"}, forward_threads


def test_run_returns_raises_and_nests():
    assert torch_thread.run("cpu", lambda a, b=0: a + b, 2, b=3) == 5
    with pytest.raises(KeyError, match="boom"):
        torch_thread.run(None, lambda: {}["boom"])
    # From the torch thread itself a nested call runs at once instead of waiting for itself.
    outer = torch_thread.run("cpu", lambda: (threading.current_thread().name,
                                             torch_thread.run("cpu", lambda: threading.current_thread().name)))
    assert outer[0] == outer[1] and outer[0].startswith("netscope-torch")
    assert not torch_thread.on_torch_thread()


def test_work_for_another_device_runs_in_the_callers_thread():
    here = threading.current_thread().name
    assert torch_thread.run("cuda:0", lambda: threading.current_thread().name) == here


def test_urgent_work_runs_inside_long_work_at_its_next_yield():
    """Long work polls serve_urgent() until urgent work has run, so it can only
    finish because the urgent work ran in between, on the same thread and in a
    fresh context (the long work's ContextVar unseen); plain work submitted
    meanwhile waits for its turn."""
    var = contextvars.ContextVar("long_work_state", default="unset")
    started, urgent_ran, order = threading.Event(), threading.Event(), []

    def long_work():
        var.set("long work's")
        started.set()
        for _ in range(2000):
            torch_thread.serve_urgent()
            if urgent_ran.is_set():
                order.append("long")
                return threading.current_thread().name
            time.sleep(0.01)
        return None  # the urgent work never came in: fail below, not hang

    def urgent():
        order.append("urgent")
        urgent_ran.set()
        return threading.current_thread().name, var.get()

    with ThreadPoolExecutor(3) as pool:
        long_done = pool.submit(torch_thread.run, "cpu", long_work)
        assert started.wait(30)
        plain_done = pool.submit(torch_thread.run, "cpu", order.append, "plain")
        time.sleep(0.05)  # the plain work is queued before the urgent
        urgent_done = pool.submit(torch_thread.run, "cpu", urgent, urgent=True)
        name, seen = urgent_done.result(30)
        assert long_done.result(30) == name and name.startswith("netscope-torch")
        plain_done.result(30)
    assert seen == "unset"
    assert order == ["urgent", "long", "plain"]


def test_a_stream_of_urgent_work_never_starves_the_rest():
    """Urgent work goes first, but other work waiting gets its turn after
    URGENT_BURST urgent items in a row (a LoadModel behind busy Predicts)."""
    gate, order = threading.Event(), []
    line = torch_thread._line
    futures = [line.submit(lambda: gate.wait(30), urgent=False)]  # holds the thread while the lanes fill
    time.sleep(0.05)
    futures.append(line.submit(lambda: order.append("plain"), urgent=False))
    futures += [line.submit(lambda i=i: order.append(i), urgent=True) for i in range(20)]
    gate.set()
    for f in futures:
        f.result(30)
    burst = torch_thread.URGENT_BURST
    assert order == list(range(burst)) + ["plain"] + list(range(burst, 20))


def test_yielding_lets_urgent_work_in_between_the_blocks_of_one_forward_pass():
    """The first block of a forward pass holds until urgent work is in line;
    the second block, under yielding(), starts only after it ran. Without
    yielding() the urgent work would wait for the whole forward pass."""
    from torch import nn

    started, urgent_ran = threading.Event(), threading.Event()

    class HoldUntilUrgentWaits(nn.Module):
        def forward(self, x):
            started.set()
            deadline = time.monotonic() + 30
            while not torch_thread._line._urgent and time.monotonic() < deadline:
                time.sleep(0.001)
            return x

    class Look(nn.Module):
        def forward(self, x):
            return x + urgent_ran.is_set()

    model = nn.Sequential(HoldUntilUrgentWaits(), Look())

    def long_work():
        with torch_thread.yielding(model):
            return float(model(torch.zeros(1)))

    with ThreadPoolExecutor(2) as pool:
        out = pool.submit(torch_thread.run, "cpu", long_work)
        assert started.wait(30)
        pool.submit(torch_thread.run, "cpu", urgent_ran.set, urgent=True).result(30)
        assert out.result(30) == 1.0
    assert all(not m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize("method,options,shape", [
    # features.4's 40 channels in batches of 2: 20 forward passes
    ("score_cam", dict(layers="features.4", batch_size=2), (14, 14)),
    ("ablation_cam", dict(layers="features.4", batch_size=2), (14, 14)),
    # Captum: 16 occluded copies in batches of 2
    ("occlusion", dict(window=56, stride=56, batch_size=2), (224, 224)),
])
def test_a_predict_is_answered_while_a_long_explanation_runs(client, server, photos, method, options, shape):
    """A CPU model's work shares one thread, yet a Predict does not wait out a
    Score-CAM or an ablation: it runs between their forward passes (with their
    hooks on the model, unseen) and answers exactly as on an idle server. The
    explanation's first batched forward pass is held until the Predict is in
    line, so the Predict can only be answered before the explanation ends by
    running in between."""
    rgb = photos["chelsea"]
    idle = client.predict("mnv3", rgb, probabilities=True)[0]
    held = threading.Event()

    def hold_until_a_predict_waits(module, args):
        if args[0].shape[0] > 1 and not held.is_set():
            held.set()
            deadline = time.monotonic() + 30
            while not torch_thread._line._urgent and time.monotonic() < deadline:
                time.sleep(0.001)

    handle = server.registry.get("mnv3").module.register_forward_pre_hook(hold_until_a_predict_waits)
    try:
        with ThreadPoolExecutor(1) as pool:
            long = pool.submit(client.explain, "mnv3", rgb, method=method, **options)
            assert held.wait(60), "the explanation never reached its batched forward passes"
            during = client.predict("mnv3", rgb, probabilities=True)[0]
            assert not long.done(), "the Predict waited for the whole explanation"
            assert long.result(120)[0][0].heatmap.shape == shape
    finally:
        handle.remove()
    assert during.top_k == idle.top_k
    np.testing.assert_allclose(during.probabilities, idle.probabilities, rtol=1e-6)


# ---------------------------------------------------------------- cancellation (server/runtime/cancel.py)


def _hold_the_torch_thread(release: threading.Event, started: threading.Event):
    """Submit work that keeps the torch thread busy until `release`."""
    def hold():
        started.set()
        release.wait(30)

    pool = ThreadPoolExecutor(1)
    future = pool.submit(torch_thread.run, "cpu", hold)
    assert started.wait(10)
    return pool, future


def test_queued_work_whose_caller_has_gone_never_starts_and_its_caller_stops_waiting():
    from netscope.server.runtime import cancel
    from netscope.server.errors import Cancelled, DeadlineExceeded

    release, started, ran = threading.Event(), threading.Event(), []
    pool, held = _hold_the_torch_thread(release, started)
    try:
        caller = cancel.Caller()
        waiting = ThreadPoolExecutor(1)

        def submit():
            with cancel.serving(caller):
                return torch_thread.run("cpu", lambda: ran.append("ran"))

        result = waiting.submit(submit)
        time.sleep(0.2)
        assert not result.done()
        gone_at = time.monotonic()
        caller.ended.set()  # what gRPC's callback does when the call is cancelled
        with pytest.raises(Cancelled, match="its work stopped"):
            result.result(timeout=5)
        assert time.monotonic() - gone_at < 1.0  # the caller stopped waiting at once, not when the thread was free

        # A deadline that passes while the work waits in line: DeadlineExceeded.
        with cancel.serving(cancel.Caller(deadline=time.monotonic() + 0.2)):
            with pytest.raises(DeadlineExceeded):
                torch_thread.run("cpu", lambda: ran.append("ran"))
    finally:
        release.set()
        held.result(timeout=10)
        pool.shutdown()
    assert torch_thread.run("cpu", lambda: "free") == "free"  # and the dropped work never ran
    assert ran == []


def test_the_callers_liveness_travels_with_its_work_to_the_torch_thread():
    from netscope.server.runtime import cancel
    from netscope.server.errors import Cancelled

    caller = cancel.Caller()
    seen = []

    def long_work():
        seen.append(cancel.current() is caller)
        for _ in range(1000):
            torch_thread.checkpoint()  # what every block of every forward pass calls
            caller.ended.set()
            time.sleep(0.001)
        return "finished"  # never: the check point raises once the caller has gone

    with cancel.serving(caller), pytest.raises(Cancelled):
        torch_thread.run("cpu", long_work)
    assert seen == [True]
    assert torch_thread.run("cpu", cancel.current) is None  # nothing leaks to the next work
    cancel.check()  # outside any call: nothing to check


def test_yielding_checks_the_caller_at_every_block_on_any_device_and_leaves_no_hooks():
    """In-process (no torch thread), a forward pass inside `yielding` still
    stops at the first block after its caller has gone."""
    from torch import nn

    from netscope.server.runtime import cancel
    from netscope.server.errors import DeadlineExceeded

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Sequential(nn.Conv2d(4, 4, 3), nn.ReLU())).eval()
    reached = []
    model[2][0].register_forward_pre_hook(lambda m, a: reached.append("inner conv"))
    with cancel.serving(cancel.Caller(deadline=time.monotonic() - 1)), torch_thread.yielding(model):
        with pytest.raises(DeadlineExceeded):
            model(torch.zeros(1, 3, 8, 8))
    assert reached == []
    assert [len(m._forward_pre_hooks) for m in model.modules()] == [0, 0, 0, 0, 1, 0]  # only the test's own
    with torch_thread.yielding(model):
        model(torch.zeros(1, 3, 8, 8))  # no caller: runs through
    assert reached == ["inner conv"]


def test_a_batch_runs_while_any_of_its_callers_is_there():
    from netscope.server.runtime import cancel

    a, b = cancel.Caller(), cancel.Caller()
    both = cancel.AnyOf([a, b])
    assert both.gone() is None
    a.ended.set()
    assert both.gone() is None
    b.ended.set()
    assert both.gone() is not None
    assert cancel.AnyOf([a, None]).gone() is None  # in-process work has no caller that could go
