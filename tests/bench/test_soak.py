"""Soak: many mixed requests against a server in a child process, with
cancels, expiring deadlines and bad requests among them; then the server's
memory, its models' hooks and gradients, how soon it is idle after a
cancelled heavy explanation, and how soon it exits on SIGTERM under load.

Requests: NETSCOPE_SOAK_REQUESTS (the test is skipped without it; 500 is
the short run, the soak of issue 12 is 10,000) go from NETSCOPE_SOAK_CALLERS (4) threads, in a
fixed mix: Predict, Explain (grad_cam, integrated_gradients, score_cam,
occlusion, saliency, layer_cam), GetFeatureMaps, GetLayerStats,
ExplainStream (4 items), client cancels (a call cancelled 20 ms in),
deadlines that expire (an explanation given 30 ms) and bad requests (no such
model, undecodable bytes, a lying tensor).

Measured honestly: the server is its own process, so its RSS (VmRSS from
/proc) holds nothing of the client's; hooks and `.grad` are read inside the
server by tests/fuzz/server_process.py's SIGUSR1 probe. RSS is taken at
start (models loaded), after the warm-up (the first 10%: allocator pools and
caches filled) and at the end; growth after the warm-up must stay under 5%.

    NETSCOPE_SOAK_REQUESTS=500 .venv/bin/python -m pytest -q -s tests/bench/test_soak.py
    NETSCOPE_SOAK_REQUESTS=10000 nice .venv/bin/python -m pytest -q tests/bench/test_soak.py \\
        --benchmark-enable --benchmark-json=soak.json -s
"""
from __future__ import annotations

import collections
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest

from netscope.v1 import inspector_pb2 as pb

from ..conftest import encode, photo
from ..fuzz.server_process import ServerProcess, save_tiny_checkpoint

pytestmark = [
    pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the server's RSS from /proc"),
    # Not in the default suite: 500 requests took ~2 min on the 2 shared CI cores.
    pytest.mark.skipif(not os.environ.get("NETSCOPE_SOAK_REQUESTS"),
                       reason="soak (~2 min for 500 requests on 2 cores); NETSCOPE_SOAK_REQUESTS=500 (or 10000)"),
]

REQUESTS = int(os.environ.get("NETSCOPE_SOAK_REQUESTS") or "500")
CALLERS = int(os.environ.get("NETSCOPE_SOAK_CALLERS", "4"))
GROWTH = 0.05
GRACE_S = 2.0
FAIL_OK = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.CANCELLED,
           grpc.StatusCode.DEADLINE_EXCEEDED}


def serialize(m):
    return m.SerializeToString()


