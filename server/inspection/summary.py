"""The layer table of a model for one input size: what torchinfo prints.

One forward pass of a zero batch of one image, with temporary shape-recording
hooks on every module and torch's FlopCounterMode around it. The hooks are
removed in `finally`; the model is not otherwise touched. Like hooks.capture,
they record only in the context that registered them, so a request running a
forward on the same model meanwhile never lends the table its shapes.
"""
from __future__ import annotations

import contextvars
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from . import is_conv

_active: contextvars.ContextVar[object] = contextvars.ContextVar("netscope_summary", default=None)


@dataclass
class LayerRow:
    name: str
    type: str
    depth: int
    is_leaf: bool
    input_shape: list[int] = field(default_factory=list)
    output_shape: list[int] = field(default_factory=list)
    num_parameters: int = 0  # own parameters, not counting children
    trainable_parameters: int = 0
    mult_adds: int = 0  # this module and its children
    cam_target: bool = False
    conv: bool = False


@dataclass
class Summary:
    input_size: tuple[int, ...]
    layers: list[LayerRow]
    num_parameters: int
    trainable_parameters: int
    parameter_bytes: int
    flops: int
    mult_adds: int


def _first_tensor(value):
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        for v in value:
            t = _first_tensor(v)
            if t is not None:
                return t
    if isinstance(value, dict):
        return _first_tensor(list(value.values()))
    return None


def summarize(model: nn.Module, input_size: tuple[int, ...], device, dtype) -> Summary:
    """Per-layer shapes, parameters and multiply-adds for one image of `input_size` (C, H, W)."""
    rows: dict[str, LayerRow] = {}
    handles = []
    owner = object()
    modules = dict(model.named_modules())
    for name, module in modules.items():
        if name == "":
            continue
        own = list(module.parameters(recurse=False))
        rows[name] = LayerRow(
            name=name,
            type=type(module).__name__,
            depth=name.count(".") + 1,
            is_leaf=not any(True for _ in module.children()),
            num_parameters=sum(p.numel() for p in own),
            trainable_parameters=sum(p.numel() for p in own if p.requires_grad),
            conv=is_conv(module),
        )

        def record(mod, inputs, output, row=rows[name]):
            if _active.get() is not owner:
                return
            t_in, t_out = _first_tensor(inputs), _first_tensor(output)
            if t_in is not None and not row.input_shape:
                row.input_shape = list(t_in.shape)
            if t_out is not None and not row.output_shape:
                row.output_shape = list(t_out.shape)
                row.cam_target = t_out.dim() == 4

        handles.append(module.register_forward_hook(record))
    x = torch.zeros((1, *input_size), device=device, dtype=dtype)
    token = _active.set(owner)
    try:
        with FlopCounterMode(display=False) as counter, torch.inference_mode():
            model(x)
    finally:
        for h in handles:
            h.remove()
        _active.reset(token)
    counts = counter.get_flop_counts()
    root = type(model).__name__
    for key, ops in counts.items():
        name = key[len(root) + 1 :] if key.startswith(root + ".") else None
        if name in rows:
            rows[name].mult_adds = sum(ops.values()) // 2
    params = list(model.parameters())
    flops = counter.get_total_flops()
    return Summary(
        input_size=tuple(input_size),
        layers=list(rows.values()),
        num_parameters=sum(p.numel() for p in params),
        trainable_parameters=sum(p.numel() for p in params if p.requires_grad),
        parameter_bytes=sum(p.numel() * p.element_size() for p in params),
        flops=flops,
        mult_adds=flops // 2,
    )
