"""Hypothesis strategies for hostile netscope.v1 requests.

Every strategy mixes well-formed values (so requests reach deep into the
server) with the hostile kinds of issue 12: random bytes as images,
truncated and bit-flipped images, header bombs (PNG/JPEG/BMP/PPM declaring
30000x30000) and 1xN strips, tensors whose shape lies (overflowing, negative,
zero, many dims, disagreeing with the bytes), NaN/inf tensors, extreme
option values, huge and unicode strings, unknown enum values.
"""
from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
from hypothesis import strategies as st

from netscope.v1 import inspector_pb2 as pb

INT32 = (-(2**31), -1, 0, 1, 2, 3, 7, 64, 1000, 2**16, 2**31 - 1)
INT64 = INT32 + (2**32, 2**62, 2**63 - 1, -(2**63))
FLOATS = (0.0, -0.0, -1.0, 1e-30, 0.5, 1.0, 2.0, 1e30, float("nan"), float("inf"), float("-inf"), 3.4e38)

# Strings a client might send: empty, control characters, paths, format
# specifiers, right-to-left marks, astral characters, and huge ones.
NASTY_STRINGS = ("", " ", "\x00", "\n\r\t", "%s%n{0}", "../../etc/passwd", "/etc/passwd", "C:\\x", "~root",
                 "\u202e\u0645\u0631\u062d\u0628\u0627", "\U0001f600" * 3, "é" * 300, "a" * 100_000, "\u00ff" * 50_000,
                 "\ud7ff", "layer4.1.conv2", "features.", ".", "..", "*", "model", "None", "null", "-1")


def strings(known=()) -> st.SearchStrategy[str]:
    """Known-good names (weighted), nasty fixed strings, and generated text."""
    parts = [st.sampled_from(NASTY_STRINGS), st.text(max_size=40)]
    if known:
        parts.insert(0, st.sampled_from(sorted(known)))
        parts.insert(0, st.sampled_from(sorted(known)))
    return st.one_of(*parts)


def int32s() -> st.SearchStrategy[int]:
    return st.one_of(st.sampled_from(INT32), st.integers(-(2**31), 2**31 - 1), st.integers(-3, 40))


def floats() -> st.SearchStrategy[float]:
    return st.one_of(st.sampled_from(FLOATS), st.floats(width=32), st.floats(0, 1))


def doubles() -> st.SearchStrategy[float]:
    return st.one_of(st.sampled_from(FLOATS + (1e300, -1e300, 5e-324)), st.floats(), st.floats(-10, 10))


# ---------------------------------------------------------------- images


def _encode(pixels: np.ndarray, ext: str) -> bytes:
    ok, buf = cv2.imencode(ext, pixels)
    assert ok, ext
    return buf.tobytes()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_header_bomb(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR declaring width x height RGB, then a
    few rows of real (zero) data and IEND: tens of bytes that a decoder
    sizing its buffer from the header would take gigabytes for."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (1 + 3 * min(width, 64)) * 4)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", rows) + _png_chunk(b"IEND", b"")


def jpeg_header_bomb(width: int, height: int) -> bytes:
    """A small real JPEG whose SOF marker is patched to declare width x height
    (the 629-byte kind of issue 12: libjpeg fills the missing rows with grey)."""
    data = bytearray(_encode(np.full((16, 16, 3), 128, np.uint8), ".jpg"))
    for marker in (b"\xff\xc0", b"\xff\xc2"):
        i = data.find(marker)
        if i >= 0:
            data[i + 5:i + 9] = struct.pack(">HH", min(height, 65535), min(width, 65535))  # JPEG's own ceiling
            return bytes(data)
    raise AssertionError("no SOF marker")


def bmp_header_bomb(width: int, height: int) -> bytes:
    """A BMP header declaring width x height at 24 bits, with 16 bytes of data."""
    payload = b"\x00" * 16
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    head = b"BM" + struct.pack("<IHHI", 14 + len(info) + len(payload), 0, 0, 14 + len(info))
    return head + info + payload


def ppm_header_bomb(width: int, height: int) -> bytes:
    return f"P6\n{width} {height}\n255\n".encode() + b"\x00" * 48


