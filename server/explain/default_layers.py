"""The layer a CAM (and a feature-map request with no layer named) looks at by
default, declared once per architecture family.

The rule of thumb is the last block the forward pass calls before the global
pool, whose output is still spatial: (N, C, H, W) for CNNs, (N, H, W, C) for
Swin, (N, 1 + h*w, C) patch tokens for vision transformers. A declared layer
must be *called* by the forward pass: a container such as MaxViT's `blocks`
(a ModuleList iterated by the parent) never is, so a hook on it never fires.
tests/test_architectures.py checks every torchvision classifier and ours
against this table: a new family without an entry fails there.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Union

from torch import nn

from ..errors import InvalidArgument

Rule = Union[str, Callable[[nn.Module], "str | None"]]


@dataclass(frozen=True)
class Family:
    """An architecture family: its module class name, its default layer (a
    qualified module name, or a rule model -> name), and the arch-name prefixes
    that also identify it (a wrapped or renamed module class)."""

    cls: str
    layer: Rule
    why: str = ""
    archs: tuple[str, ...] = ()

    def resolve(self, model: nn.Module) -> str | None:
        return self.layer(model) if callable(self.layer) else self.layer


def last_relu(seq_name: str) -> Callable[[nn.Module], "str | None"]:
    """The last ReLU inside `seq_name`, nested blocks included: the last conv's
    activation before the final pool, non-negative as the Grad-CAM family's
    weights assume (XGrad-CAM divides by each channel's sum)."""

    def pick(model: nn.Module) -> str | None:
        seq = dict(model.named_modules()).get(seq_name)
        if seq is None:
            return None
        relus = [name for name, m in seq.named_modules() if isinstance(m, nn.ReLU)]
        return f"{seq_name}.{relus[-1]}" if relus else seq_name

    return pick


def last_child(container: str) -> Callable[[nn.Module], "str | None"]:
    """The last child of a ModuleList/Sequential the parent iterates itself
    (the container is never called, its children are)."""

    def pick(model: nn.Module) -> str | None:
        seq = dict(model.named_modules()).get(container)
        children = list(seq.named_children()) if seq is not None else []
        return f"{container}.{children[-1][0]}" if children else None

    return pick


def vit_last_block_input(model: nn.Module) -> str | None:
    """The last encoder block's first LayerNorm: the patch tokens that feed the
    class token through attention (the class token never feeds back into them)."""
    layers = getattr(getattr(model, "encoder", None), "layers", None)
    if layers is None or len(layers) == 0:
        return None
    last = list(layers.named_children())[-1][0]
    return f"encoder.layers.{last}.ln_1"


FAMILIES: tuple[Family, ...] = (
    Family("ResNet", "layer4", "the last residual stage", ("resnet", "resnext", "wide_resnet")),
    Family("VGG", last_relu("features"), "the last conv's ReLU, before the last max-pool", ("vgg",)),
    Family("AlexNet", last_relu("features"), "the last conv's ReLU, before the last max-pool", ("alexnet",)),
    Family("SimpleCNN", last_relu("features"), "ours: the last block's last ReLU, before its max-pool",
           ("simple_cnn",)),
    Family("DenseNet", "features", "the last dense block after its norm", ("densenet",)),
    Family("MobileNetV2", "features", "the last 1x1 conv block", ("mobilenet_v2",)),
    Family("MobileNetV3", "features", "the last 1x1 conv block", ("mobilenet_v3",)),
    Family("EfficientNet", "features", "the last 1x1 conv block", ("efficientnet",)),
    Family("ConvNeXt", "features", "the last stage", ("convnext",)),
    Family("RegNet", "trunk_output", "the last stage", ("regnet",)),
    Family("SqueezeNet", "features", "the last fire module", ("squeezenet",)),
    Family("MNASNet", "layers", "the last 1x1 conv block", ("mnasnet",)),
    Family("ShuffleNetV2", "conv5", "the last 1x1 conv", ("shufflenet",)),
    Family("GoogLeNet", "inception5b", "the last inception block", ("googlenet",)),
    Family("Inception3", "Mixed_7c", "the last inception block", ("inception",)),
    Family("VisionTransformer", vit_last_block_input, "the last encoder block's input tokens", ("vit_",)),
    Family("SwinTransformer", "norm", "the last stage after its LayerNorm, channels last", ("swin",)),
    Family("MaxVit", last_child("blocks"), "the last stage (`blocks` itself is a ModuleList, never called)",
           ("maxvit",)),
)
_BY_CLASS = {f.cls: f for f in FAMILIES}


def family_of(model: nn.Module, arch: str = "") -> Family | None:
    """The declared family of `model` (by its class name, else by `arch`'s prefix), or None."""
    fam = _BY_CLASS.get(type(model).__name__)
    if fam is None and arch:
        fam = next((f for f in FAMILIES if arch.startswith(f.archs)), None)
    return fam


def default_layer(model: nn.Module, arch: str = "") -> str:
    """The qualified name of the layer a CAM explains by default: the family's
    declared layer, or for an undeclared family the last Conv2d. Raises
    InvalidArgument (field "layers") when neither exists."""
    modules = dict(model.named_modules())
    fam = family_of(model, arch)
    name = fam.resolve(model) if fam is not None else None
    if name is not None and name in modules:
        return name
    convs = [n for n, m in modules.items() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise InvalidArgument(f"{type(model).__name__} has no Conv2d layer to explain; name a layer with a spatial "
                              f"(N, C, H, W) output", reason="NO_DEFAULT_LAYER", field="layers")
    return convs[-1]


def suggest_layers(model: nn.Module, arch: str = "") -> str:
    """A hint listing layers that would work for a CAM: the default, then the last convs."""
    modules = dict(model.named_modules())
    convs = [n for n, m in modules.items() if isinstance(m, nn.Conv2d)][-3:]
    try:
        default = default_layer(model, arch)
    except InvalidArgument:
        default = None
    names = ([default] if default else []) + [c for c in reversed(convs) if c != default]
    return ", ".join(repr(n) for n in names)
