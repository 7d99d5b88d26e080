"""The one way netscope looks at a layer during a forward pass.

`capture(model, layers, grad=...)` registers forward hooks on entry and removes
them on exit (success, error or cancellation), so a model never carries more
hooks than it had before a request.

Two properties make it safe to share a model between threads and to use on
models with in-place ops:

- Each hook only records for the capture that registered it *in the current
  context* (a ContextVar), so a forward pass running in another thread at the
  same time is neither seen nor disturbed.
- The hook hands the module's output on as a clone, so a downstream in-place
  op (ReLU(inplace=True) in resnets, vggs, densenets) changes the clone and
  never the captured tensor; gradients still flow through the clone.

With `grad=True` the first captured layer the forward pass reaches becomes a
fresh leaf that requires grad: backward then stops there, nothing upstream is
differentiated, no parameter gets a `.grad`, and frozen models explain too.
Run that forward under `torch.no_grad()` and nothing upstream of the first
captured layer even records a graph: the capture switches grad recording on
at that layer for the rest of the forward pass (the caller's `no_grad` block
restores the mode on exit). With `from_input=True` nothing is cut: captured
outputs stay connected to an input that requires grad (FullGrad needs the
input's gradient and the layers' together).
"""
from __future__ import annotations

import contextvars
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator

import torch
from torch import nn

from ..errors import FailedPrecondition, InvalidArgument, NotFound, closest, closest_metadata, shown

_active: contextvars.ContextVar["Capture | None"] = contextvars.ContextVar("netscope_capture", default=None)
_replacing: contextvars.ContextVar["object | None"] = contextvars.ContextVar("netscope_replace", default=None)


def find_layer(model: nn.Module, name: str, field: str = "layers") -> nn.Module:
    """The module named `name` (qualified, from named_modules()), or NOT_FOUND with the closest names,
    naming `field`, the request field that held the name (so a client can tell it from an image's fault)."""
    modules = dict(model.named_modules())
    if name not in modules or name == "":
        names = [n for n in modules if n]
        raise NotFound(f"layer {shown(name)} not found{closest(name, names)}", reason="LAYER_NOT_FOUND",
                       field=field, metadata=closest_metadata(name, names))
    return modules[name]


def called_layer(model: nn.Module, name: str) -> nn.Module:
    """find_layer, refusing a container without a forward of its own, such as
    a ModuleList/ModuleDict (InvalidArgument naming its children): its parent
    iterates it and never calls it (MaxViT's `blocks`), so a hook on it never
    fires and the layer has no output to capture. (DenseNet's dense blocks are
    ModuleDicts with a forward: those are called.)"""
    module = find_layer(model, name)
    if type(module).forward is nn.Module.forward:
        kids = [f"{name}.{k}" for k, _ in module.named_children()]
        some = ", ".join(repr(k) for k in (kids if len(kids) <= 4 else [*kids[:2], "...", kids[-1]])).replace("'...'", "...")
        raise InvalidArgument(f"layer {shown(name)} is a {type(module).__name__}: the model iterates it and never calls "
                              f"it, so it has no output; name one of its children ({some})", reason="LAYER_NOT_CALLED",
                              field="layers", metadata={"last_child": kids[-1]} if kids else {})
    return module


class Capture:
    """What one capture saw: `outputs[name]` is the layer's output tensor
    (part of the autograd graph when grad=True), `activations[name]` the same
    detached."""

    def __init__(self, layers: list[str], grad: bool, from_input: bool = False):
        self.layers = layers
        self.grad = grad
        self.from_input = from_input
        self.outputs: dict[str, torch.Tensor] = {}

    @property
    def activations(self) -> dict[str, torch.Tensor]:
        return {name: out.detach() for name, out in self.outputs.items()}

    def output(self, name: str) -> torch.Tensor:
        if name not in self.outputs:
            raise FailedPrecondition(
                f"layer {name!r} was not reached by the forward pass (an unused branch or aux head?)"
            )
        return self.outputs[name]

    def require_all(self) -> None:
        for name in self.layers:
            self.output(name)

    def gradients(self, score: torch.Tensor, layers: Iterable[str] | None = None, retain_graph: bool = False,
                  create_graph: bool = False) -> dict[str, torch.Tensor]:
        """d score / d output for each captured layer, by torch.autograd.grad
        (no parameter gradients, nothing accumulated in `.grad`); with
        create_graph the gradients can be differentiated again (ShapleyCAM)."""
        names = list(layers) if layers is not None else self.layers
        tensors = [self.output(n) for n in names]
        if not score.requires_grad:
            raise FailedPrecondition("the score does not depend on the captured layers")
        grads = torch.autograd.grad(score, tensors, retain_graph=retain_graph or create_graph,
                                    create_graph=create_graph, allow_unused=True)
        return {n: (g if g is not None else torch.zeros_like(t)) for n, t, g in zip(names, tensors, grads)}

    def _record(self, name: str, output):
        if not isinstance(output, torch.Tensor):
            # Tuples, namedtuples (GoogLeNet/Inception outputs): record the first tensor.
            tensor = next((o for o in output if isinstance(o, torch.Tensor)), None) if isinstance(output, (tuple, list)) else None
            if tensor is not None and name not in self.outputs:
                self.outputs[name] = tensor.detach().clone()
            return None
        if self.grad and not self.outputs and not torch.is_grad_enabled() and not torch.is_inference_mode_enabled():
            # The forward runs under no_grad: record the graph from here on only.
            torch.set_grad_enabled(True)
        if self.grad and torch.is_grad_enabled():
            if not output.requires_grad or (not self.outputs and not self.from_input):
                # Nothing upstream of the first captured layer needs
                # differentiating: start the graph here.
                output = output.detach().requires_grad_(True)
            self.outputs[name] = output
            return output.clone()
        self.outputs[name] = output.detach()
        return output.clone()


@contextmanager
def capture(model: nn.Module, layers: Iterable[str], *, grad: bool = False, from_input: bool = False) -> Iterator[Capture]:
    """Capture the outputs of `layers` (qualified names) during forward passes
    run inside the block, in this context only."""
    names = list(dict.fromkeys(layers))
    modules = [(n, called_layer(model, n)) for n in names]
    cap = Capture(names, grad, from_input)

    def make_hook(name: str):
        def hook(module, inputs, output):
            if _active.get() is not cap:
                return None
            return cap._record(name, output)

        return hook

    handles = []
    token = _active.set(cap)
    try:
        for name, module in modules:
            handles.append(module.register_forward_hook(make_hook(name)))
        yield cap
    finally:
        for h in handles:
            h.remove()
        _active.reset(token)


@contextmanager
def replace_output(model: nn.Module, layer: str, fn: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[None]:
    """Within the block, and in this context only, `layer`'s output is
    replaced by `fn(output)` (ablations). Other threads' forward passes see
    the layer as it is; the hook is removed on exit."""
    module = find_layer(model, layer)
    owner = object()

    def hook(mod, inputs, output):
        if _replacing.get() is not owner:
            return None
        return fn(output)

    token = _replacing.set(owner)
    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
        _replacing.reset(token)


def hook_count(model: nn.Module) -> int:
    """All forward/backward hooks on the model's modules (for leak checks)."""
    total = 0
    for m in model.modules():
        total += len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        total += len(getattr(m, "_backward_pre_hooks", {}))
    return total
