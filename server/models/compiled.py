"""Optional torch.compile of the forward pass that Predict uses.

Explanations, feature maps and layer statistics keep the eager module: they
hook layers and take gradients, which a compiled graph would ignore (Dynamo
does not guard on hooks added after compiling) or recompile for. The compiled
forward is built on a private copy of the module tree (new module objects
with their own hook dicts, sharing the served model's parameters and buffers:
no memory copied), so hooks an explanation puts on the served module for a
moment never reach it.

Shapes are fixed. The forward is compiled and run at load time for a few
batch sizes ("buckets": by default 1 and the model's max_batch_size); a batch
is padded up to the smallest bucket that holds it and its rows sliced back,
and a batch larger than every bucket runs eager. So no request waits for a
compile, and with mode "reduce-overhead" (CUDA graphs) each bucket is one
graph replay.

Every compiled call runs on one thread per model: torch's CUDA graph trees
are per thread (a graph recorded in one thread is not replayed in another),
and one device gains nothing from two concurrent forwards of one model. On
the CPU that thread is the server's torch thread (server/runtime/torch_thread.py).

Not yet measured on a GPU (no GPU was lent to the session that wrote this).
"""
from __future__ import annotations

import contextlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import torch
from torch import nn

from ..runtime import torch_thread
from ..errors import FailedPrecondition, InvalidArgument, first_line, shown

MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
MAX_BUCKETS = 8  # each bucket is one Dynamo graph; torch recompiles at most 8 times per frame by default
MAX_BUCKET_SIZE = 1024
# Private knob, for tests only: a cheaper backend than inductor ("eager",
# "aot_eager") exercises the same load/warm-up/padding path in seconds.
BACKEND_ENV = "NETSCOPE_COMPILE_BACKEND"


def check_mode(mode: str) -> str:
    """The compile mode ("" when off), or InvalidArgument naming the choices."""
    if mode is not None and not isinstance(mode, str):
        raise InvalidArgument(f"compile must be a mode name such as default or reduce-overhead; got {shown(mode)}", field="compile")
    mode = (mode or "").strip().lower()
    if mode in ("", "none", "off"):
        return ""
    if mode not in MODES:
        raise InvalidArgument(f"unknown compile mode {shown(mode)}; use one of {', '.join(MODES)} (or leave it empty: eager)")
    return mode


def buckets_for(mode: str, sizes: Sequence[int], max_batch_size: int) -> tuple[int, ...]:
    """The batch sizes to compile for: the ones asked for, else 1 and the
    model's dynamic batch size."""
    if isinstance(sizes, (str, bytes)) or not all(isinstance(s, int) and not isinstance(s, bool) for s in sizes):
        raise InvalidArgument(f"compile_batch_sizes must be a list of whole numbers; got {shown(sizes)}", field="compile_batch_sizes")
    sizes = list(sizes)
    if sizes and not mode:
        raise InvalidArgument("compile_batch_sizes given without compile: set a compile mode, e.g. default")
    for s in sizes:
        if not 1 <= s <= MAX_BUCKET_SIZE:
            raise InvalidArgument(f"compile batch size {s} is out of range 1..{MAX_BUCKET_SIZE}")
    chosen = sorted(set(sizes or [1, max(1, max_batch_size)]))
    if len(chosen) > MAX_BUCKETS:
        raise InvalidArgument(f"at most {MAX_BUCKETS} compile batch sizes (each is one compiled graph); got {len(chosen)}")
    return tuple(chosen)


class CompiledForward:
    """Logits of a batch through torch.compile at fixed batch sizes."""

    def __init__(self, module: nn.Module, mode: str, buckets: Sequence[int], *, input_size: Sequence[int],
                 device: torch.device, dtype: torch.dtype, memory_format: torch.memory_format, name: str):
        from ..explain.attributions import private_copy

        self.mode = mode
        self.buckets = tuple(sorted(buckets))
        self.input_size = tuple(input_size)
        self.device, self.dtype, self.memory_format = device, dtype, memory_format
        self.backend = os.environ.get(BACKEND_ENV) or "inductor"
        self.cuda_graphs = device.type == "cuda" and mode in ("reduce-overhead", "max-autotune")
        self._lane = (ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"compiled-{name}")
                      if device.type == "cuda" else None)
        self.batches = 0  # requests' batches answered compiled (not counting the warm-up)
        try:
            options = {"mode": mode} if self.backend == "inductor" else {}
            self._fn = torch.compile(private_copy(module), backend=self.backend, dynamic=False, **options)
        except Exception as exc:  # noqa: BLE001 - an unknown backend, a missing compiler, ...
            self.close()
            raise self._failed(exc) from None

    def _failed(self, exc: BaseException) -> FailedPrecondition:
        return FailedPrecondition(f"torch.compile (mode {self.mode}, backend {self.backend}) failed: "
                                  f"{type(exc).__name__}: {first_line(exc)}; load the model without compile")

    def warm_up(self) -> float:
        """Compile every bucket now (and record its CUDA graph); seconds taken."""
        start = time.perf_counter()
        for b in self.buckets:
            x = torch.zeros((b, *self.input_size), device=self.device, dtype=self.dtype)
            try:
                # Twice: reduce-overhead records the graph on the second call.
                for _ in range(2 if self.cuda_graphs else 1):
                    self._on_lane(x.contiguous(memory_format=self.memory_format))
            except Exception as exc:  # noqa: BLE001
                self.close()
                raise self._failed(exc) from None
        return time.perf_counter() - start

    def bucket(self, n: int) -> int | None:
        return next((b for b in self.buckets if b >= n), None)

    def __call__(self, x: torch.Tensor) -> torch.Tensor | None:
        """Float32 logits on the host for an (N, C, H, W) batch already on the
        device, or None when it was not compiled for (no bucket holds N, or
        already preprocessed tensors of another size): the caller runs eager,
        and nothing is recompiled while a request waits."""
        b = self.bucket(x.shape[0])
        if b is None or tuple(x.shape[1:]) != self.input_size:
            return None
        n = x.shape[0]
        if b > n:
            x = torch.cat([x, x.new_zeros((b - n, *x.shape[1:]))]).contiguous(memory_format=self.memory_format)
        logits = self._on_lane(x)[:n]
        self.batches += 1
        return logits

    def _on_lane(self, x: torch.Tensor) -> torch.Tensor:
        if self._lane is None:
            return torch_thread.run(self.device, self._call, x)
        return self._lane.submit(self._call, x).result()

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        on_device = torch.cuda.device(self.device) if self.device.type == "cuda" else contextlib.nullcontext()
        with torch.inference_mode(), on_device:  # the lane's current device is the model's (cuda:N)
            if self.cuda_graphs:
                torch.compiler.cudagraph_mark_step_begin()
            out = self._fn(x)
            if not isinstance(out, torch.Tensor):
                out = out[0]
            # Copied off the device here, in the lane: a CUDA graph's output
            # buffer is overwritten by its next replay.
            return out.float().cpu()

    def close(self) -> None:
        if self._lane is not None:
            self._lane.shutdown(wait=False)
