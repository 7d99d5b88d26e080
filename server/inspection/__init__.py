"""Looking inside a model: feature maps, kernel grids, weight and gradient statistics.

Tensors in; plain dataclasses, tensors, numpy arrays and PNG bytes out. No
protos, no gRPC: service.py converts.

Conventions chosen here (and documented on the wire in inspector.proto):

- A layer's output is reported per image, without the batch dimension:
  `shape` is (C, H, W) for a conv layer, (F,) for a Linear layer, (T, D) for a
  transformer block.
- The *channel axis* of a per-image output is its first axis, except for
  (T, D) token sequences, where it is the last (a ViT block's D features are
  its channels; its T tokens are positions). `channels`, `top_channels` and
  the per-channel mean/max all refer to that axis, and the returned
  activation keeps the output's layout with only that axis indexed.
  (Swin's channels-last (H, W, C) stages follow the first-axis rule: ask for
  their norm/permute outputs if you need channels.)
- Grids are drawn for spatial outputs only ((C, H, W) per image); for other
  outputs `grid_png` is empty.
- Statistics use the population standard deviation (correction 0), are
  computed in float64, and histograms follow `torch.histc` on float32 values:
  equal-width bins over [hist_min, hist_max], or over the data's finite
  min..max when the range is unset (min == max), widened by 1 each way when
  the data is constant. Non-finite values are left out of histograms only.
- Gradients are taken with `torch.autograd.grad` w.r.t. the parameters of the
  asked-for layers, in the model's current (eval) mode: nothing is written to
  the model (no `.grad`, no BatchNorm running statistics, no mode change, no
  hooks), so a failure half-way leaves it exactly as it was, and forward-only
  requests may run beside it. The differentiated quantity is the batch mean
  of the target class's logit (the top-1 class per image by default) or, with
  true labels, the mean cross-entropy, as a training step would compute it.
- Frozen parameters (requires_grad=False) get value statistics and
  `trainable=False` but no gradient statistics: training never updates them,
  and giving them gradients would mean flipping `requires_grad` on a model
  other requests are using. Parameters the loss does not depend on (an unused
  aux head) get no gradient statistics either; a parameter on the path whose
  gradient is exactly zero gets zeros.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import imaging
from ..runtime import torch_thread
from ..errors import FailedPrecondition, InvalidArgument, ResourceExhausted, closest, shown
from .hooks import capture, find_layer
from ..explain.maps import too_small

DEFAULT_MAX_TILES = 64
DEFAULT_BINS = 30
MAX_BINS = 100_000
FLOAT32_MAX = float(np.finfo(np.float32).max)

# Kernel grid modes.
AUTO, RGB, PER_CHANNEL, MEAN_INPUT = "auto", "rgb", "per_channel", "mean_input"
KERNEL_MODES = (AUTO, RGB, PER_CHANNEL, MEAN_INPUT)


# ---------------------------------------------------------------- data


@dataclass(frozen=True)
class GridSpec:
    """How to draw tiles into one PNG grid."""

    colormap: str = "gray"
    upsample_to_input: bool = False  # feature maps only: each tile at the input's (H, W)
    max_tiles: int = DEFAULT_MAX_TILES
    nrow: int = 0  # tiles per row, 0: square-ish
    padding: int = 2
    tile_size: int = 0  # longer side of each tile in pixels, 0: natural size

    def __post_init__(self):
        if self.max_tiles < 0 or self.nrow < 0 or self.padding < 0 or self.tile_size < 0:
            raise InvalidArgument("grid options max_tiles, nrow, padding and tile_size must not be negative")
        if self.tile_size > 4096 or self.padding > 1024:
            raise InvalidArgument("grid tile_size must be at most 4096 and padding at most 1024 pixels")
        imaging.colorize(np.zeros((1, 1), np.uint8), self.colormap or "gray")  # unknown colormap: InvalidArgument

    @property
    def tiles_limit(self) -> int:
        return self.max_tiles or DEFAULT_MAX_TILES


@dataclass
class LayerActivation:
    """One layer's output for one image."""

    layer: str
    shape: tuple[int, ...]  # the layer's per-image output shape (no batch dimension)
    channel_axis: int  # axis of `shape` that `channels` index (-1 for a scalar output)
    channels: list[int]  # channel indices returned, in order
    activation: torch.Tensor | None  # float32 CPU, `shape` with the channel axis indexed by `channels`
    channel_mean: np.ndarray  # float32, per returned channel
    channel_max: np.ndarray
    grid_png: bytes = b""


