"""Messages <-> tensors and images, in one place.

Tensors travel as {dtype, shape, raw little-endian bytes}. Images arrive
encoded or as tensors and leave here as one preprocessed float32 CPU batch.
"""
from __future__ import annotations

import math
import os
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Sequence

import numpy as np
import torch

from netscope.v1 import inspector_pb2 as pb

from ..imaging import device_decode
from .. import imaging
from ..explain import faithfulness, rendering
from ..models import transfer
from ..errors import InvalidArgument, ResourceExhausted, closest, closest_metadata, shown
from ..imaging import Preprocessing
from ..inspection import DEFAULT_MAX_TILES, GridSpec

_NUMPY = {
    pb.FLOAT32: np.dtype("<f4"),
    pb.FLOAT16: np.dtype("<f2"),
    pb.FLOAT64: np.dtype("<f8"),
    pb.UINT8: np.dtype("u1"),
    pb.INT8: np.dtype("i1"),
    pb.INT16: np.dtype("<i2"),
    pb.INT32: np.dtype("<i4"),
    pb.INT64: np.dtype("<i8"),
    pb.BOOL: np.dtype("?"),
}
_PROTO = {d.name: k for k, d in _NUMPY.items()}

# cv2 releases the GIL: a small shared pool decodes and preprocesses a
# request's images in parallel.
DEFAULT_DECODE_THREADS = max(2, min(8, os.cpu_count() or 2))


def decode_pool(threads: int) -> ThreadPoolExecutor | None:
    """The pool images_to_batch decodes in; None (serial, in the calling
    thread) for 0 or 1 threads."""
    return ThreadPoolExecutor(max_workers=threads, thread_name_prefix="decode") if threads > 1 else None


def tensor_to_proto(t) -> pb.Tensor:
    """A torch tensor or numpy array -> Tensor message (bfloat16 stays bfloat16)."""
    if isinstance(t, torch.Tensor):
        t = t.detach().cpu()
        if t.dtype == torch.bfloat16:
            raw = t.contiguous().view(torch.int16).numpy().astype("<i2").tobytes()
            return pb.Tensor(dtype=pb.BFLOAT16, shape=list(t.shape), data=raw)
        t = t.numpy()
    arr = np.asarray(t)
    if arr.dtype.name not in _PROTO:
        arr = arr.astype(np.float32)
    code = _PROTO[arr.dtype.name]
    return pb.Tensor(dtype=code, shape=list(arr.shape), data=np.ascontiguousarray(arr, dtype=_NUMPY[code]).tobytes())


# A tensor may have at most this many dimensions (images use 2 or 3).
MAX_TENSOR_DIMS = 8


def proto_to_numpy(msg: pb.Tensor, what: str = "tensor", field: str = "") -> np.ndarray:
    """Tensor message -> numpy array (a read-only view of the bytes; bfloat16
    becomes float32), of msg.shape and msg.dtype.

    The shape is checked before anything is allocated: at most
    MAX_TENSOR_DIMS dimensions, each at least 1, and an element count
    (computed exactly, never overflowing) that matches the bytes sent.
    Raises InvalidArgument naming `what` (and `field`, for the details)."""
    field = field or what
    shape = tuple(int(s) for s in msg.shape)
    if len(shape) > MAX_TENSOR_DIMS:
        raise InvalidArgument(f"{what}: shape {_shown_shape(shape)} has {len(shape)} dimensions; at most "
                              f"{MAX_TENSOR_DIMS} are accepted", field=field, metadata={"limit": str(MAX_TENSOR_DIMS)})
    if any(s < 1 for s in shape):
        raise InvalidArgument(f"{what}: shape {_shown_shape(shape)} has a dimension below 1; every dimension must be "
                              "at least 1 (empty tensors carry no image)", field=field)
    if msg.dtype == pb.BFLOAT16:
        _check_length(msg, math.prod(shape) * 2, shape, what, field)
        raw = torch.frombuffer(bytearray(msg.data), dtype=torch.int16)
        return raw.view(torch.bfloat16).float().reshape(shape).numpy()
    if msg.dtype not in _NUMPY:
        names = ", ".join(pb.DType.Name(k) for k in [*_NUMPY, pb.BFLOAT16])
        raise InvalidArgument(f"{what}: unsupported dtype {pb.DType.Name(msg.dtype) if msg.dtype in pb.DType.values() else msg.dtype}; use one of {names}",
                              field=field)
    dt = _NUMPY[msg.dtype]
    _check_length(msg, math.prod(shape) * dt.itemsize, shape, what, field)
    return np.frombuffer(msg.data, dtype=dt).reshape(shape)


