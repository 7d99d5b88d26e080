"""Architectures: our own small CNN, and every torchvision classifier by name.

`build_model(arch, num_classes, **arch_kwargs)` is what both the trainer and the
server's registry call, so a checkpoint's `arch`, `num_classes` and
`arch_kwargs` are all it takes to rebuild the network its weights fit.
"""
from __future__ import annotations

import os
import pathlib
from urllib.parse import urlparse

import torch
from torch import nn

from .options import OUR_ARCHITECTURES  # noqa: E402  (list[str]: our own architectures)

# torchvision classifiers whose auxiliary heads are off unless asked for: the
# trainer and the server want one tensor of logits out of forward().
_AUX_OFF = {"googlenet": {"aux_logits": False, "init_weights": True}, "inception_v3": {"aux_logits": False, "init_weights": True}}


class UnknownArchitecture(ValueError):
    pass


class WeightsUnavailable(RuntimeError):
    """Pretrained weights are not in the local torch cache and downloading was not asked for."""


def conv_block(in_ch: int, out_ch: int, convs: int = 1) -> nn.Sequential:
    """`convs` x (conv3x3 - BatchNorm - ReLU), then a 2x2 max-pool: halves the spatial size.
    With one conv the module names are those of every checkpoint written before `convs` existed."""
    layers: list[nn.Module] = []
    for i in range(convs):
        layers += [nn.Conv2d(in_ch if i == 0 else out_ch, out_ch, kernel_size=3, padding=1, bias=False),
                   nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers, nn.MaxPool2d(2))


class SimpleCNN(nn.Module):
    """The small CNN of PyTorch's CIFAR-10 tutorial, rebuilt as conv-BN-ReLU-pool blocks.

    `features` holds one block per entry of `widths`, each halving the input,
    so a 64x64 input with three blocks ends in an 8x8 map (CAMs explain the
    last block's last ReLU by default, `features.2.2` with one conv per
    block, the map before that block's pool). The head averages that map
    (global average pooling, which makes CAM exact) and classifies it with
    `classifier`: dropout and, by default, one linear layer; `hidden=[120, 84]`
    gives the tutorial's fully connected stack instead.

    `convs` stacks that many conv-BN-ReLU layers in each block before its
    pool (VGG-style). One is enough for digits; shapes on cluttered
    backgrounds need two (docs/TRAINING.md: with one, a three-block net
    whose last map already sees the whole 32 px shape still crawls near
    chance; the second conv per scale is what lets it learn corners and
    curves). It also widens the last map's receptive field from 22 to 36 px.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        input_size: int = 32,
        widths=(32, 64, 128),
        hidden=(),
        dropout: float = 0.2,
        convs: int = 1,
    ):
        super().__init__()
        widths, hidden = [int(w) for w in widths], [int(h) for h in hidden]
        if not widths or any(w < 1 for w in widths):
            raise ValueError(f"simple_cnn: widths must be positive channel counts, got {widths}")
        if in_channels < 1:
            raise ValueError(f"simple_cnn: in_channels must be >= 1, got {in_channels}")
        if int(convs) < 1:
            raise ValueError(f"simple_cnn: convs (conv layers per block) must be >= 1, got {convs}")
        if input_size < 2 ** len(widths):
            raise ValueError(
                f"simple_cnn: input_size {input_size} is too small for {len(widths)} pooling blocks "
                f"(needs at least {2 ** len(widths)})"
            )
        self.in_channels, self.input_size = int(in_channels), int(input_size)
        blocks, ch = [], int(in_channels)
        for w in widths:
            blocks.append(conv_block(ch, w, int(convs)))
            ch = w
        self.features = nn.Sequential(*blocks)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        head: list[nn.Module] = [nn.Flatten(1)]
        for h in hidden:
            head += [nn.Dropout(dropout), nn.Linear(ch, h), nn.ReLU(inplace=True)]
            ch = h
        head += [nn.Dropout(dropout), nn.Linear(ch, num_classes)]
        self.classifier = nn.Sequential(*head)
        init_weights(self, "kaiming")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.avgpool(self.features(x)))


_OURS = {"simple_cnn": SimpleCNN}


def torchvision_architectures() -> list[str]:
    import torchvision.models as tvm

    return sorted(tvm.list_models(module=tvm))


def available_architectures() -> list[str]:
    return [*OUR_ARCHITECTURES, *torchvision_architectures()]


def _unknown(arch: str) -> UnknownArchitecture:
    import difflib

    names = available_architectures()
    close = difflib.get_close_matches(arch, names, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return UnknownArchitecture(
        f"unknown architecture {arch!r}.{hint} Ours: {', '.join(OUR_ARCHITECTURES)}; or any torchvision "
        f"classifier: {', '.join(torchvision_architectures())}"
    )


def build_model(arch: str, num_classes: int, **arch_kwargs) -> nn.Module:
    """A freshly initialised `arch` with `num_classes` outputs."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if arch in _OURS:
        try:
            return _OURS[arch](num_classes=num_classes, **arch_kwargs)
        except TypeError as e:
            raise ValueError(f"{arch}: bad arch_kwargs {arch_kwargs}: {e}") from e
    if arch not in torchvision_architectures():
        raise _unknown(arch)
    import torchvision.models as tvm

    kwargs = {**_AUX_OFF.get(arch, {}), **arch_kwargs}
    try:
        return tvm.get_model(arch, weights=None, num_classes=num_classes, **kwargs)
    except TypeError as e:
        raise ValueError(f"{arch}: bad arch_kwargs {arch_kwargs}: {e}") from e