class Caller:
    """The mixed requests, by index: request i is always the same request."""

    def __init__(self, channel: grpc.Channel):
        self.channel = channel
        self.rpc = {name: channel.unary_unary(f"/netscope.v1.Inspector/{name}", request_serializer=serialize,
                                              response_deserializer=getattr(pb, out).FromString)
                    for name, out in (("Predict", "PredictResponse"), ("Explain", "ExplainResponse"),
                                      ("GetFeatureMaps", "FeatureMapsResponse"),
                                      ("GetLayerStats", "LayerStatsResponse"))}
        self.stream = channel.stream_stream("/netscope.v1.Inspector/ExplainStream", request_serializer=serialize,
                                            response_deserializer=pb.ExplainStreamResponse.FromString)
        rgb = photo("chelsea")
        self.jpeg = pb.Image(encoded=encode(rgb[::4, ::4], ".jpg"))
        self.png = pb.Image(encoded=encode(photo("coffee")[::8, ::8], ".png"))
        x = np.random.default_rng(0).standard_normal((3, 32, 32)).astype("<f4")
        self.tensor = pb.Image(tensor=pb.Tensor(dtype=pb.FLOAT32, shape=[3, 32, 32], data=x.tobytes()))

    def explain(self, model, method, image, **options):
        return pb.ExplainRequest(model=model, images=[image], method=method, options=pb.ExplainOptions(**options),
                                 render_overlay=True)

    def mix(self, i: int):
        """(kind, callable) of request i."""
        k = i % 20
        tiny, img = "tiny", (self.jpeg, self.png, self.tensor)[i % 3]
        unary = lambda name, req, t=30.0: lambda: self.rpc[name](req, timeout=t)  # noqa: E731
        table = {
            0: ("predict", unary("Predict", pb.PredictRequest(model=tiny, images=[img, img], top_k=3))),
            1: ("predict", unary("Predict", pb.PredictRequest(model="mnv3", images=[self.jpeg], top_k=5))),
            2: ("explain grad_cam", unary("Explain", self.explain(tiny, "grad_cam", img))),
            3: ("explain integrated_gradients", unary("Explain", self.explain(tiny, "integrated_gradients", img,
                                                                               steps=16, batch_size=8))),
            4: ("explain score_cam", unary("Explain", self.explain(tiny, "score_cam", img, batch_size=32))),
            5: ("explain occlusion", unary("Explain", self.explain(tiny, "occlusion", img, window=8, stride=8))),
            6: ("explain saliency", unary("Explain", self.explain(tiny, "saliency", img))),
            7: ("explain layer_cam mnv3", unary("Explain", self.explain("mnv3", "layer_cam", self.jpeg))),
            8: ("features", unary("GetFeatureMaps", pb.FeatureMapsRequest(
                model=tiny, images=[img], layers=["features.0", "features.2"], top_channels=4,
                grid=pb.GridOptions(render=True)))),
            9: ("stats", unary("GetLayerStats", pb.LayerStatsRequest(model=tiny, images=[img], bins=10))),
            10: ("stream", lambda: list(self.stream(iter([pb.ExplainStreamRequest(
                id=f"s{j}", request=self.explain(tiny, m, img)) for j, m in enumerate(
                ("grad_cam", "eigen_cam", "gradient_shap", "bogus_method"))]), timeout=30))),
            # A second or so of work each, cancelled or expired early (the CPU's
            # heavy case is idle_after_cancel's, once).
            11: ("cancel", self.cancelled(self.explain(tiny, "integrated_gradients", img, steps=256,
                                                         batch_size=8))),
            12: ("deadline", unary("Explain", self.explain(tiny, "score_cam", img, batch_size=4), 0.03)),
            13: ("bad model", unary("Predict", pb.PredictRequest(model="no-such-model", images=[img]))),
            14: ("bad image", unary("Explain", pb.ExplainRequest(model=tiny, images=[pb.Image(
                encoded=b"\x89PNG\r\n\x1a\n" + bytes(range(40)))]))),
            15: ("bad tensor", unary("Predict", pb.PredictRequest(model=tiny, images=[pb.Image(tensor=pb.Tensor(
                dtype=pb.FLOAT32, shape=[2**32, 2**32], data=b"\x00" * 16))]))),
            16: ("predict", unary("Predict", pb.PredictRequest(model=tiny, images=[img] * 4,
                                                               return_probabilities=True))),
            17: ("explain gradient_shap", unary("Explain", self.explain(tiny, "gradient_shap", img, samples=8,
                                                                        seed=1))),
            18: ("explain eigen_cam", unary("Explain", self.explain(tiny, "eigen_cam", img))),
            19: ("cancel stream", self.cancelled_stream([pb.ExplainStreamRequest(
                id=f"c{j}", request=self.explain(tiny, "score_cam", img)) for j in range(8)])),
        }
        return table[k]

    def cancelled(self, request):
        def run():
            future = self.rpc["Explain"].future(request, timeout=30)
            time.sleep(0.02)
            future.cancel()
            return future.result()
        return run

    def cancelled_stream(self, items):
        def run():
            call = self.stream(iter(items), timeout=30)
            next(call, None)
            call.cancel()
            return list(call)
        return run