def _shown_shape(shape) -> str:
    """A client's shape as a message may quote it (a 10,000-dim shape is cut)."""
    text = str(list(shape))
    return text if len(text) <= 80 else text[:80] + f"... ({len(shape)} dims)]"


def _check_length(msg: pb.Tensor, expected: int, shape, what: str, field: str) -> None:
    if len(msg.data) != expected:
        raise InvalidArgument(
            f"{what}: {len(msg.data)} bytes of data do not match shape {_shown_shape(shape)} of "
            f"{pb.DType.Name(msg.dtype)} ({expected} bytes); send shape and bytes that agree",
            field=field, metadata={"bytes": str(len(msg.data)), "expected_bytes": str(expected)})


def _one_image(index: int, image: pb.Image, recipe: Preprocessing, max_pixels: int,
               min_size: int = 1) -> torch.Tensor:
    field = f"images[{index}]"
    kind = image.WhichOneof("source")
    if kind == "encoded":
        return imaging.preprocess(imaging.decode(image.encoded, max_pixels=max_pixels, index=index), recipe)
    if kind != "tensor":
        raise InvalidArgument(f"image {index}: neither encoded bytes nor a tensor", field=field)
    arr = proto_to_numpy(image.tensor, f"image {index}", field)
    if arr.dtype == np.uint8:
        if arr.ndim in (2, 3):  # before as_rgb copies the pixels
            imaging.check_pixels(arr.shape[0], arr.shape[1], max_pixels, index)
        rgb = imaging.as_rgb(arr, index)
        return imaging.preprocess(rgb, recipe)
    if arr.dtype.kind != "f":
        raise InvalidArgument(f"image {index}: tensor images are uint8 pixels (H, W, 3) or float (C, H, W); got {arr.dtype}",
                              field=field)
    c, h, w = recipe.input_size
    if arr.ndim != 3 or arr.shape[0] != c:
        raise InvalidArgument(f"image {index}: a float tensor must be preprocessed (C, H, W) with C={c}; got shape {_shown_shape(arr.shape)}",
                              field=field)
    check_float_size(arr.shape[1], arr.shape[2], recipe, max_pixels, min_size, index)
    t = torch.from_numpy(arr.astype(np.float32, copy=True))
    if not torch.isfinite(t).all():
        raise InvalidArgument(f"image {index}: tensor holds NaN or infinity", field=field)
    return t


def check_float_size(height: int, width: int, recipe: Preprocessing, max_pixels: int, min_size: int,
                     index: int) -> None:
    """A preprocessed (C, H, W) float image the model can run on: H and W at
    least `min_size` (the smallest input the model runs on, probed at load),
    H x W at most imaging.FLOAT_IMAGE_FACTOR times the model input and max_pixels.
    Raises InvalidArgument naming the size that would work."""
    field = f"images[{index}]"
    ch, cw = recipe.crop
    if min(height, width) < min_size:
        raise InvalidArgument(
            f"image {index}: a float tensor of {height}x{width} is smaller than this model runs on; H and W must be "
            f"at least {min_size} (its input is {ch}x{cw})", reason="IMAGE_TOO_SMALL", field=field,
            metadata={"min_size": str(min_size)})
    limit = min(max_pixels, imaging.FLOAT_IMAGE_FACTOR * ch * cw)
    if height * width > limit:
        raise InvalidArgument(
            f"image {index}: a float tensor of {height}x{width} = {height * width} pixels is over the limit of {limit} "
            f"for this model ({imaging.FLOAT_IMAGE_FACTOR}x its {ch}x{cw} input, at most the server's max_pixels); "
            "resize it, or send the encoded image", reason="IMAGE_TOO_LARGE", field=field,
            metadata={"limit": str(limit)})


