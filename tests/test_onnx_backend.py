"""Predict through ONNX Runtime (backend onnxruntime): the same answers as the
torch backend on every CPU path, clear errors when a model does not export or
its session disagrees, and Predicts that never wait on the torch thread."""
from __future__ import annotations

import sys
import threading
import warnings

import grpc
import numpy as np
import pytest
import torch
from torch import nn

from netscope.client import NetscopeError
from netscope.server.errors import FailedPrecondition
from netscope.server.runtime import torch_thread

pytest.importorskip("onnxruntime", reason="pip install netscope[onnx]")

from netscope.server.models import onnx_backend  # noqa: E402

PROB_ATOL = 1e-5


@pytest.fixture(scope="module")
def demo(store):
    """The demo recipe (digits, simple_cnn 16-32-64 at 32x32) trained for 3 epochs (~93%, seconds) into the store."""
    from netscope.training.demo import DEMO_ARGS
    from netscope.training.train import main

    path = store / "demo_ort_test.pt"
    if not path.exists():
        threads = torch.get_num_threads()
        try:
            assert main([*DEMO_ARGS, "--epochs", "3", "--out", str(path), "--no-progress"]) == 0
        finally:
            torch.set_num_threads(threads)
    return path.stem


@pytest.fixture(scope="module")
def pairs(client, demo):
    """Each model loaded twice, by backend: {name: (torch id, onnxruntime id)}."""
    loaded = []

    def load(model_id, source, **options):
        client.load_model(model_id, source, **options)
        loaded.append(model_id)

    load("ort_demo_t", demo)
    load("ort_demo", demo, backend="onnxruntime")
    load("ort_r18", "resnet18", weights="none", backend="onnxruntime")
    load("ort_r18_b", "resnet18", weights="none", backend="onnxruntime", max_batch_size=8, max_delay_ms=200)
    yield {"demo": ("ort_demo_t", "ort_demo"), "r18": ("r18", "ort_r18"), "r18_batched": ("r18", "ort_r18_b")}
    for model_id in loaded:
        client.unload_model(model_id)


def digit_jpegs(n: int) -> list[bytes]:
    from sklearn.datasets import load_digits

    from .conftest import encode

    digits = load_digits().images[:n]
    return [encode(np.repeat((d * 255 / 16).astype(np.uint8)[:, :, None], 3, axis=2)) for d in digits]


def assert_same(torch_preds, ort_preds):
    assert len(torch_preds) == len(ort_preds)
    for a, b in zip(torch_preds, ort_preds):
        assert [s.index for s in a.top_k] == [s.index for s in b.top_k]
        np.testing.assert_allclose([s.probability for s in a.top_k], [s.probability for s in b.top_k], atol=PROB_ATOL)
        if a.probabilities is not None:
            np.testing.assert_allclose(a.probabilities, b.probabilities, atol=PROB_ATOL)


@pytest.mark.parametrize("name", ["demo", "r18"])
def test_jpegs_and_raw_tensors_give_torchs_top_k(client, pairs, photo_files, name):
    torch_id, ort_id = pairs[name]
    jpegs = digit_jpegs(6) if name == "demo" else [photo_files[p].read_bytes() for p in ("chelsea", "astronaut", "coffee")]
    assert_same(client.predict(torch_id, jpegs, k=5, probabilities=True),
                client.predict(ort_id, jpegs, k=5, probabilities=True))
    size = client.model_info(ort_id).input_size
    raw = np.random.default_rng(3).standard_normal((4, *size)).astype(np.float32)
    assert_same(client.predict(torch_id, raw, k=5), client.predict(ort_id, raw, k=5))
    if name == "demo":  # a trained model: the session still reads digits
        labels = [p.top_k[0].label for p in client.predict(ort_id, digit_jpegs(20))]
        assert sum(got == str(i % 10) for i, got in enumerate(labels)) >= 15, labels


def test_a_tensor_of_another_size_runs_the_torch_module(client, pairs):
    torch_id, ort_id = pairs["r18"]
    raw = np.random.default_rng(4).standard_normal((2, 3, 160, 192)).astype(np.float32)  # exported at 224x224
    assert_same(client.predict(torch_id, raw, k=3), client.predict(ort_id, raw, k=3))


