"""Predict through ONNX Runtime: the `onnxruntime` backend of a model.

At load the served module is exported with torch.onnx.export (a dynamic
batch axis at the model's input size) and an `onnxruntime.InferenceSession`
is built on it, with the execution providers that fit the model's device:
CPU; on a GPU, TensorRT (when installed) and CUDA ahead of the CPU. A parity
check then runs a warm-up batch through both and refuses the model
(FAILED_PRECONDITION, reason ONNX_PARITY) when the logits differ by more
than a tolerance, saying by how much: an export that captured something
other than what the module computes (a data-dependent branch the tracer
froze) is never served.

Only Predict's forward pass (and everything built on it: dynamic batching,
the Open Inference Protocol's ModelInfer) goes through the session. The
torch module stays loaded: explanations, feature maps and statistics hook
layers and take gradients. So the weights are held twice.

Exporter: the TorchScript one (`dynamo=False`). Measured on this project's
2-core machine with torch 2.14.1 (docs/PERFORMANCE.md): resnet18 exports in
about 0.3 s with it against 2.7 s with the dynamo exporter, and both give
the same logits to 2e-6. It is deprecated, so a module it cannot export (or
a torch without it) is tried again with the dynamo exporter before the load
fails (reason ONNX_EXPORT, with both reasons).

Precision: float32 exports as float32. ONNX Runtime's CPU provider has no
float16 or bfloat16 convolutions on x86, so a half model on the CPU is
served by a float32 session of its (half-rounded) weights: the same values,
computed in float32; ModelInfo's backend says `session_dtype` float32. On a
GPU float16 exports as float16; bfloat16 (thin kernel coverage in the CUDA
provider) as float32. ONNX has one layout (NCHW): channels_last shapes the
torch module only.

Threads: the session's intra-op threads are the server's CPU threads
(torch.get_num_threads(), i.e. OMP_NUM_THREADS), and it runs in the
request's (or the batcher's) thread, not on the torch thread: ONNX Runtime
releases the GIL and keeps its own thread pool, so a Predict never waits
behind an explanation's forward passes.
"""
from __future__ import annotations

import copy
import logging
import os
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..errors import FailedPrecondition, InvalidArgument, first_line, shown
from ..runtime import cancel

log = logging.getLogger("netscope.onnx")

BACKENDS = ("torch", "onnxruntime")
OPSET = 17  # ONNX opset of the TorchScript exporter's graphs (ONNX Runtime 1.14+ runs it)
EXPORT_BATCH = 2  # traced at batch 2, so nothing specialises on a batch of one
# Largest |logit difference| allowed at load, as a fraction of the largest
# |logit| (at least 1): float32 sessions agree to about 1e-6 of it, a half
# torch module rounds its activations to about 1e-3.
PARITY_RTOL = {torch.float32: 1e-3, torch.float16: 5e-2, torch.bfloat16: 1e-1}
# Private knob, for tests: a tolerance to check parity against instead (an
# injected failure: 0 fails every model whose logits differ at all).
PARITY_ENV = "NETSCOPE_ONNX_PARITY_RTOL"
INSTALL_HINT = "pip install 'netscope[onnx]' (from a checkout: .venv/bin/pip install -e '.[onnx]')"


def check_backend(name) -> str:
    """The backend name normalised ("" is torch), or InvalidArgument naming the choices."""
    if name is not None and not isinstance(name, str):
        raise InvalidArgument(f"backend must be torch or onnxruntime; got {shown(name)}", reason="BAD_MODEL_OPTION",
                              field="options.backend")
    value = (name or "torch").strip().lower()
    if value in ("ort", "onnx"):
        value = "onnxruntime"
    if value not in BACKENDS:
        raise InvalidArgument(f"unknown backend {shown(name)}; use one of {', '.join(BACKENDS)}",
                              reason="BAD_MODEL_OPTION", field="options.backend",
                              metadata={"choices": ",".join(BACKENDS)})
    return value