@dataclass
class KernelGrid:
    layer: str
    weight: torch.Tensor | None  # (out, in/groups, kh, kw) float32 CPU
    grid_png: bytes
    mode: str  # the mode used: rgb, per_channel or mean_input
    tiles: int  # tiles drawn
    total_tiles: int  # tiles the mode would draw without max_tiles


@dataclass
class Stats:
    mean: float
    std: float  # population (correction 0)
    min: float
    max: float
    l2_norm: float
    zero_fraction: float
    hist_edges: np.ndarray  # float64, bins + 1
    hist_counts: np.ndarray  # int64, bins


@dataclass
class ParameterStats:
    name: str  # relative to the layer: "weight", "bias" (or "0.conv1.weight" for a container)
    shape: tuple[int, ...]
    count: int
    trainable: bool
    value: Stats
    grad: Stats | None = None


@dataclass
class LayerStats:
    layer: str
    type: str
    parameters: list[ParameterStats]
    grad_norm: float = 0.0  # L2 norm of all of this layer's parameter gradients
    grad_norm_ratio: float = 0.0  # over the next layer (towards the output) with a nonzero grad_norm; 0: none
    has_grad: bool = False


@dataclass
class LayerStatsResult:
    layers: list[LayerStats]
    loss: float | None = None  # the differentiated quantity, when images were given
    grad_parameters: int = 0  # parameter tensors differentiated


# ---------------------------------------------------------------- helpers


def model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    for t in model.parameters():
        return t.device, t.dtype
    for t in model.buffers():
        if t.is_floating_point():
            return t.device, t.dtype
    return torch.device("cpu"), torch.float32