def images_to_batch(images: Sequence[pb.Image], recipe: Preprocessing, *, max_pixels: int,
                    max_images: int, pool: Executor | None = None, device: torch.device | None = None,
                    pin: bool = False, min_size: int = 1) -> torch.Tensor:
    """Decode and preprocess a request's images into one (N, C, H, W) float32 tensor.

    max_images: the most images one request may carry (ResourceExhausted,
    reason TOO_MANY_IMAGES, above it; InvalidArgument for none). pool:
    decode the images in it (else one after the other, here). device:
    decode the JPEGs there with torchvision (device_decode.py) and return the
    batch there; the other images go the OpenCV way and join them in one copy.
    pin: assemble the host batch in pinned memory (CUDA models). min_size:
    the smallest H and W a preprocessed float image may have (the model's
    LoadedModel.min_input_size). Errors name the offending image's index."""
    n = len(images)
    if n == 0:
        raise InvalidArgument("no images in the request: send at least one image", field="images")
    if n > max_images:
        raise ResourceExhausted(f"{n} images in one request is over the server's limit of {max_images}; split them "
                                f"into requests of at most {max_images}", reason="TOO_MANY_IMAGES", field="images",
                                metadata={"limit": str(max_images)})
    on_device: dict[int, torch.Tensor] = {}
    if device is not None:
        jpegs = {i: im.encoded for i, im in enumerate(images) if im.WhichOneof("source") == "encoded"}
        on_device = device_decode.decode_and_preprocess(jpegs, recipe, device, max_pixels)
    rest = [i for i in range(n) if i not in on_device]
    if pool is None or len(rest) < 2:
        host = [_one_image(i, images[i], recipe, max_pixels, min_size) for i in rest]
    else:
        host = list(pool.map(lambda i: _one_image(i, images[i], recipe, max_pixels, min_size), rest))
    shapes = {tuple(t.shape) for t in host} | {tuple(t.shape) for t in on_device.values()}
    if len(shapes) > 1:
        raise InvalidArgument(f"images of one request must preprocess to one shape; got {sorted(shapes)}")
    if not on_device:
        return transfer.stack(host, pin=pin)
    if not host:
        return torch.stack([on_device[i] for i in range(n)])
    moved = iter(transfer.stack(host, pin=pin).to(device, non_blocking=pin).unbind(0))
    return torch.stack([on_device[i] if i in on_device else next(moved) for i in range(n)])


# ---------------------------------------------------------------- inspection

def grid_spec(options: pb.GridOptions) -> GridSpec:
    """GridOptions -> inspection.GridSpec (zero fields mean the defaults)."""
    return GridSpec(colormap=options.colormap or "gray", upsample_to_input=options.upsample_to_input,
                    max_tiles=options.max_tiles or DEFAULT_MAX_TILES, nrow=options.nrow,
                    padding=options.padding if options.padding else 2, tile_size=options.tile_size)


KERNEL_MODES = {pb.KERNEL_MODE_AUTO: "auto", pb.KERNEL_MODE_RGB: "rgb", pb.KERNEL_MODE_PER_CHANNEL: "per_channel",
                pb.KERNEL_MODE_MEAN_INPUT: "mean_input"}
_KERNEL_MODE_CODES = {v: k for k, v in KERNEL_MODES.items()}


def kernel_mode(code: int) -> str:
    if code not in KERNEL_MODES:
        raise InvalidArgument(f"unknown kernel mode {code}; use one of {', '.join(pb.KernelMode.keys())}")
    return KERNEL_MODES[code]


def kernel_mode_code(mode: str) -> int:
    return _KERNEL_MODE_CODES[mode]


def target_class(target: pb.Target, class_names: Sequence[str]) -> int | None:
    """One class for every image: an index, a label, or None (each image's top-1)."""
    if target.top_k > 1:
        raise InvalidArgument(f"target.top_k={target.top_k}: this method takes one class per image (an index, a label, or top-1)")
    kind = target.WhichOneof("kind")
    if kind == "index":
        if not 0 <= target.index < len(class_names):
            raise InvalidArgument(f"target class {target.index} is out of range 0..{len(class_names) - 1}")
        return int(target.index)
    if kind == "label":
        from ..explain.targets import class_index

        return class_index(target.label, class_names)  # as Explain matches it: exact, else case-insensitive, never ambiguous
    return None


def layer_activation_to_proto(a) -> pb.LayerActivation:
    msg = pb.LayerActivation(layer=a.layer, shape=list(a.shape), channels=a.channels, channel_axis=max(a.channel_axis, 0),
                             channel_mean=a.channel_mean.tolist(), channel_max=a.channel_max.tolist(), grid_png=a.grid_png)
    if a.activation is not None:
        msg.activation.CopyFrom(tensor_to_proto(a.activation))
    return msg


def stats_to_proto(s) -> pb.Stats:
    return pb.Stats(mean=s.mean, std=s.std, min=s.min, max=s.max, l2_norm=s.l2_norm, zero_fraction=s.zero_fraction,
                    histogram=pb.Histogram(edges=s.hist_edges.tolist(), counts=s.hist_counts.tolist()))


def layer_stats_to_proto(ls) -> pb.LayerStats:
    msg = pb.LayerStats(layer=ls.layer, type=ls.type, grad_norm=ls.grad_norm, grad_norm_ratio=ls.grad_norm_ratio)
    for p in ls.parameters:
        ps = msg.parameters.add(name=p.name, shape=list(p.shape), count=p.count, trainable=p.trainable)
        ps.value.CopyFrom(stats_to_proto(p.value))
        if p.grad is not None:
            ps.grad.CopyFrom(stats_to_proto(p.grad))
    return msg