def import_onnxruntime():
    """The onnxruntime module, or FailedPrecondition saying how to install it."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise FailedPrecondition(f"backend onnxruntime asked for, but this server cannot import onnxruntime "
                                 f"({first_line(exc)}): {INSTALL_HINT} on the server, or load with backend torch",
                                 reason="ONNXRUNTIME_MISSING", field="options.backend",
                                 metadata={"install": INSTALL_HINT}) from None
    return onnxruntime


def providers_for(device: torch.device, available: Sequence[str]) -> list[str]:
    """Execution providers, best first, for a model on `device`: a GPU model
    gets TensorRT and CUDA when this onnxruntime has them; the CPU always."""
    chosen = []
    if device.type == "cuda":
        chosen = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in available]
        if not chosen:
            raise FailedPrecondition(
                f"backend onnxruntime on {device}: this onnxruntime has no CUDA provider (it has "
                f"{', '.join(available)}); install onnxruntime-gpu, or load the model on the CPU or with backend torch",
                reason="ONNX_PROVIDER_MISSING", field="options.backend")
    return chosen + ["CPUExecutionProvider"]


def session_dtype(device: torch.device, dtype: torch.dtype) -> torch.dtype:
    """The dtype the exported graph computes in (see the module docstring)."""
    if dtype == torch.float16 and device.type == "cuda":
        return torch.float16
    return torch.float32


@dataclass
class OrtForward:
    """Float32 logits of a batch through an ONNX Runtime session.

    `input_size` (C, H, W) is the size it was exported at; any batch size runs.
    """

    session: object
    device: torch.device
    dtype: torch.dtype  # the session's input and compute dtype
    input_size: tuple[int, ...]
    providers: list[str]
    exporter: str  # "torchscript" or "dynamo"
    export_s: float  # export and session build at load, seconds
    parity_max_abs: float  # largest |logit difference| against the torch module at load
    parity_tolerance: float
    threads: int
    input_name: str = "input"
    batches: int = 0  # batches answered through the session
    _np_dtype: np.dtype = field(init=False, repr=False)

    def __post_init__(self):
        self._np_dtype = np.float16 if self.dtype == torch.float16 else np.float32
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: torch.Tensor) -> torch.Tensor | None:
        """(N, C, H, W) float batch (host or the model's device) -> (N, classes)
        float32 host logits; None when x is not the exported input size (the
        caller runs the torch module). Cancelled / DeadlineExceeded before
        the session runs when the caller has gone."""
        if tuple(x.shape[1:]) != self.input_size:
            return None
        cancel.check()
        if self.device.type == "cuda":
            out = self._run_bound(x)
        else:
            feed = x.detach().to("cpu", torch.float32 if self.dtype != torch.float16 else torch.float16)
            out = self.session.run(None, {self.input_name: np.ascontiguousarray(feed.numpy())})[0]
        self.batches += 1
        return torch.from_numpy(np.asarray(out, dtype=np.float32))

    def _run_bound(self, x: torch.Tensor) -> np.ndarray:
        """A GPU session reads the batch where torch put it (no host round trip)."""
        x = x.to(self.device, self.dtype).contiguous()
        binding = self.session.io_binding()
        binding.bind_input(self.input_name, "cuda", self.device.index or 0, self._np_dtype, tuple(x.shape),
                           x.data_ptr())
        binding.bind_output(self.session.get_outputs()[0].name, "cpu")
        torch.cuda.current_stream(self.device).synchronize()  # the batch is written before ORT's stream reads it
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]

    def describe(self) -> dict:
        return {"name": "onnxruntime", "providers": list(self.providers), "exporter": self.exporter,
                "export_ms": self.export_s * 1e3, "parity_max_abs_diff": self.parity_max_abs,
                "parity_tolerance": self.parity_tolerance, "session_dtype": str(self.dtype).replace("torch.", ""),
                "intra_op_threads": self.threads}


def build(module: nn.Module, *, input_size: Sequence[int], device: torch.device, dtype: torch.dtype,
          source: str, threads: int | None = None) -> OrtForward:
    """Export `module` (eval, on `device` as `dtype`), build its session and
    check its logits against the module's. Runs the module: call it where
    the model's torch work runs (the torch thread for a CPU model).

    Raises FailedPrecondition: ONNXRUNTIME_MISSING (onnxruntime not
    installed), ONNX_PROVIDER_MISSING (a GPU model, no CUDA provider),
    ONNX_EXPORT (the module does not export: why), ONNX_SESSION (ONNX
    Runtime cannot run the graph), ONNX_PARITY (the session's logits differ
    from the module's beyond the tolerance: by how much)."""
    ort = import_onnxruntime()
    providers = providers_for(device, ort.get_available_providers())
    threads = threads or torch.get_num_threads()
    input_size = tuple(int(s) for s in input_size)
    sdtype = session_dtype(device, dtype)
    start = time.perf_counter()
    exported = module if sdtype == dtype else copy.deepcopy(module).to(sdtype)
    gen = torch.Generator().manual_seed(1)
    # Exported on zeros, checked on noise: a branch the tracer froze on one
    # input shows up on the other.
    example = torch.zeros((EXPORT_BATCH, *input_size), device=device, dtype=sdtype)
    with tempfile.TemporaryDirectory(prefix="netscope-onnx-") as tmp:
        path = os.path.join(tmp, "model.onnx")  # a file, so models over protobuf's 2 GB keep external data
        exporter, traced = _export(exported, example, path, source)
        del exported
        session = _session(ort, path, providers, threads, source)
    export_s = time.perf_counter() - start
    used = [p for p in session.get_providers() if p in providers]
    forward = OrtForward(session, device, sdtype, input_size, used, exporter, export_s, 0.0, 0.0, threads)
    x = torch.randn((EXPORT_BATCH, *input_size), generator=gen).to(device)
    with torch.inference_mode():
        ref = module(x.to(dtype))
        ref = (ref if isinstance(ref, torch.Tensor) else ref[0]).float().cpu()
    got = forward(x.to(sdtype))
    forward.batches = 0
    scale = max(1.0, float(ref.abs().max()))
    rtol = float(os.environ.get(PARITY_ENV) or PARITY_RTOL.get(dtype, 1e-3))
    diff = float((got - ref).abs().max()) if got.shape == ref.shape else float("inf")
    forward.parity_max_abs, forward.parity_tolerance = diff, rtol * scale
    if not diff <= rtol * scale:
        why = (f"its output has shape {list(got.shape)} where the module's has {list(ref.shape)}"
               if got.shape != ref.shape else
               f"their logits differ by up to {diff:.3g} (tolerance {rtol * scale:.3g}: {rtol:g} of the largest "
               f"|logit| {scale:.3g})")
        hint = f"; the tracer warned: {traced[0]}" if traced else ""
        raise FailedPrecondition(
            f"{shown(source)} exported to ONNX ({exporter} exporter) does not compute what the torch module does: "
            f"{why} on a warm-up batch{hint}. Load it with backend torch", reason="ONNX_PARITY",
            field="options.backend", metadata={"max_abs_diff": f"{diff:.3g}", "tolerance": f"{rtol * scale:.3g}",
                                               "exporter": exporter})
    log.info("%s: onnxruntime session (%s, %s exporter, %s) in %.2f s; parity max |dlogit| %.2g",
             source, ", ".join(used), exporter, str(sdtype).replace("torch.", ""), export_s, diff)
    return forward


def _export(module: nn.Module, example: torch.Tensor, path: str, source: str) -> tuple[str, list[str]]:
    """Write the ONNX graph to `path`: the TorchScript exporter, else dynamo.
    Returns the exporter's name and what the tracer warned about."""
    try:
        traced = _export_torchscript(module, example, path)
        return "torchscript", traced
    except Exception as exc:  # noqa: BLE001 - any exporter failure is a reason to try the other
        first = f"{type(exc).__name__}: {first_line(exc)}"
    try:
        _export_dynamo(module, example, path)
        return "dynamo", []
    except Exception as exc:  # noqa: BLE001
        second = f"{type(exc).__name__}: {_dynamo_reason(exc)}"
    raise FailedPrecondition(
        f"{shown(source)} does not export to ONNX, so it cannot be served with backend onnxruntime: the "
        f"TorchScript exporter says {first[:300]}; the dynamo exporter says {second[:300]}. Load it with backend "
        f"torch", reason="ONNX_EXPORT", field="options.backend",
        metadata={"torchscript": first[:200], "dynamo": second[:200]})


def _export_torchscript(module: nn.Module, example: torch.Tensor, path: str) -> list[str]:
    with warnings.catch_warnings(record=True) as caught, torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("always")
        torch.onnx.export(module, (example,), path, dynamo=False, opset_version=OPSET, input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                          do_constant_folding=True)
    return [first_line(w.message) for w in caught if issubclass(w.category, torch.jit.TracerWarning)]


def _export_dynamo(module: nn.Module, example: torch.Tensor, path: str) -> None:
    batch = torch.export.Dim("batch", min=1, max=4096)
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, (example,), dynamo=True, input_names=["input"], output_names=["logits"],
                                    dynamic_shapes=({0: batch},), verbose=False, report=False)
        program.save(path)


def _dynamo_reason(exc: BaseException) -> str:
    """The dynamo exporter's first line is a generic 'step N/3' banner; its cause says why."""
    cause = exc.__cause__ or exc.__context__
    return first_line(cause) if cause is not None else first_line(exc)


def _session(ort, path: str, providers: list[str], threads: int, source: str):
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: its warnings about unused initialisers are noise here
    # Idle pool threads sleep instead of spinning: a server's gRPC, decode and
    # torch threads need those cores between runs (docs/PERFORMANCE.md: at best
    # even when idle, 1.8x faster on a loaded 2-core machine).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(path, options, providers=providers)
    except Exception as exc:  # noqa: BLE001 - a graph ONNX Runtime has no kernel for, a provider failing
        raise FailedPrecondition(f"ONNX Runtime cannot run {shown(source)} exported to ONNX: "
                                 f"{type(exc).__name__}: {first_line(exc)[:300]}. Load it with backend torch",
                                 reason="ONNX_SESSION", field="options.backend") from None
