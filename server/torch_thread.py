"""One thread for the server's CPU torch work.

Torch's CPU kernels run on OpenMP (libgomp), and every thread that starts
parallel work gets a team of helper threads of its own. Once the process holds
more team threads than cores, libgomp stops spinning between parallel regions,
so every region of a forward pass pays a wake-up. A server that runs forwards
in whichever gRPC worker took the request ends up there: on 2 cores a resnet18
forward at batch 1 took about 45 ms in the server against 33 ms from the only
thread that ever ran torch (docs/PERFORMANCE.md, "One torch thread").

So a CPU model is built, warmed up, run, explained and inspected on one
long-lived thread: one team, always warm. Requests still decode in their own
threads (OpenCV and numpy, no OpenMP). Work for a CUDA model runs in the
caller's thread: the GPU computes, the host only launches kernels.
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

import torch

T = TypeVar("T")

_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="netscope-torch")
_inside = threading.local()


def on_torch_thread() -> bool:
    return getattr(_inside, "active", False)


def run(device: torch.device | str | None, fn: Callable[..., T], *args, **kwargs) -> T:
    """fn(*args, **kwargs) on the torch thread when `device` is the CPU (None:
    CPU work whatever the model's device, such as building weights), else here.
    Its result is returned and its exception raised here; called from the
    torch thread itself, fn just runs."""
    if on_torch_thread() or (device is not None and torch.device(device).type != "cpu"):
        return fn(*args, **kwargs)

    def call():
        _inside.active = True
        try:
            return fn(*args, **kwargs)
        finally:
            _inside.active = False

    return _executor.submit(call).result()