# ---------------------------------------------------------------- explanations

def explain_target(target: pb.Target):
    """Target message -> targets.Target (unset: top-1)."""
    from ..explain.targets import Target

    kind = target.WhichOneof("kind")
    if kind == "index":
        return Target(index=int(target.index))
    if kind == "label":
        return Target(label=target.label)
    return Target(top_k=int(target.top_k)) if target.top_k > 0 else None


def explain_targets(request: pb.ExplainRequest):
    """An ExplainRequest's target(s) -> what explain() takes: one
    targets.Target (or None) for every image, or a list of one per image
    from `targets`. Both set: InvalidArgument. (The count is checked
    against the images by targets.Targets, naming both.)"""
    if not request.targets:
        return explain_target(request.target)
    if _target_set(request.target):
        raise InvalidArgument("give `target` (one class, or top_k, for every image) or `targets` (one per image), "
                              "not both", reason="TARGETS_EXCLUSIVE", field="targets")
    return [explain_target(t) for t in request.targets]


def _target_set(target: pb.Target) -> bool:
    return target.WhichOneof("kind") is not None or target.top_k != 0


def per_image_target_messages(request: pb.ExplainRequest) -> list[pb.Target] | None:
    """The request's targets as one message per image, when it asks for one
    class per image (`targets`, or a `target` index, label or top-1, repeated
    for each image); None for top_k > 1. Requests of this form that are equal
    but for their images and targets share a device batch, each image keeping
    its own target (stream.spec_key, explain_batching)."""
    if request.targets:
        return list(request.targets)
    if request.target.WhichOneof("kind") is None and request.target.top_k > 1:
        return None
    return [request.target] * len(request.images)


def explain_options(options: pb.ExplainOptions):
    """ExplainOptions message -> explain.Options, from its typed fields (each
    option's OptionSpec.proto_field; unset means the method's default) and its
    `parameters` map (any option by name). Counts set to 0 reach explain() and
    are refused there. InvalidArgument: an unknown name in the map (with the
    closest names), a map entry with no value, or an option set both in its
    typed field and in the map."""
    from ..explain import methods
    from ..explain import Options

    values = {}
    for spec in methods.options().values():
        name = spec.proto_field
        if name is None:
            continue
        fd = options.DESCRIPTOR.fields_by_name[name]
        if fd.has_presence:
            if options.HasField(name):
                values[spec.name] = getattr(options, name)
        elif getattr(options, name):  # proto3 scalars: "" and false are unset
            values[spec.name] = getattr(options, name)
    for name, value in options.parameters.items():
        spec = methods.option(name)
        where = f"options.parameters[{name}]"
        kind = value.WhichOneof("kind")
        if kind is None:
            raise InvalidArgument(f"option {name} in options.parameters has no value; set one of bool_value, "
                                  f"int_value, double_value, string_value", field=where)
        if spec.name in values:
            raise InvalidArgument(f"{name} is set twice, in options.{spec.proto_field} and in options.parameters; "
                                  f"set it once", reason="OPTION_SET_TWICE", field=where)
        v = getattr(value, kind)
        values[spec.name] = float(v) if spec.type == "float" and kind == "int_value" else v
    return Options(**values)


def check_render(request: pb.ExplainRequest) -> None:
    """Refuse bad rendering options before any work (not after the maps)."""
    rendering.resolve(request.render, request.method, request.options.noise_tunnel)


def _png_bytes(h: int, w: int) -> int:
    raw = h * (w * 3 + 1)  # an RGB PNG that does not compress: raw rows, a filter byte each, deflate framing
    return raw + raw // 100 + 1024


def faithfulness_metrics(request: pb.ExplainRequest) -> tuple[str, ...]:
    """The faithfulness metrics a request asks to score (options.metrics; all
    of them for options.faithfulness alone; none: ()). InvalidArgument
    (METRIC_NOT_FOUND) for an unknown name."""
    if not request.options.metrics and not request.options.faithfulness:
        return ()
    return faithfulness.chosen(request.options.metrics)


def answer_bytes(request: pb.ExplainRequest, n_images: int, k: int, heat_pixels: int, input_hw) -> int:
    """An upper estimate of an ExplainResponse's size: per map, the map at its
    own resolution and at the input's (float32), the PNGs asked for (as if
    they did not compress) and the scores."""
    h, w = input_hw
    per_map = 4 * heat_pixels + 4 * h * w + 128 + 64
    shown = imaging.display_factor(h, w)  # small inputs' PNGs are enlarged for display
    if request.render_overlay:
        per_map += _png_bytes(h * shown, w * shown)
    if request.render_heatmap:
        per_map += _png_bytes(h * shown, w * shown)
    if faithfulness_metrics(request):
        per_map += 64
    return n_images * k * per_map + 1024