def test_dynamic_batches_run_through_the_session(client, pairs, photo_files):
    torch_id, ort_id = pairs["r18_batched"]
    images = [photo_files[p].read_bytes() for p in ("chelsea", "astronaut", "coffee", "rocket")] * 2
    expected = client.predict(torch_id, images, k=5)
    barrier = threading.Barrier(len(images))
    out = [None] * len(images)

    def call(i):
        barrier.wait()
        out[i] = client.predict_timed(ort_id, images[i], k=5)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(images))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert max(timing.device_batch_size for _, timing in out) > 1  # requests shared a session run
    assert_same(expected, [preds[0] for preds, _ in out])


def test_info_and_cli_report_the_backend(client, pairs, run_cli):
    info = client.model_info(pairs["r18"][1])
    assert info.backend["name"] == "onnxruntime" and info.options["backend"] == "onnxruntime"
    assert info.backend["providers"] == ["CPUExecutionProvider"]
    assert info.backend["exporter"] in ("torchscript", "dynamo") and info.backend["session_dtype"] == "float32"
    assert info.backend["parity_max_abs_diff"] <= info.backend["parity_tolerance"]
    assert info.backend["intra_op_threads"] == torch.get_num_threads()
    assert client.model_info("r18").backend["name"] == "torch"
    code, out, err = run_cli("info", pairs["r18"][1])
    assert code == 0, err
    assert "predict backend onnxruntime (CPUExecutionProvider" in out
    code, out, err = run_cli("load", "ort_cli", "resnet18", "--backend", "onnxruntime")
    try:
        assert code == 0, err
        assert "predict backend onnxruntime" in out
    finally:
        client.unload_model("ort_cli")


def test_predict_on_an_onnxruntime_model_does_not_wait_for_the_torch_thread(client, pairs, photo_files):
    """While the torch thread is held (as a long explanation's non-yielding part
    or a LoadModel holds it), an onnxruntime Predict completes; a torch one cannot."""
    torch_id, ort_id = pairs["r18"]
    image = photo_files["chelsea"].read_bytes()
    release, holding = threading.Event(), threading.Event()

    def hold():
        holding.set()
        release.wait(60)

    holder = threading.Thread(target=torch_thread.run, args=(None, hold))
    holder.start()
    try:
        assert holding.wait(30)
        assert client.predict(ort_id, image, k=1, timeout=30)[0].top_k
        with pytest.raises(NetscopeError) as exc:  # the held thread is real: a torch Predict waits for it
            client.predict(torch_id, image, k=1, timeout=1.0)
        assert exc.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    finally:
        release.set()
        holder.join()


def test_option_errors(client):
    with pytest.raises(NetscopeError) as exc:
        client.load_model("ort_bad", "resnet18", backend="tensorrt")
    assert exc.value.code == grpc.StatusCode.INVALID_ARGUMENT and "torch, onnxruntime" in exc.value.message
    with pytest.raises(NetscopeError) as exc:
        client.load_model("ort_bad", "resnet18", backend="onnxruntime", compile="default")
    assert exc.value.code == grpc.StatusCode.INVALID_ARGUMENT and "set one of them" in exc.value.message


def test_parity_beyond_the_tolerance_refuses_the_load(client, monkeypatch):
    monkeypatch.setenv(onnx_backend.PARITY_ENV, "0")  # the server runs in this process: an injected tolerance
    with pytest.raises(NetscopeError) as exc:
        client.load_model("ort_strict", "resnet18", backend="onnxruntime")
    assert exc.value.code == grpc.StatusCode.FAILED_PRECONDITION and exc.value.reason == "ONNX_PARITY"
    assert "differ by up to" in exc.value.message and float(exc.value.metadata["max_abs_diff"]) > 0
    assert "ort_strict" not in [m.model for m in client.list_models()]