def soak(server: ServerProcess, n: int, callers: int) -> dict:
    channel = grpc.insecure_channel(server.address)
    caller = Caller(channel)
    codes: collections.Counter = collections.Counter()
    spent: collections.Counter = collections.Counter()  # kind -> seconds callers waited
    bad: list[str] = []
    lock = threading.Lock()
    rss = {"start": server.rss_mib()}
    warm_at = max(1, n // 10)
    done = [0]

    def one(i: int) -> None:
        kind, fn = caller.mix(i)
        started = time.perf_counter()
        try:
            fn()
            code, message = grpc.StatusCode.OK, ""
        except grpc.RpcError as err:
            code, message = err.code(), err.details() or ""
        except grpc.FutureCancelledError:
            code, message = grpc.StatusCode.CANCELLED, ""
        with lock:
            codes[(kind, code.name)] += 1
            spent[kind] += time.perf_counter() - started
            if code != grpc.StatusCode.OK and code not in FAIL_OK:
                bad.append(f"{kind}: {code.name} {message[:200]}")
            done[0] += 1
            if done[0] == warm_at:
                rss["warm"] = server.rss_mib()
            if done[0] % max(1, n // 10) == 0:
                print(f"soak: {done[0]}/{n} in {time.perf_counter() - t0:.0f} s, RSS {server.rss_mib():.0f} MiB",
                      flush=True)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(callers) as pool:
        list(pool.map(one, range(n)))
    seconds = time.perf_counter() - t0
    rss["end"] = server.rss_mib()
    channel.close()
    print("soak: seconds waited by kind:", {k: round(v, 1) for k, v in spent.most_common()})
    return {"codes": codes, "bad": bad, "rss": rss, "seconds": seconds, "alive": server.alive}


def idle_after_cancel(server: ServerProcess) -> float:
    """A heavy explanation (integrated_gradients, 512 steps on mnv3: about a
    minute of CPU) cancelled 0.5 s in; seconds from the cancel until a
    grad_cam on the tiny model answers in under half a second again."""
    with grpc.insecure_channel(server.address) as channel:
        caller = Caller(channel)
        heavy = caller.explain("mnv3", "integrated_gradients", caller.jpeg, steps=512, batch_size=8)
        future = caller.rpc["Explain"].future(heavy, timeout=120)
        time.sleep(0.5)
        # A False here: the heavy call had already ended (refused, or finished),
        # so the figure would measure nothing.
        assert future.cancel(), f"the heavy explanation ended before its cancel: {future.exception()!r}"
        cancelled = time.perf_counter()
        probe = caller.explain("tiny", "grad_cam", caller.tensor)
        while time.perf_counter() - cancelled < 120:
            t = time.perf_counter()
            try:
                caller.rpc["Explain"](probe, timeout=5)
                if time.perf_counter() - t < 0.5:
                    return time.perf_counter() - cancelled
            except grpc.RpcError:
                pass
        return float("inf")


def stop_under_load(server: ServerProcess, seconds_of_load: float = 1.0) -> tuple[int | None, float]:
    """SIGTERM while callers keep sending heavy and light requests: (exit code, seconds to exit)."""
    stop = threading.Event()

    def load():
        with grpc.insecure_channel(server.address) as channel:
            caller = Caller(channel)
            i = 0
            while not stop.is_set():
                try:
                    caller.mix(i if i % 20 not in (11, 12, 19) else 3)[1]()
                except Exception:  # noqa: BLE001 - UNAVAILABLE / CANCELLED once the server stops
                    pass
                i += 1

    threads = [threading.Thread(target=load, daemon=True) for _ in range(CALLERS)]
    for t in threads:
        t.start()
    time.sleep(seconds_of_load)
    result = server.stop(timeout=GRACE_S + 60)
    stop.set()
    return result


@pytest.fixture(scope="module")
def soak_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("soak")
    config = {"models": [{"id": "mnv3", "source": "mobilenet_v3_small"}], "device": "cpu", "store": str(root),
              "max_pixels": 4_000_000, "workers": 16, "grace_s": GRACE_S, "probe": str(root / "probe.json"),
              "load": [{"model_id": "tiny", "source": save_tiny_checkpoint(root)}]}
    server = ServerProcess(config, rss_limit_mib=8192, log_path=root / "server.log").start()
    server.probe_path = root / "probe.json"
    yield server
    server.kill()


@pytest.mark.timeout(3600)  # 10,000 requests run past the suite's 600 s per test
def test_soak(benchmark, soak_server):
    before = soak_server.probe(soak_server.probe_path)
    result = benchmark.pedantic(soak, args=(soak_server, REQUESTS, CALLERS), rounds=1, iterations=1)
    after = soak_server.probe(soak_server.probe_path)
    rss = result["rss"]
    growth = (rss["end"] - rss["warm"]) / rss["warm"]
    idle_s = idle_after_cancel(soak_server)
    exit_code, stop_s = stop_under_load(soak_server)
    codes: dict[str, int] = collections.Counter()
    for (_, code), n in result["codes"].items():
        codes[code] += n
    benchmark.extra_info.update(
        requests=REQUESTS, callers=CALLERS, seconds=round(result["seconds"], 1), codes=dict(codes),
        rss_start_mib=round(rss["start"]), rss_warm_mib=round(rss["warm"]), rss_end_mib=round(rss["end"]),
        rss_growth_after_warmup=round(growth, 4), idle_after_cancel_s=round(idle_s, 2),
        stop_under_load_s=round(stop_s, 2), stop_exit_code=exit_code)
    print(f"\nsoak: {benchmark.extra_info}")
    print("by kind:", dict(sorted((f"{k} {c}", n) for (k, c), n in result["codes"].items())))

    assert result["alive"], "the server died during the soak"
    assert not result["bad"], "\n".join(result["bad"][:20])
    assert growth < GROWTH, f"RSS grew {growth:.1%} after the warm-up: {rss}"
    for model, state in after["models"].items():
        assert state["module_hooks"] == before["models"][model]["module_hooks"], f"{model}: hooks left on modules"
        assert state["parameter_hooks"] == before["models"][model]["parameter_hooks"], f"{model}: parameter hooks left"
        assert not state["grads"], f"{model}: .grad left on {state['grads'][:5]}"
        assert not state["training"], f"{model}: modules left in training mode: {state['training']}"
    assert after["global_hooks"] == before["global_hooks"], "process-wide module hooks left behind"
    assert idle_s < 10, f"a cancelled explanation kept the torch thread busy for {idle_s:.1f} s"
    assert exit_code == 0 and stop_s < GRACE_S + 5, f"SIGTERM under load: exit {exit_code} after {stop_s:.1f} s"