def _as_input(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() < 2:
        raise InvalidArgument(f"input must be a batch tensor (N, C, H, W); got {getattr(x, 'shape', type(x).__name__)}")
    if x.shape[0] == 0:
        raise InvalidArgument("empty batch: send at least one image")
    device, dtype = model_device_dtype(model)
    return x.detach().to(device=device, dtype=dtype if x.is_floating_point() else None)


def _check_size(estimate: int, max_bytes: int | None, what: str, hint: str) -> None:
    if max_bytes and estimate > max_bytes:
        raise ResourceExhausted(
            f"the {what} would be about {estimate:,} bytes ({estimate / 2**20:.1f} MiB), over the "
            f"message limit of {max_bytes:,} bytes ({max_bytes / 2**20:.1f} MiB); {hint}"
        )


def _grid_shape(n: int, tile_hw: tuple[int, int], nrow: int, padding: int) -> tuple[int, int]:
    nrow = nrow if nrow > 0 else math.ceil(math.sqrt(n))
    nrow = min(nrow, n) if n else nrow
    rows = math.ceil(n / nrow) if n else 0
    h, w = tile_hw
    return rows * (h + padding) + padding, nrow * (w + padding) + padding


def _tile_hw(hw: tuple[int, int], tile_size: int) -> tuple[int, int]:
    h, w = hw
    if tile_size <= 0:
        return h, w
    scale = tile_size / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def _png_estimate(grid_hw: tuple[int, int]) -> int:
    # Smooth maps compress well, but a PNG of noise is its raw size plus a
    # filter byte per row and deflate's framing: estimate that worst case.
    h, w = grid_hw
    raw = h * (w * 3 + 1)
    return raw + raw // 100 + 1024


def _render(maps: Sequence[np.ndarray], spec: GridSpec, *, upsample_to: tuple[int, int] | None, rgb: bool = False) -> bytes:
    """Each map (h, w) [or (h, w, 3) when rgb] normalised 0-255 on its own, coloured, scaled, tiled."""
    tiles = []
    for m in maps:
        if upsample_to is not None and not rgb:
            m = imaging.resize_map(m, upsample_to)
        u8 = imaging.to_uint8(m)
        tile = u8 if rgb else imaging.colorize(u8, spec.colormap or "gray")
        tile = imaging.scale_tile(tile, _tile_hw(tile.shape[:2], spec.tile_size))
        tiles.append(tile)
    nrow = min(spec.nrow, len(tiles)) if spec.nrow > 0 else 0  # no empty columns
    return imaging.encode_png(imaging.make_grid(tiles, nrow=nrow, padding=spec.padding))


def _run(model: nn.Module, x: torch.Tensor):
    """model(x), with "input too small for the network" as InvalidArgument."""
    try:
        return model(x)
    except RuntimeError as exc:
        small = too_small(exc, x)
        if small is None:
            raise
        raise small from None


def _first_tensor(out) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(out, (tuple, list)):
        for o in out:
            if isinstance(o, torch.Tensor):
                return o
    raise FailedPrecondition(f"the model returned {type(out).__name__}, not a tensor of class scores")


# ---------------------------------------------------------------- feature maps


def channel_axis(per_image_shape: Sequence[int]) -> int:
    """The axis of a per-image output that holds its channels (see module doc)."""
    nd = len(per_image_shape)
    if nd == 0:
        return -1
    return nd - 1 if nd == 2 else 0


def _channels_view(a: torch.Tensor, axis: int) -> torch.Tensor:
    """Per-image output -> (C, rest) with the channel axis first."""
    if axis < 0:
        return a.reshape(1, 1)
    return a.movedim(axis, 0).reshape(a.shape[axis], -1)


@dataclass(frozen=True)
class _LayerPlan:
    """What one layer's answer will hold, sized before anything is copied or drawn."""

    layer: str
    shape: tuple[int, ...]  # per-image output shape
    axis: int  # channel axis of `shape` (-1 for a scalar output)
    k: int  # channels returned per image
    grid_hw: tuple[int, int] | None  # (H, W) pixels of each image's PNG grid; None: no grid is drawn
    size: int  # estimated bytes of one image's LayerActivation on the wire


def _feature_request(layers: Sequence[str], channels: Sequence[int], top_channels: int) -> tuple[list[str], list[int]]:
    """(layer names, channel indices) without repeats, in request order; InvalidArgument on a bad combination."""
    names = list(dict.fromkeys(layers))
    if not names:
        raise InvalidArgument("name at least one layer")
    if channels and top_channels:
        raise InvalidArgument("ask for either channels or top_channels, not both")
    if top_channels < 0:
        raise InvalidArgument(f"top_channels must not be negative; got {top_channels}")
    wanted = list(dict.fromkeys(int(c) for c in channels))
    if any(c < 0 for c in wanted):
        raise InvalidArgument(f"channel indices must not be negative; got {sorted(c for c in wanted if c < 0)}")
    return names, wanted


def _capture_outputs(model: nn.Module, x: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
    """Each named layer's output (batch first) from one forward pass, without gradients."""
    # Check points at every block (the caller gone: stop; a waiting Predict: run it).
    with torch.inference_mode(), capture(model, names) as cap, torch_thread.yielding(model):
        _run(model, x)
        cap.require_all()
        return {n: cap.output(n) for n in names}


def _plan_layer(
    name: str,
    out: torch.Tensor,
    batch: int,
    wanted: list[int],
    top_channels: int,
    grid: GridSpec | None,
    with_tensor: bool,
    size_hw: tuple[int, int],
) -> _LayerPlan:
    """The shape, channel count, grid size and answer size of one layer's output."""
    if out.dim() == 0 or out.shape[0] != batch:
        raise FailedPrecondition(
            f"layer {name!r} output has shape {tuple(out.shape)}, with no batch dimension of {batch}"
        )
    shape = tuple(int(s) for s in out.shape[1:])
    axis = channel_axis(shape)
    n_ch = shape[axis] if axis >= 0 else 1
    if wanted:
        bad = [c for c in wanted if c >= n_ch]
        if bad:
            raise InvalidArgument(f"layer {name!r} has {n_ch} channels (0..{n_ch - 1}); no channel {bad[0]}")
        k = len(wanted)
    elif top_channels:
        k = min(top_channels, n_ch)
    else:
        k = n_ch
    per_channel = math.prod(s for i, s in enumerate(shape) if i != axis) if shape else 1
    size = 64 + len(name) + 3 * 6 * k + 10 * len(shape)
    if with_tensor:
        size += 4 * k * per_channel + 32
    grid_hw = None
    if grid is not None and len(shape) == 3 and k:  # grids for spatial (C, H, W) outputs only
        tile = size_hw if grid.upsample_to_input else shape[1:]
        grid_hw = _grid_shape(min(k, grid.tiles_limit), _tile_hw(tuple(tile), grid.tile_size), grid.nrow, grid.padding)
        size += _png_estimate(grid_hw)
    return _LayerPlan(name, shape, axis, k, grid_hw, size)


def _select_channels(means: torch.Tensor, wanted: list[int], top_channels: int, k: int) -> torch.Tensor:
    """Indices (long) of the channels to return: `wanted`, the `k` highest means (stable), or all."""
    if wanted:
        return torch.tensor(wanted, dtype=torch.long, device=means.device)
    if top_channels:
        return torch.sort(means, descending=True, stable=True).indices[:k]
    return torch.arange(means.shape[0], device=means.device)


def _image_activation(
    plan: _LayerPlan,
    a: torch.Tensor,
    wanted: list[int],
    top_channels: int,
    grid: GridSpec | None,
    with_tensor: bool,
    size_hw: tuple[int, int],
) -> LayerActivation:
    """One image's float32 output `a` of one layer -> its selected channels, statistics and grid."""
    cv = _channels_view(a, plan.axis)  # (C, rest)
    means, maxes = cv.mean(dim=1), cv.amax(dim=1)
    idx = _select_channels(means, wanted, top_channels, plan.k)
    sel = a.index_select(plan.axis, idx) if plan.axis >= 0 else a
    png = b""
    if grid is not None and plan.grid_hw is not None:
        maps = sel[: grid.tiles_limit].cpu().numpy()
        png = _render(list(maps), grid, upsample_to=size_hw if grid.upsample_to_input else None)
    return LayerActivation(
        layer=plan.layer,
        shape=plan.shape,
        channel_axis=plan.axis,
        channels=[int(c) for c in idx.tolist()],
        activation=sel.cpu().contiguous() if with_tensor else None,
        channel_mean=means[idx].cpu().numpy().astype(np.float32),
        channel_max=maxes[idx].cpu().numpy().astype(np.float32),
        grid_png=png,
    )


def feature_maps(
    model: nn.Module,
    x: torch.Tensor,
    layers: Sequence[str],
    *,
    channels: Sequence[int] = (),
    top_channels: int = 0,
    grid: GridSpec | None = None,
    with_tensor: bool = True,
    input_size: tuple[int, int] | None = None,
    max_bytes: int | None = None,
) -> list[list[LayerActivation]]:
    """Per image (batch order), per layer (request order): what the layer outputs.

    `x` is a batch (N, C, H, W), moved to the model's device and dtype.
    `channels` selects channels by index, `top_channels` the N with the highest
    mean activation for each image (highest first, ties by lower index); by
    default all. `grid` also renders the returned channels (the first
    `max_tiles`) as a PNG. `input_size` (H, W) is what `upsample_to_input`
    scales to (default: x's own). Over `max_bytes`: ResourceExhausted, before
    anything is copied or drawn. Bad layers, channels or inputs:
    InvalidArgument / NotFound; a layer output without the batch dimension:
    FailedPrecondition.
    """
    names, wanted = _feature_request(layers, channels, top_channels)
    x = _as_input(model, x)
    size_hw = tuple(input_size) if input_size else tuple(x.shape[-2:])
    batch = x.shape[0]
    outs = _capture_outputs(model, x, names)

    # What will be returned, and how big it is, before any copy or drawing.
    plans = [_plan_layer(n, outs[n], batch, wanted, top_channels, grid, with_tensor, size_hw) for n in names]
    _check_size(
        sum(p.size for p in plans) * batch,
        max_bytes,
        "feature maps answer",
        "ask for fewer images, layers or channels (channels, top_channels), set omit_tensor, or draw fewer/smaller tiles",
    )

    results: list[list[LayerActivation]] = [[] for _ in range(batch)]
    for plan in plans:
        out = outs[plan.layer].float()
        for i in range(batch):
            torch_thread.checkpoint()  # drawing a batch's grids takes a while: stop if the caller has gone
            results[i].append(_image_activation(plan, out[i], wanted, top_channels, grid, with_tensor, size_hw))
    return results


# ---------------------------------------------------------------- kernels


def is_conv(module: nn.Module) -> bool:
    """A 2-D convolution whose weights GetKernels can draw."""
    return isinstance(module, nn.Conv2d)


def conv_layers(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if n and is_conv(m)]


def _conv_list_text(model: nn.Module, name: str) -> str:
    convs = conv_layers(model)
    if not convs:
        return "this model has no Conv2d layers"
    near = [c for c in closest(name, convs).removeprefix("; closest: ").split(", ") if c]
    shown = list(dict.fromkeys(near + convs))[:12]
    more = len(convs) - len(shown)
    return f"conv layers ({len(convs)}): " + ", ".join(shown) + (f", ... and {more} more" if more > 0 else "")


def kernels(
    model: nn.Module,
    layer: str,
    *,
    mode: str = AUTO,
    grid: GridSpec | None = None,
    with_tensor: bool = True,
    max_bytes: int | None = None,
) -> KernelGrid:
    """A conv layer's weights and a PNG grid of them (each tile normalised on its own).

    Modes: `rgb` one colour tile per output channel (3 input channels per
    group); `per_channel` one grey tile per (out, in) pair, output-major;
    `mean_input` one tile per output channel, averaged over its inputs;
    `auto` is rgb for the model's first conv when it takes 3 channels, else
    per_channel. At most `grid.max_tiles` tiles are drawn; the tensor is
    always the whole weight.
    """
    if not layer:
        raise InvalidArgument("name a conv layer; " + _conv_list_text(model, ""))
    module = find_layer(model, layer, field="layer")
    if not is_conv(module):
        raise InvalidArgument(
            f"layer {layer!r} is a {type(module).__name__}, not a Conv2d: GetKernels draws convolution weights; "
            + _conv_list_text(model, layer)
        )
    mode = (mode or AUTO).lower()
    if mode not in KERNEL_MODES:
        raise InvalidArgument(f"unknown kernel mode {shown(mode)}; choose one of {', '.join(KERNEL_MODES)}")
    grid = grid or GridSpec()
    w = module.weight.detach()
    out_ch, in_ch, kh, kw = (int(s) for s in w.shape)
    if mode == AUTO:
        first = next((m for _, m in model.named_modules() if is_conv(m)), None)
        mode = RGB if (module is first and in_ch == 3) else PER_CHANNEL
    if mode == RGB and in_ch != 3:
        raise InvalidArgument(
            f"rgb mode needs 3 input channels per group; layer {layer!r} has {in_ch}: use per_channel or mean_input"
        )
    total = out_ch * in_ch if mode == PER_CHANNEL else out_ch
    n = min(total, grid.tiles_limit)
    nrow = grid.nrow
    if not nrow and mode == PER_CHANNEL and in_ch <= n and in_ch > 1:
        nrow = in_ch  # one row per output channel
    spec = GridSpec(grid.colormap, False, grid.max_tiles, nrow, grid.padding, grid.tile_size)
    grid_hw = _grid_shape(n, _tile_hw((kh, kw), spec.tile_size), spec.nrow, spec.padding)
    estimate = 128 + len(layer) + _png_estimate(grid_hw) + (4 * w.numel() + 32 if with_tensor else 0)
    _check_size(estimate, max_bytes, "kernels answer", "set omit_tensor, or draw fewer/smaller tiles")

    wf = w.float().cpu()
    if mode == RGB:
        maps = [wf[o].permute(1, 2, 0).numpy() for o in range(n)]  # (kh, kw, 3): input channels are RGB
    elif mode == MEAN_INPUT:
        mean = wf.mean(dim=1)
        maps = [mean[o].numpy() for o in range(n)]
    else:
        flat = wf.reshape(out_ch * in_ch, kh, kw)
        maps = [flat[t].numpy() for t in range(n)]
    png = _render(maps, spec, upsample_to=None, rgb=mode == RGB)
    return KernelGrid(
        layer=layer,
        weight=wf.contiguous() if with_tensor else None,
        grid_png=png,
        mode=mode,
        tiles=n,
        total_tiles=total,
    )


# ---------------------------------------------------------------- statistics


def tensor_stats(t: torch.Tensor, bins: int = DEFAULT_BINS, hist_range: tuple[float, float] = (0.0, 0.0)) -> Stats:
    """Summary statistics and a torch.histc histogram of one tensor."""
    t = t.detach()
    count = t.numel()
    lo, hi = float(hist_range[0]), float(hist_range[1])
    if count == 0:
        edges_lo, edges_hi = (lo, hi) if lo < hi else (-1.0, 1.0)
        return Stats(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, np.linspace(edges_lo, edges_hi, bins + 1), np.zeros(bins, np.int64))
    d = t.double()
    std, mean = (float(v) for v in torch.std_mean(d, correction=0))
    l2 = float(torch.linalg.vector_norm(d))
    del d
    mn_t, mx_t = torch.aminmax(t.reshape(-1))
    mn, mx = float(mn_t), float(mx_t)
    zero_fraction = (count - int(torch.count_nonzero(t))) / count
    f = t.float().reshape(-1)
    if math.isfinite(mn) and math.isfinite(mx):
        # float16/bfloat16 -> float32 is exact; float64 may round.
        data_lo, data_hi = (float(f.min()), float(f.max())) if t.dtype == torch.float64 else (mn, mx)
    else:  # NaN or inf: histogram the finite values only
        f = f[torch.isfinite(f)]
        data_lo, data_hi = (float(f.min()), float(f.max())) if f.numel() else (0.0, 0.0)
    a, b = (lo, hi) if lo < hi else (data_lo, data_hi)
    if a == b:
        a, b = a - 1.0, b + 1.0
    counts = torch.histc(f, bins=bins, min=a, max=b) if f.numel() else torch.zeros(bins)
    return Stats(
        mean=mean,
        std=std,
        min=mn,
        max=mx,
        l2_norm=l2,
        zero_fraction=zero_fraction,
        hist_edges=np.linspace(a, b, bins + 1),
        hist_counts=counts.cpu().to(torch.int64).numpy(),
    )


def parameter_layers(model: nn.Module) -> list[str]:
    """Every module with parameters of its own, in module order."""
    return [n for n, m in model.named_modules() if n and any(True for _ in m.parameters(recurse=False))]


def _selected(model: nn.Module, layers: Sequence[str]) -> list[tuple[str, nn.Module, list[tuple[str, nn.Parameter]]]]:
    if not layers:
        modules = dict(model.named_modules())
        return [(n, modules[n], list(modules[n].named_parameters(recurse=False))) for n in parameter_layers(model)]
    chosen = []
    for n in dict.fromkeys(layers):
        m = find_layer(model, n)
        params = list(m.named_parameters())
        if not params:
            raise InvalidArgument(
                f"layer {n!r} ({type(m).__name__}) has no parameters{closest(n, parameter_layers(model))}"
            )
        chosen.append((n, m, params))
    return chosen


def _score(logits: torch.Tensor, target: int | None, labels: Sequence[int] | None) -> torch.Tensor:
    batch, classes = logits.shape[0], logits.shape[-1]
    if labels is not None:
        if len(labels) != batch:
            raise InvalidArgument(f"{len(labels)} labels for {batch} images: give one label per image")
        bad = [(i, int(l)) for i, l in enumerate(labels) if not 0 <= int(l) < classes]
        if bad:
            raise InvalidArgument(f"image {bad[0][0]}: label {bad[0][1]} is out of range 0..{classes - 1}")
        return F.cross_entropy(logits, torch.as_tensor(list(labels), dtype=torch.long, device=logits.device))
    if target is not None:
        if not 0 <= target < classes:
            raise InvalidArgument(f"target class {target} is out of range 0..{classes - 1}")
        idx = torch.full((batch,), int(target), dtype=torch.long, device=logits.device)
    else:
        idx = logits.detach().argmax(dim=-1)
    return logits.gather(-1, idx[:, None]).mean()


def _stats_size(n_params: int, bins: int, with_grad: bool) -> int:
    per_stats = 80 + 9 * (bins + 1) + 6 * bins
    return n_params * (96 + per_stats * (2 if with_grad else 1))


def layer_stats(
    model: nn.Module,
    layers: Sequence[str] = (),
    *,
    bins: int = DEFAULT_BINS,
    hist_range: tuple[float, float] = (0.0, 0.0),
    x: torch.Tensor | None = None,
    target: int | None = None,
    labels: Sequence[int] | None = None,
    max_bytes: int | None = None,
) -> LayerStatsResult:
    """Weight statistics per parameter of each layer (default: every layer with
    parameters of its own); with images `x`, also gradient statistics from one
    backward pass (see the module doc for what is differentiated and what the
    model is spared)."""
    bins = bins or DEFAULT_BINS
    if not 0 < bins <= MAX_BINS:
        raise InvalidArgument(f"bins must be in 1..{MAX_BINS}; got {bins}")
    lo, hi = float(hist_range[0]), float(hist_range[1])
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise InvalidArgument(f"histogram range must be finite with min <= max; got [{lo}, {hi}]",
                              field="hist_min" if not math.isfinite(lo) or lo > hi else "hist_max")
    # Histograms bin float32 values: the bounds must be float32 numbers, apart once rounded to float32.
    if lo < hi and max(abs(lo), abs(hi)) > FLOAT32_MAX:
        raise InvalidArgument(f"histogram range [{lo}, {hi}] is outside float32 (|bound| <= {FLOAT32_MAX:.4g}); "
                              f"leave hist_min = hist_max for the data's own range", field="hist_max",
                              metadata={"limit": f"{FLOAT32_MAX:.6g}"})
    if lo < hi and not float(np.float32(lo)) < float(np.float32(hi)):
        raise InvalidArgument(f"histogram range [{lo}, {hi}] is empty in float32; widen it, or leave "
                              f"hist_min = hist_max for the data's own range", field="hist_max")
    if x is None and (labels or target is not None):
        raise InvalidArgument("a target or labels need images to differentiate")
    if labels and target is not None:
        raise InvalidArgument("give either a target class or true labels, not both")
    chosen = _selected(model, layers)
    n_params = sum(len(p) for _, _, p in chosen)
    _check_size(
        _stats_size(n_params, bins, x is not None),
        max_bytes,
        "layer statistics answer",
        f"ask for fewer layers ({n_params} parameter tensors now) or fewer bins",
    )

    grads: dict[int, torch.Tensor] = {}
    loss_value = None
    diff: list[nn.Parameter] = []
    if x is not None:
        x = _as_input(model, x)
        seen = set()
        for _, _, params in chosen:
            for _, p in params:
                if p.requires_grad and id(p) not in seen:
                    seen.add(id(p))
                    diff.append(p)
        with torch.inference_mode(False), torch.enable_grad():
            with torch_thread.yielding(model):  # check points at every block of the forward pass
                logits = _first_tensor(_run(model, x)).float()
            if logits.dim() != 2:
                raise FailedPrecondition(f"the model's output has shape {tuple(logits.shape)}, not (N, classes)")
            loss = _score(logits, target, list(labels) if labels else None)
            loss_value = float(loss.detach())
            if not math.isfinite(loss_value):
                raise FailedPrecondition(
                    f"the model produced non-finite values (the differentiated {'loss' if labels else 'logit'} is "
                    f"{loss_value}): its weights or precision cannot represent this input; check the checkpoint, "
                    f"or load it as float32", reason="NON_FINITE")
            if diff and loss.requires_grad:
                got = torch.autograd.grad(loss, diff, allow_unused=True)
                grads = {id(p): g for p, g in zip(diff, got) if g is not None}
            del logits, loss

    result: list[LayerStats] = []
    with torch.no_grad():
        for name, module, params in chosen:
            torch_thread.checkpoint()  # histograms of large layers add up: stop if the caller has gone
            pstats = []
            sq = 0.0
            has_grad = False
            for pname, p in params:
                g = grads.get(id(p))
                gstats = tensor_stats(g, bins, (lo, hi)) if g is not None else None
                if gstats is not None:
                    has_grad = True
                    sq += gstats.l2_norm**2
                pstats.append(
                    ParameterStats(
                        name=pname,
                        shape=tuple(int(s) for s in p.shape),
                        count=p.numel(),
                        trainable=bool(p.requires_grad),
                        value=tensor_stats(p, bins, (lo, hi)),
                        grad=gstats,
                    )
                )
            result.append(LayerStats(name, type(module).__name__, pstats, math.sqrt(sq), 0.0, has_grad))
    grads.clear()

    # Gradient-norm ratio to the next layer towards the output (module order).
    order = {n: i for i, (n, _) in enumerate(model.named_modules())}
    ranked = sorted((ls for ls in result if ls.has_grad), key=lambda ls: order[ls.layer])
    for i, ls in enumerate(ranked):
        nxt = next((o for o in ranked[i + 1 :] if o.grad_norm > 0 and order[o.layer] > order[ls.layer]), None)
        if nxt is not None:
            ls.grad_norm_ratio = ls.grad_norm / nxt.grad_norm
    return LayerStatsResult(result, loss_value, len(diff))