def torchvision_weights(arch: str, weights: str = "DEFAULT"):
    """The torchvision weights enum member for `arch` (`DEFAULT` or a member name like IMAGENET1K_V1)."""
    import torchvision.models as tvm

    if arch in OUR_ARCHITECTURES:
        raise ValueError(f"{arch} is ours: it has no torchvision pretrained weights")
    if arch not in torchvision_architectures():
        raise _unknown(arch)
    enum = tvm.get_model_weights(arch)
    name = weights.split(".")[-1]
    try:
        return enum[name] if name != "DEFAULT" else enum.DEFAULT
    except KeyError:
        raise ValueError(
            f"{arch} has no weights {weights!r}; choose DEFAULT or one of {', '.join(m.name for m in enum)}"
        ) from None


def weights_cache_path(weights) -> pathlib.Path:
    """Where torch.hub keeps (or would keep) the file of a torchvision weights enum member."""
    return pathlib.Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)


def replace_head(model: nn.Module, num_classes: int, old_classes: int = 1000) -> list[str]:
    """Swap every layer that outputs `old_classes` logits for a fresh one with `num_classes`.

    Covers resnet/regnet/shufflenet `fc`, vgg/alexnet/efficientnet/mobilenet/convnext
    `classifier[-1]`, densenet `classifier`, vit/swin `heads.head`/`head`,
    squeezenet's 1x1 conv `classifier.1`, and auxiliary heads where present.
    Returns the qualified names of the replaced modules.
    """
    replaced = []
    for name, module in list(model.named_modules()):
        new: nn.Module | None = None
        if isinstance(module, nn.Linear) and module.out_features == old_classes:
            new = nn.Linear(module.in_features, num_classes, bias=module.bias is not None)
        elif isinstance(module, nn.Conv2d) and module.out_channels == old_classes:
            new = nn.Conv2d(
                module.in_channels, num_classes, module.kernel_size, module.stride, module.padding,
                bias=module.bias is not None,
            )
        if new is None:
            continue
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, new)
        replaced.append(name)
    if not replaced:
        raise ValueError(f"found no layer with {old_classes} outputs to replace in {type(model).__name__}")
    if hasattr(model, "num_classes"):
        model.num_classes = num_classes
    return replaced


def build_pretrained(arch: str, num_classes: int, weights: str = "DEFAULT", download: bool = False):
    """torchvision `arch` with pretrained weights and a new head for `num_classes`.

    Returns (model, weights enum member, names of the new head modules). Offline
    first: unless `download`, the weights must already be in the torch cache.
    """
    import torchvision.models as tvm

    member = torchvision_weights(arch, weights)
    cached = weights_cache_path(member)
    if not cached.is_file() and not download:
        raise WeightsUnavailable(
            f"pretrained weights {member} for {arch} are not in the local torch cache (looked for {cached}); "
            "pass --download to fetch them"
        )
    kwargs = {}
    if arch in _AUX_OFF:
        kwargs["aux_logits"] = True  # torchvision loads these weights with their aux heads, then drops them
    model = tvm.get_model(arch, weights=member, **kwargs)
    if arch in _AUX_OFF:
        model.aux_logits = False
        for aux in ("aux1", "aux2", "AuxLogits"):
            if hasattr(model, aux):
                setattr(model, aux, None)
    old = len(member.meta.get("categories") or []) or 1000
    return model, member, replace_head(model, num_classes, old)


def init_weights(model: nn.Module, scheme: str = "default", only=None) -> None:
    """Re-initialise conv and linear layers: `default` keeps each module's own init,
    `kaiming` (He, fan_out, for ReLU nets), `xavier` (Glorot uniform), or `torch`
    (PyTorch's own layer defaults, `reset_parameters`: weights 1.7-2.5x smaller
    than kaiming's, which trains simple_cnn on shapes far better, docs/TRAINING.md).
    Except for `torch`, biases go to zero and norm layers to identity. `only`:
    qualified module names to touch."""
    if scheme == "default":
        return
    if scheme not in ("kaiming", "xavier", "torch"):
        raise ValueError(f"unknown init {scheme!r}; choose default, kaiming, xavier or torch")
    modules = [model.get_submodule(n) for n in only] if only else [m for _, m in model.named_modules()]
    for top in modules:
        for m in top.modules():
            if scheme == "torch":
                if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)):
                    m.reset_parameters()
                continue
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                if scheme == "kaiming":
                    if isinstance(m, nn.Conv2d):
                        nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                    else:
                        nn.init.kaiming_uniform_(m.weight, nonlinearity="relu")
                else:
                    nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)) and m.weight is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