def check_answer_size(request: pb.ExplainRequest, n_images: int, k: int, heat_pixels: int, input_hw,
                      max_bytes: int) -> None:
    """RESOURCE_EXHAUSTED, before any work, when the answer would not fit the message limit."""
    size = answer_bytes(request, n_images, k, heat_pixels, input_hw)
    if not max_bytes or size <= max_bytes:
        return
    hints = []
    if k > 1:
        hints.append(f"fewer classes (top_k {k})")
    if request.render_overlay or request.render_heatmap:
        hints.append("no overlay/heatmap PNGs (render_overlay, render_heatmap)")
    if n_images > 1:
        hints.append(f"fewer images ({n_images} now)")
    raise ResourceExhausted(
        f"the answer would be about {size / 2**20:.1f} MiB ({n_images} images x {k} classes), over the message "
        f"limit of {max_bytes / 2**20:.1f} MiB; ask for {' or '.join(hints) or 'a smaller input'}",
        reason="ANSWER_TOO_LARGE", field="target.top_k" if k > 1 else "images",
        metadata={"limit_bytes": str(max_bytes), "estimate_bytes": str(size)})


def class_map_to_proto(cm, x: torch.Tensor, recipe: Preprocessing, request: pb.ExplainRequest,
                       scores=None) -> pb.ClassExplanation:
    """One image's map for one class, with the pictures and metrics asked for.
    x is that image as the model saw it (C, H, W)."""
    msg = pb.ClassExplanation(target=cm.target, label=cm.label, score=cm.score, probability=cm.probability)
    msg.heatmap.CopyFrom(tensor_to_proto(cm.heatmap))
    msg.heatmap_upsampled.CopyFrom(tensor_to_proto(cm.upsampled))
    if request.render_overlay or request.render_heatmap:
        drawn = rendering.resolve(request.render, request.method, request.options.noise_tunnel)
        if request.render_overlay:
            msg.overlay_png = drawn.overlay_png(imaging.denormalize(x, recipe), cm.upsampled.numpy())
        if request.render_heatmap:
            msg.heatmap_png = drawn.heatmap_png(cm.upsampled.numpy())
    if scores is not None:
        msg.faithfulness.CopyFrom(pb.Faithfulness(**{k: v for k, v in vars(scores).items() if v is not None}))
    return msg


def server_info_to_proto(info) -> pb.ServerInfo:
    """server_info.ServerInfo -> the GetServerInfo answer."""
    from google.protobuf import struct_pb2

    def value(v) -> struct_pb2.Value:
        out = struct_pb2.Value()
        if v is None:
            out.null_value = struct_pb2.NULL_VALUE
        elif isinstance(v, bool):
            out.bool_value = v
        elif isinstance(v, (int, float)):
            out.number_value = float(v)
        else:
            out.string_value = str(v)
        return out

    b, lim = info.build, info.limits
    return pb.ServerInfo(
        version=info.version, default_method=info.default_method,
        build=pb.BuildInfo(git_commit=b.git_commit, python=b.python, torch=b.torch, torchvision=b.torchvision,
                           captum=b.captum, grpc=b.grpc, cuda=b.cuda),
        devices=[pb.DeviceInfo(name=d.name, description=d.description, total_memory_bytes=d.total_memory_bytes,
                               capability=list(d.capability)) for d in info.devices],
        dtypes=info.dtypes, colormaps=info.colormaps,
        limits=pb.ServerLimits(max_message_bytes=lim.max_message_bytes, max_pixels=lim.max_pixels,
                               max_images=lim.max_images, stream_batch=lim.stream_batch, explain=lim.explain),
        methods=[pb.MethodInfo(name=m.name, family=m.family, description=m.description, source=m.source,
                               needs=m.needs, cost=m.cost, draws_noise=m.draws_noise, may_batch=m.may_batch,
                               signed=m.signed, options=m.options) for m in info.methods],
        options=[pb.OptionSchema(name=o.name, type=o.type, default=value(o.default), minimum=o.minimum,
                                 ceiling=o.ceiling or "", ceiling_value=o.ceiling_value, choices=o.choices,
                                 description=o.description, methods=o.methods, minimum_exclusive=o.minimum_exclusive,
                                 within_input=o.within_input, requires=o.requires) for o in info.options],
        models=info.models,
    )