BOMBS = (png_header_bomb, jpeg_header_bomb, bmp_header_bomb, ppm_header_bomb)
BOMB_SIZES = ((30000, 30000), (65535, 65535), (1, 30000 * 30000 // 65535), (100000, 1), (2**31 - 1, 1))


@st.composite
def valid_pictures(draw, max_side: int = 48) -> bytes:
    """A real small image in PNG, JPEG, BMP or WebP: grey, RGB or RGBA, any
    size from 1x1 (zero-size cannot be encoded)."""
    h, w = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    channels = draw(st.sampled_from((1, 3, 4)))
    seed = draw(st.integers(0, 2**16))
    pixels = np.random.default_rng(seed).integers(0, 256, (h, w, channels), dtype=np.uint8)
    if channels == 1:
        pixels = pixels[:, :, 0]
    ext = draw(st.sampled_from((".png", ".jpg", ".bmp", ".webp")))
    if ext == ".jpg" and channels == 4:
        pixels = pixels[:, :, :3]
    return _encode(pixels, ext)


@st.composite
def strips(draw) -> bytes:
    """1xN and Nx1 images (tiny files, within any sane pixel limit): the aspect ratio kind of issue 12."""
    n = draw(st.sampled_from((2000, 8000, 30000, 100000)))
    tall = draw(st.booleans())
    pixels = np.full((n, 1, 3) if tall else (1, n, 3), 200, np.uint8)
    # JPEG cannot hold a side over 65,500 pixels.
    return _encode(pixels, draw(st.sampled_from((".png", ".png", ".jpg") if n < 65500 else (".png",))))


@st.composite
def mangled(draw) -> bytes:
    """A real image truncated, or with bytes flipped."""
    data = bytearray(draw(valid_pictures()))
    if draw(st.booleans()):
        return bytes(data[:draw(st.integers(0, max(0, len(data) - 1)))])
    for _ in range(draw(st.integers(1, 8))):
        i = draw(st.integers(0, len(data) - 1))
        data[i] ^= draw(st.integers(1, 255))
    return bytes(data)


@st.composite
def bombs(draw) -> bytes:
    w, h = draw(st.sampled_from(BOMB_SIZES))
    return draw(st.sampled_from(BOMBS))(w, h)


def encoded_images() -> st.SearchStrategy[bytes]:
    return st.one_of(valid_pictures(), valid_pictures(), st.binary(max_size=256), mangled(), bombs(), strips(),
                     st.just(b""))


DTYPES = [v.number for v in pb.DType.DESCRIPTOR.values]
NUMPY = {pb.FLOAT32: "<f4", pb.FLOAT16: "<f2", pb.FLOAT64: "<f8", pb.UINT8: "u1", pb.INT8: "i1", pb.INT16: "<i2",
         pb.INT32: "<i4", pb.INT64: "<i8", pb.BOOL: "?"}


@st.composite
def honest_tensors(draw) -> pb.Tensor:
    """Tensors whose bytes match their shape: uint8 pictures (H, W, 3) / (H, W)
    and float (C, H, W) inputs, some NaN/inf, some too small for the network."""
    if draw(st.booleans()):
        h, w = draw(st.integers(0, 40)), draw(st.integers(0, 40))
        shape = draw(st.sampled_from(((h, w, 3), (h, w), (h, w, 4), (h, w, 1))))
        a = np.random.default_rng(draw(st.integers(0, 99))).integers(0, 256, shape, dtype=np.uint8)
        return pb.Tensor(dtype=pb.UINT8, shape=shape, data=a.tobytes())
    c = draw(st.sampled_from((3, 3, 1, 4, 0)))
    h, w = draw(st.sampled_from((1, 2, 8, 16, 32, 32, 64, 224))), draw(st.sampled_from((1, 8, 32, 32, 224)))
    dtype = draw(st.sampled_from((pb.FLOAT32, pb.FLOAT32, pb.FLOAT16, pb.FLOAT64, pb.BFLOAT16)))
    fill = draw(st.sampled_from(("normal", "nan", "inf", "-inf", "huge", "some_nan")))
    a = np.random.default_rng(draw(st.integers(0, 99))).standard_normal((c, h, w)).astype(np.float32)
    if fill == "nan":
        a[:] = np.nan
    elif fill in ("inf", "-inf"):
        a[:] = float(fill)
    elif fill == "huge":
        a = np.clip(a, -1, 1) * 3e38
    elif fill == "some_nan" and a.size:
        a.flat[draw(st.integers(0, a.size - 1))] = np.nan
    if dtype == pb.BFLOAT16:
        data = (a.view(np.uint32) >> 16).astype("<u2").tobytes()
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            data = a.astype(NUMPY[dtype]).tobytes()
    return pb.Tensor(dtype=dtype, shape=(c, h, w), data=data)


@st.composite
def lying_tensors(draw) -> pb.Tensor:
    """Tensors whose shape overflows, is negative or zero, has many dims, or
    disagrees with the bytes; dtypes include unknown enum values."""
    dims = st.one_of(st.sampled_from(INT64), st.integers(0, 300))
    shape = draw(st.lists(dims, max_size=9))
    dtype = draw(st.one_of(st.sampled_from(DTYPES), st.integers(-5, 2**31 - 1)))
    data = draw(st.one_of(st.binary(max_size=512), st.just(b"\x00" * 3 * 32 * 32 * 4)))
    return pb.Tensor(dtype=dtype, shape=shape, data=data)


def tensors() -> st.SearchStrategy[pb.Tensor]:
    return st.one_of(honest_tensors(), lying_tensors())


def images() -> st.SearchStrategy[pb.Image]:
    return st.one_of(encoded_images().map(lambda b: pb.Image(encoded=b)),
                     tensors().map(lambda t: pb.Image(tensor=t)),
                     st.just(pb.Image()))


def image_lists(max_size: int = 3) -> st.SearchStrategy[list]:
    # Mostly one image; sometimes none, sometimes a few.
    return st.one_of(st.lists(images(), min_size=1, max_size=1), st.lists(images(), max_size=max_size))


# ---------------------------------------------------------------- requests
#
# A request of all-hostile fields is refused at its first check and reaches
# nothing deeper. So each request starts from sane values and draws which
# fields turn hostile: none (a request that should succeed: its answer is
# checked for non-finite values), one to three, or (a quarter of the time)
# all of them.


@st.composite
def mix(draw, fields: dict) -> dict:
    """{name: (sane strategy, hostile strategy)} -> {name: value}."""
    names = sorted(fields)
    how = draw(st.sampled_from(("none", "some", "some", "all")))
    if how == "none":
        hostile = set()
    elif how == "all":
        hostile = set(names)
    else:
        hostile = draw(st.sets(st.sampled_from(names), min_size=1, max_size=min(3, len(names))))
    return {n: draw(fields[n][1] if n in hostile else fields[n][0]) for n in names}


def sane_images(model: str) -> st.SearchStrategy[list]:
    side = 224 if model in ("sq", "mnv3") else 32
    tensor = st.integers(0, 99).map(lambda seed: pb.Image(tensor=pb.Tensor(
        dtype=pb.FLOAT32, shape=[3, side, side],
        data=np.random.default_rng(seed).standard_normal((3, side, side)).astype("<f4").tobytes())))
    picture = valid_pictures().map(lambda b: pb.Image(encoded=b))
    return st.lists(st.one_of(picture, picture, tensor), min_size=1, max_size=2)


@st.composite
def targets(draw, labels=()) -> pb.Target | None:
    kind = draw(st.sampled_from(("none", "index", "label", "top_k", "empty")))
    if kind == "none":
        return None
    if kind == "index":
        return pb.Target(index=draw(int32s()), top_k=draw(st.sampled_from((0, 0, 2, -1))))
    if kind == "label":
        return pb.Target(label=draw(strings(labels)))
    if kind == "top_k":
        return pb.Target(top_k=draw(int32s()))
    return pb.Target()


def sane_targets(labels=()) -> st.SearchStrategy:
    return st.one_of(st.none(), st.integers(0, 9).map(lambda i: pb.Target(index=i)),
                     st.integers(1, 3).map(lambda k: pb.Target(top_k=k)),
                     st.sampled_from(list(labels)[:10] or ["x"]).map(lambda label: pb.Target(label=label)))


@st.composite
def grids(draw) -> pb.GridOptions:
    return pb.GridOptions(render=draw(st.booleans()), colormap=draw(strings(("gray", "viridis", "jet"))),
                          upsample_to_input=draw(st.booleans()), max_tiles=draw(int32s()), nrow=draw(int32s()),
                          padding=draw(int32s()), tile_size=draw(st.one_of(st.sampled_from((0, 1, 8, 64)), int32s())))


def sane_grids() -> st.SearchStrategy:
    return st.builds(pb.GridOptions, render=st.booleans(), colormap=st.sampled_from(("", "gray", "viridis")),
                     max_tiles=st.integers(0, 16), padding=st.integers(0, 3))


def _maybe(strategy):
    """None (field unset) half the time."""
    return st.one_of(st.none(), strategy)


INT_OPTIONS = ("batch_size", "steps", "window", "stride", "nt_samples", "samples", "finer_classes")
FLOAT_OPTIONS = ("nt_stdev", "noise", "fem_k", "finer_alpha", "kpca_gamma")
SANE_INT_OPTION = {"batch_size": (1, 16), "steps": (1, 8), "window": (2, 8), "stride": (1, 8), "nt_samples": (1, 3),
                   "samples": (1, 8), "finer_classes": (1, 3)}


@st.composite
def explain_options(draw, cheap: bool) -> pb.ExplainOptions:
    """Each option unset, sane, or extreme (0, negative, huge, NaN)."""
    o = pb.ExplainOptions()
    for name in INT_OPTIONS:
        v = draw(st.one_of(st.none(), st.none(), st.integers(*SANE_INT_OPTION[name]), int32s()))
        if v is not None:
            setattr(o, name, v)
    for name in FLOAT_OPTIONS:
        v = draw(st.one_of(st.none(), st.none(), st.floats(0.01, 2), floats()))
        if v is not None:
            setattr(o, name, v)
    seed = draw(_maybe(st.one_of(st.sampled_from(INT64), st.integers(0, 99))))
    if seed is not None:
        o.seed = seed
    o.baseline = draw(strings(("zeros", "blur", "noise", "mean", "")))
    o.noise_tunnel = draw(strings(("", "smoothgrad", "smoothgrad_sq", "vargrad")))
    o.kpca_kernel = draw(strings(("sigmoid", "rbf", "poly", "linear", "cosine", "")))
    o.aug_smooth, o.eigen_smooth = draw(st.booleans()), draw(st.booleans())
    o.faithfulness = False if cheap else draw(st.booleans())
    if not cheap:  # the metrics by name: known ones, near misses, any string
        o.metrics.extend(draw(st.lists(strings(METRIC_NAMES), max_size=3)))
    for name, value in draw(st.dictionaries(strings(PARAMETER_NAMES), option_values(), max_size=3)).items():
        o.parameters[name].CopyFrom(value)
    return o


METRIC_NAMES = ("deletion", "insertion", "average_drop", "increase_in_confidence", "road", "Deletion", "roads", "")

# Options by name in ExplainOptions.parameters: the schema's names (typed
# fields set a second way, method-only options such as random_cam's) and others.
PARAMETER_NAMES = INT_OPTIONS + FLOAT_OPTIONS + ("weight_bound", "seed", "baseline", "noise_tunnel", "faithfulness")


def option_values() -> st.SearchStrategy[pb.OptionValue]:
    """An OptionValue of any kind (or none set), sane or extreme."""
    return st.one_of(st.just(pb.OptionValue()), st.booleans().map(lambda b: pb.OptionValue(bool_value=b)),
                     st.one_of(st.integers(0, 8), st.sampled_from(INT64)).map(lambda i: pb.OptionValue(int_value=i)),
                     st.one_of(st.floats(0, 1), doubles()).map(lambda d: pb.OptionValue(double_value=d)),
                     strings().map(lambda t: pb.OptionValue(string_value=t)))


@st.composite
def sane_explain_options(draw, cheap: bool) -> pb.ExplainOptions:
    o = pb.ExplainOptions()
    for name in draw(st.sets(st.sampled_from(INT_OPTIONS), max_size=2)):
        setattr(o, name, draw(st.integers(*SANE_INT_OPTION[name])))
    o.seed = draw(st.integers(0, 9))
    o.faithfulness = False if cheap else draw(st.booleans())
    return o


def model_ids(models: dict) -> st.SearchStrategy[str]:
    """The tiny model most of the time (cheap to run every method on), the
    224-pixel models sometimes, and names that are no model."""
    return st.one_of(st.just("tiny"), st.just("tiny"), st.just("tiny"), st.sampled_from(sorted(models)), strings())


def sane_models(models: dict) -> st.SearchStrategy[str]:
    return st.sampled_from(["tiny"] * 4 + sorted(models))


def _layers(models: dict, model: str) -> st.SearchStrategy[list]:
    known = models.get(model, {}).get("layers", ())
    return st.lists(strings(known), max_size=3)


def _sane_layers(models: dict, model: str, kind: str = "layers") -> st.SearchStrategy[list]:
    known = models.get(model, {}).get(kind) or models.get(model, {}).get("layers") or ["x"]
    return st.lists(st.sampled_from(known), max_size=2, unique=True)


@st.composite
def predict_requests(draw, models: dict) -> pb.PredictRequest:
    model = draw(st.one_of(sane_models(models), sane_models(models), model_ids(models)))
    f = draw(mix({"images": (sane_images(model), image_lists()), "top_k": (st.integers(0, 10), int32s()),
                  "return_probabilities": (st.booleans(), st.booleans())}))
    return pb.PredictRequest(model=model, **f)


@st.composite
def feature_maps_requests(draw, models: dict) -> pb.FeatureMapsRequest:
    model = draw(st.one_of(sane_models(models), sane_models(models), model_ids(models)))
    f = draw(mix({"images": (sane_images(model), image_lists(2)),
                  "layers": (_sane_layers(models, model), _layers(models, model)),
                  "channels": (st.lists(st.integers(0, 15), max_size=3), st.lists(int32s(), max_size=4)),
                  "top_channels": (st.integers(0, 8), int32s()), "omit_tensor": (st.booleans(), st.booleans()),
                  "grid": (sane_grids(), grids())}))
    return pb.FeatureMapsRequest(model=model, **f)


@st.composite
def kernels_requests(draw, models: dict) -> pb.KernelsRequest:
    model = draw(st.one_of(sane_models(models), sane_models(models), model_ids(models)))
    conv = models.get(model, {}).get("convs") or ["x"]
    f = draw(mix({"layer": (st.sampled_from(conv), strings(models.get(model, {}).get("layers", ()))),
                  "mode": (st.integers(0, 3), st.integers(-(2**31), 2**31 - 1)),
                  "grid": (sane_grids(), grids()), "omit_tensor": (st.booleans(), st.booleans())}))
    return pb.KernelsRequest(model=model, **f)


@st.composite
def layer_stats_requests(draw, models: dict) -> pb.LayerStatsRequest:
    model = draw(st.one_of(sane_models(models), sane_models(models), model_ids(models)))
    labels = models.get(model, {}).get("labels", ())
    f = draw(mix({"layers": (_sane_layers(models, model), _layers(models, model)),
                  "bins": (st.integers(0, 30), int32s()),
                  "hist": (st.just((0.0, 0.0)) | st.just((-1.0, 1.0)), st.tuples(doubles(), doubles())),
                  "images": (st.one_of(st.just([]), sane_images(model)), image_lists(2)),
                  "target": (sane_targets(labels), targets(labels)),
                  "labels": (st.just([]) | st.lists(st.integers(0, 9), min_size=1, max_size=1),
                             st.lists(int32s(), max_size=3))}))
    r = pb.LayerStatsRequest(model=model, layers=f["layers"], bins=f["bins"], hist_min=f["hist"][0],
                             hist_max=f["hist"][1], images=f["images"], labels=f["labels"])
    if f["target"] is not None:
        r.target.CopyFrom(f["target"])
    return r


# The methods run on the 224-pixel models in the quick run: each costs about
# one forward and backward there. The rest (perturbation and sampling methods,
# faithfulness) run on the tiny model, where they cost milliseconds.
CHEAP_METHODS = ("grad_cam", "cam", "eigen_cam", "fem", "hires_cam", "layer_cam", "xgrad_cam", "grad_cam_plus_plus",
                 "saliency", "input_x_gradient", "guided_backprop", "deconvolution", "eigen_grad_cam")


@st.composite
def explain_requests(draw, models: dict) -> pb.ExplainRequest:
    model = draw(st.one_of(sane_models(models), sane_models(models), model_ids(models)))
    cheap = model != "tiny"
    methods = CHEAP_METHODS if cheap else models.get("tiny", {}).get("methods", CHEAP_METHODS)
    labels = models.get(model, {}).get("labels", ())
    f = draw(mix({
        "images": (sane_images(model), image_lists(2)),
        "method": (st.sampled_from(methods), strings(methods)),
        "layers": (_sane_layers(models, model, "cam_layers").map(lambda ls: ls[:1]), _layers(models, model)),
        "options": (sane_explain_options(cheap), explain_options(cheap)),
        "target": (sane_targets(labels), targets(labels)),
        "render": (st.builds(pb.RenderOptions, colormap=st.sampled_from(("", "jet", "viridis")),
                             alpha=st.floats(0, 1, width=32)),
                   st.builds(pb.RenderOptions, colormap=strings(("jet", "viridis", "inferno", "gray")),
                             alpha=floats())),
    }))
    r = pb.ExplainRequest(model=model, images=f["images"], method=f["method"], layers=f["layers"],
                          options=f["options"], render_overlay=draw(st.booleans()),
                          render_heatmap=draw(st.booleans()), render=f["render"])
    # One target for all images, or one per image (ExplainRequest.targets):
    # as many as the images, or a count that disagrees, or both fields set.
    how = draw(st.sampled_from(("one", "one", "one", "per_image", "per_image_hostile")))
    if how != "per_image_hostile" and f["target"] is not None:
        r.target.CopyFrom(f["target"])
    if how == "per_image":
        r.targets.extend(draw(st.lists(sane_targets(labels), min_size=len(r.images), max_size=len(r.images))
                              .map(lambda ts: [t or pb.Target() for t in ts])))
    elif how == "per_image_hostile":
        r.targets.extend(draw(st.lists(targets(labels).map(lambda t: t or pb.Target()), max_size=4)))
        if draw(st.booleans()) and f["target"] is not None:
            r.target.CopyFrom(f["target"])
    return r


@st.composite
def load_model_requests(draw, models: dict) -> pb.LoadModelRequest:
    """Sources are small architectures, the store's checkpoints and hostile
    names; `compile` never names a real mode (compiling takes minutes on
    the CPU and is tested in tests/test_compile.py)."""
    f = draw(mix({
        "model": (st.text("abcfuzz-_.", min_size=1, max_size=12).map(lambda s: "fz" + s), strings()),
        "source": (st.sampled_from(("simple_cnn", "simple_cnn", "squeezenet1_1")),
                   st.one_of(st.sampled_from(("demo", "demo.pt", "resnet18")), strings())),
        "weights": (st.sampled_from(("", "none")), strings(("none", "DEFAULT", "IMAGENET1K_V1"))),
        "device": (st.sampled_from(("", "cpu", "auto")), strings(("cuda", "cuda:7", "tpu"))),
        "dtype": (st.sampled_from(("", "float32", "bfloat16", "float16")), strings(("int8", "float64"))),
        "arch": (st.just(""), strings(("simple_cnn", "resnet18"))),
        "num_classes": (st.sampled_from((0, 3, 10)), st.sampled_from(INT32)),
        "batching": (st.builds(pb.BatchingOptions, max_batch_size=st.integers(0, 8), max_delay_ms=st.floats(0, 5),
                               max_queue=st.integers(0, 64)),
                     st.builds(pb.BatchingOptions, max_batch_size=int32s(), max_delay_ms=doubles(),
                               max_queue=int32s())),
        "compile": (st.just(""), st.sampled_from(("turbo", "\x00", "a" * 5000))),
        "compile_batch_sizes": (st.just([]), st.lists(int32s(), max_size=10)),
    }))
    r = pb.LoadModelRequest(channels_last=draw(st.booleans()), device_decode=draw(st.booleans()), **f)
    if draw(st.booleans()):
        r.pin_memory = draw(st.booleans())
    # The same settings as one ModelOptions (moved there, or set both ways, agreeing or not).
    how = draw(st.sampled_from(("flat", "options", "both")))
    if how != "flat":
        o = r.options
        o.device, o.dtype, o.compile = r.device, r.dtype, r.compile
        o.batching.CopyFrom(r.batching)
        o.compile_batch_sizes.extend(r.compile_batch_sizes)
        o.channels_last, o.device_decode = r.channels_last, r.device_decode
        if r.HasField("pin_memory"):
            o.pin_memory = r.pin_memory
        if how == "options":
            for name in ("device", "dtype", "batching", "channels_last", "compile", "compile_batch_sizes",
                         "device_decode", "pin_memory"):
                r.ClearField(name)
        elif draw(st.booleans()):
            o.dtype = draw(strings(("float32", "float16", "bfloat16")))
    return r


def unload_model_requests(keep) -> st.SearchStrategy[pb.UnloadModelRequest]:
    return strings().filter(lambda s: s not in keep).map(lambda s: pb.UnloadModelRequest(model=s))


@st.composite
def model_info_requests(draw, models: dict) -> pb.GetModelInfoRequest:
    sizes = st.one_of(st.just([]), st.lists(st.one_of(st.sampled_from(INT64), st.integers(0, 300)), max_size=5),
                      st.sampled_from(([3, 32, 32], [3, 8, 8], [1, 32, 32], [3, 224, 224], [3, 0, 0], [3, 1, 99999],
                                       [3, 4096, 4096])))
    return pb.GetModelInfoRequest(model=draw(st.one_of(sane_models(models), model_ids(models))),
                                  input_size=draw(sizes))


@st.composite
def stream_items(draw, models: dict) -> list:
    items = []
    for i in range(draw(st.integers(1, 4))):
        ident = draw(st.one_of(st.just(f"item-{i}"), st.just(f"item-{i}"), strings()))
        items.append(pb.ExplainStreamRequest(id=ident, request=draw(explain_requests(models))))
    return items


def server_info_requests(models: dict) -> st.SearchStrategy[pb.GetServerInfoRequest]:
    """GetServerInfo takes an empty request: hostility reaches it only on the wire (wire_bytes)."""
    return st.just(pb.GetServerInfoRequest())


REQUESTS = {
    "GetServerInfo": server_info_requests,
    "LoadModel": load_model_requests,
    "GetModelInfo": model_info_requests,
    "Predict": predict_requests,
    "GetFeatureMaps": feature_maps_requests,
    "GetKernels": kernels_requests,
    "GetLayerStats": layer_stats_requests,
    "Explain": explain_requests,
}


@st.composite
def wire_bytes(draw, models: dict) -> tuple[str, bytes]:
    """(rpc, bytes) for the raw channel: a generated request serialized and
    then truncated, bit-flipped, spliced or extended, or plain random bytes."""
    rpc = draw(st.sampled_from(sorted(REQUESTS) + ["ListModels", "UnloadModel"]))
    if rpc == "ListModels":
        data = bytearray(pb.ListModelsRequest().SerializeToString())
    elif rpc == "UnloadModel":
        data = bytearray(draw(unload_model_requests(set(models))).SerializeToString())
    else:
        data = bytearray(draw(REQUESTS[rpc](models)).SerializeToString())
    how = draw(st.sampled_from(("flip", "flip", "truncate", "random", "append", "varint")))
    if how == "flip" and data:
        for _ in range(draw(st.integers(1, 6))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= draw(st.integers(1, 255))
    elif how == "truncate" and data:
        data = data[:draw(st.integers(0, len(data) - 1))]
    elif how == "random":
        data = bytearray(draw(st.binary(max_size=200)))
    elif how == "append":
        data += draw(st.binary(min_size=1, max_size=40))
    elif how == "varint":
        # A length-delimited field claiming far more bytes than follow.
        data += bytes([draw(st.sampled_from((0x12, 0x1A, 0x32, 0x0A)))]) + b"\xff\xff\xff\xff\x0f" + b"x"
    return rpc, bytes(data)