def test_onnxruntime_missing_says_how_to_install_it(client, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` raises ImportError
    with pytest.raises(NetscopeError) as exc:
        client.load_model("ort_missing", "resnet18", backend="onnxruntime")
    assert exc.value.code == grpc.StatusCode.FAILED_PRECONDITION and exc.value.reason == "ONNXRUNTIME_MISSING"
    assert "pip install 'netscope[onnx]'" in exc.value.message


class FrozenBranch(nn.Module):
    """A forward with a data-dependent branch: the tracer records the branch
    its example input takes (zeros: the second) and warns; on noise the
    module takes the first."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 8 * 8, 5)

    def forward(self, x):
        y = self.fc(x.flatten(1))
        return y if bool(x.abs().max() > 0.5) else -y


class NoOnnxOp(nn.Module):
    """Singular values: no ONNX operator, no decomposition."""

    def forward(self, x):
        return torch.linalg.svdvals(x.flatten(2)).flatten(1)


def test_a_module_whose_export_computes_something_else_is_refused():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(FailedPrecondition) as exc:
            onnx_backend.build(FrozenBranch().eval(), input_size=(3, 8, 8), device=torch.device("cpu"),
                               dtype=torch.float32, source="frozen")
    assert exc.value.reason == "ONNX_PARITY"
    assert "does not compute what the torch module does" in str(exc.value) and "tracer warned" in str(exc.value)


def test_a_module_that_does_not_export_says_why():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(FailedPrecondition) as exc:
            onnx_backend.build(NoOnnxOp().eval(), input_size=(3, 8, 8), device=torch.device("cpu"),
                               dtype=torch.float32, source="svd")
    assert exc.value.reason == "ONNX_EXPORT"
    assert "linalg_svdvals" in str(exc.value) and "backend torch" in str(exc.value)


def test_a_half_model_on_the_cpu_is_served_by_a_float32_session():
    module = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    torch.manual_seed(0)
    module = module.eval().to(torch.bfloat16)
    forward = onnx_backend.build(module, input_size=(3, 16, 16), device=torch.device("cpu"), dtype=torch.bfloat16,
                                 source="half")
    assert forward.dtype == torch.float32 and forward.describe()["session_dtype"] == "float32"
    x = torch.randn(2, 3, 16, 16)
    with torch.inference_mode():
        ref = module.float()(x)
    torch.testing.assert_close(forward(x), ref, atol=1e-5, rtol=1e-5)


def test_oip_model_infer_gives_torchs_probabilities(server, client, pairs, photo_files):
    """The Open Inference Protocol's ModelInfer rides the same Predict path: the session answers it."""
    from netscope.inference import grpc_service_pb2 as oip
    from netscope.inference import grpc_service_pb2_grpc as oip_grpc

    jpeg = photo_files["chelsea"].read_bytes()
    answers = {}
    with grpc.insecure_channel(server.address) as channel:
        stub = oip_grpc.GRPCInferenceServiceStub(channel)
        for model_id in pairs["r18"]:
            request = oip.ModelInferRequest(model_name=model_id)
            request.inputs.add(name="images", datatype="BYTES", shape=[1],
                               contents=oip.InferTensorContents(bytes_contents=[jpeg]))
            request.outputs.add(name="probabilities")
            response = stub.ModelInfer(request, timeout=60)
            answers[model_id] = np.asarray(response.outputs[0].contents.fp32_contents, dtype=np.float32)
    torch_p, ort_p = (answers[m] for m in pairs["r18"])
    assert torch_p.shape == (1000,) and np.argmax(torch_p) == np.argmax(ort_p)
    np.testing.assert_allclose(ort_p, torch_p, atol=PROB_ATOL)
    np.testing.assert_allclose(ort_p, client.predict(pairs["r18"][1], jpeg, probabilities=True)[0].probabilities,
                               atol=1e-7)


def _gpu_onnxruntime() -> bool:
    import onnxruntime

    return torch.cuda.is_available() and "CUDAExecutionProvider" in onnxruntime.get_available_providers()


@pytest.mark.skipif(not _gpu_onnxruntime(), reason="needs a GPU and onnxruntime-gpu (scripts/gpu_check.sh runs it)")
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_gpu_providers_serve_a_cuda_model(tmp_path, dtype):
    """On a GPU the session takes TensorRT (when installed) or CUDA first and reads the batch on the device."""
    from netscope.server.models.registry import Registry

    registry = Registry(tmp_path, default_device="cuda")
    try:
        ort_model = registry.load("g_ort", "resnet18", dtype=dtype, backend="onnxruntime")
        torch_model = registry.load("g_torch", "resnet18", dtype=dtype)
        assert ort_model.ort.providers[0] in ("TensorrtExecutionProvider", "CUDAExecutionProvider")
        assert ort_model.ort.dtype == getattr(torch, dtype)
        x = torch.randn(8, 3, 224, 224, generator=torch.Generator().manual_seed(5))
        got, want = ort_model.infer(x.cuda()), torch_model.infer(x.cuda())
        assert torch.equal(got.argmax(1), want.argmax(1))
        tol = 1e-3 if dtype == "float32" else 5e-2
        assert float((got - want).abs().max()) <= tol * max(1.0, float(want.abs().max()))
    finally:
        for m in list(registry.list()):
            registry.unload(m.id)
