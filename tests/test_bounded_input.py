"""Bounded memory for any image or tensor a request carries (issue 12, §3 and §4).

Hostile images and tensors through the session server (max_pixels 2,000,000):
each answers OK with the right answer or INVALID_ARGUMENT naming the image
and what to change, and costs memory bounded by the model input. The memory
figures are tracemalloc peaks of the preprocessing itself (numpy and OpenCV
allocations both show there); benchmarks/bounded_input.py measures a whole
server's peak RSS (1x8000 PNG: +1636 MB before the fix, +0 MB after)."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import time
import tracemalloc
import zlib

import cv2
import grpc
import numpy as np
import pytest
import torch
from PIL import Image

from netscope.client import NetscopeError
from netscope.server.rpc import convert
from netscope.server import imaging
from netscope.server.models import registry
from netscope.server.errors import InvalidArgument
from netscope.server.imaging import Preprocessing
from netscope.v1 import inspector_pb2 as pb
from netscope.v1 import inspector_pb2_grpc as pb_grpc

from .conftest import encode


def strip(height: int, width: int) -> np.ndarray:
    return (np.arange(height * width * 3) % 251).astype(np.uint8).reshape(height, width, 3)


def jpeg_declaring(height: int, width: int) -> bytes:
    data = bytearray(encode(np.full((8, 8, 3), 128, np.uint8)))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def png_declaring(height: int, width: int) -> bytes:
    data = bytearray(encode(np.zeros((1, 1, 3), np.uint8), ".png"))
    data[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    return bytes(data)


def pillow(img: Image.Image, fmt: str, **kw) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **kw)
    return out.getvalue()


def peak_bytes(fn, *args):
    tracemalloc.start()
    try:
        out = fn(*args)
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def refused(client, model, images) -> str:
    with pytest.raises(NetscopeError) as err:
        client.predict(model, images)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT, (err.value.code, err.value.message)
    return err.value.message


# ---------------------------------------------------------------- aspect ratio


@pytest.mark.parametrize("shape", [(1, 8000), (1, 100000), (100000, 1)])
def test_an_extreme_aspect_ratio_preprocesses_in_memory_bounded_by_the_crop(shape):
    data = encode(strip(*shape), ".png")
    assert len(data) < 400_000  # (100000x1 PNGs filter row by row: a few hundred KB)
    x, peak = peak_bytes(lambda: imaging.preprocess(imaging.decode(data), Preprocessing()))
    assert tuple(x.shape) == (3, 224, 224) and torch.isfinite(x).all()
    # The full resize would be 256 x 25.6 M x 3 bytes (20 GB) for 1x100000.
    assert peak < 20e6, peak


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "nearest"])
@pytest.mark.parametrize("shape", [(20, 600), (600, 20), (7, 90), (1, 300)])
def test_the_bounded_path_agrees_with_the_full_resize_within_one_level(photos, shape, interpolation):
    for recipe in (Preprocessing(interpolation=interpolation),
                   Preprocessing(resize=300, crop=(320, 200), interpolation=interpolation)):  # and padding
        rgb = cv2.resize(photos["chelsea"], shape[::-1], interpolation=cv2.INTER_AREA)
        h, w = imaging.resized_size(*shape, recipe.resize)
        assert h * w > imaging.FULL_RESIZE_FACTOR * recipe.crop[0] * recipe.crop[1]  # takes the bounded path
        full = imaging.center_crop(imaging.resize_shorter(rgb, recipe.resize, interpolation), recipe.crop)
        got = imaging.fit(rgb, recipe)
        diff = np.abs(got.astype(int) - full.astype(int))
        assert got.shape == full.shape and diff.max() <= (0 if interpolation == "nearest" else 1), diff.max()


def test_zero_padding_allocates_only_the_crop():
    _, peak = peak_bytes(imaging.center_crop, strip(1, 100000), (224, 224))
    assert peak < 1e6, peak  # not the 224 x 100000 padded image


def test_extreme_aspect_ratio_answers_ok_with_the_right_answer(client):
    rgb = strip(10, 800)  # bounded path (256 x 20480 resized), yet small enough to compare with the full one
    got = client.predict("r18", encode(rgb, ".png"), probabilities=True)[0].probabilities
    model = registry.build_architecture("resnet18", 1000).eval()
    recipe = registry.default_recipe("resnet18")
    full = imaging.center_crop(imaging.resize_shorter(rgb, recipe.resize, recipe.interpolation), recipe.crop)
    with torch.inference_mode():
        x = imaging.preprocess(np.ascontiguousarray(full), Preprocessing(resize=0, crop=recipe.crop))
        want = torch.softmax(model(x[None]), 1)[0].numpy()
    np.testing.assert_allclose(got, want, atol=2e-3)
    for shape in [(1, 8000), (1, 100000)]:
        assert client.predict("r18", encode(strip(*shape), ".png"))[0].top1.label


# ---------------------------------------------------------------- headers first


def test_a_declared_bomb_is_refused_from_its_header_before_any_decode(client):
    bomb = jpeg_declaring(30000, 30000)
    assert len(bomb) < 1000
    err, peak = peak_bytes(lambda: pytest.raises(InvalidArgument, imaging.decode, bomb))
    assert peak < 1e6, peak
    assert "30000x30000 = 900000000 pixels is over the server's limit" in str(err.value)
    start = time.perf_counter()
    message = refused(client, "r18", [encode(strip(4, 4)), bomb])
    assert time.perf_counter() - start < 5
    assert message.startswith("image 1: 30000x30000") and "limit of 2000000" in message
    for other in (png_declaring(60000, 60000), png_declaring(2000, 1001)):
        assert "pixels is over the server's limit" in refused(client, "r18", other)


def test_every_accepted_format_is_read_from_its_header():
    from netscope.server.imaging import image_header

    im = Image.fromarray(strip(30, 50))
    for fmt, kw in [("JPEG", {}), ("PNG", {}), ("WEBP", {}), ("WEBP", {"lossless": True}), ("BMP", {})]:
        h = image_header.read(pillow(im, fmt, **kw))
        assert (h.width, h.height) == (50, 30), fmt
    animated = pillow(im, "WEBP", save_all=True, append_images=[im])  # the extended (VP8X) header
    assert (image_header.read(animated).width, image_header.read(animated).height) == (50, 30)


def test_only_the_documented_formats_reach_a_decoder(client):
    im = Image.fromarray(strip(30, 50))
    for fmt in ("TIFF", "GIF", "PPM", "JPEG2000", "ICO"):
        message = refused(client, "r18", pillow(im, fmt))
        assert message.startswith("image 0: could not decode") and "JPEG, PNG, WebP or BMP" in message, message
    for fmt in ("WEBP", "BMP"):
        assert client.predict("r18", pillow(im, fmt))[0].top1.label


def test_odd_images_decode_or_are_invalid_argument_never_internal(client, photos):
    rgb = photos["chelsea"]
    jpeg, png = encode(rgb), encode(rgb, ".png")
    webp = pillow(Image.fromarray(rgb), "WEBP")
    assert webp[12:16] == b"VP8 "
    grey = Image.fromarray(rgb).convert("L")
    decodes = {
        "grey png": pillow(grey, "PNG"),
        "rgba png": pillow(Image.fromarray(rgb).convert("RGBA"), "PNG"),
        "16-bit png": cv2.imencode(".png", (rgb.astype(np.uint16) * 257))[1].tobytes(),
        "16-bit grey png": pillow(Image.fromarray(np.asarray(grey).astype(np.uint16) * 257), "PNG"),
        "palette png": pillow(Image.fromarray(rgb).convert("P"), "PNG"),
        "cmyk jpeg": pillow(Image.fromarray(rgb).convert("CMYK"), "JPEG"),
        "grey jpeg": pillow(grey, "JPEG"),
        "1x1 png": encode(strip(1, 1), ".png"),
    }
    for name, data in decodes.items():
        assert client.predict("r18", data)[0].top1.label, name
    refusals = {
        "truncated png": (png[: len(png) // 2], "could not decode"),
        "png header only": (png[:33], "could not decode"),
        "jpeg header only": (jpeg[:20], "could not decode"),
        "0x8 png": (png_declaring(0, 8), "could not read the PNG header"),  # Pillow refuses a 0 width
        "8x0 jpeg": (jpeg_declaring(8, 0), "could not read the JPEG header"),
        "0x0 webp": (webp[:26] + b"\0\0\0\0" + webp[30:], "declares 0x0 pixels; send an image of at least 1x1"),
        "empty": (b"", "empty image bytes"),
        "random": (os.urandom(64), "could not decode"),
    }
    for name, (data, says) in refusals.items():
        message = refused(client, "r18", [jpeg, data])
        assert message.startswith("image 1: ") and says in message, (name, message)
    truncated = jpeg[: len(jpeg) // 2]  # libjpeg fills the missing rows in grey: decodes
    try:
        client.predict("r18", truncated)
    except NetscopeError as exc:
        assert exc.code == grpc.StatusCode.INVALID_ARGUMENT


def test_opencv_refusals_become_invalid_argument(monkeypatch):
    """OpenCV's own limits (read from the environment when cv2 is first
    imported, which netscope.server sets up) stand behind the header check;
    what they refuse is INVALID_ARGUMENT, not INTERNAL."""
    code = (
        "import netscope.server, cv2, numpy as np\n"
        "from netscope.server import imaging\n"
        "from netscope.server.errors import InvalidArgument\n"
        "assert imaging.OPENCV_MAX_PIXELS == 1 << 28, imaging.OPENCV_MAX_PIXELS\n"
        "try:\n"
        "    imaging.decode(cv2.imencode('.png', np.zeros((20, 40, 3), np.uint8))[1].tobytes())\n"
        "except InvalidArgument as e:\n"
        "    print('REFUSED', e)\n"
    )
    env = dict(os.environ, OPENCV_IO_MAX_IMAGE_WIDTH="10")  # a limit the header check does not know
    env.pop("OPENCV_IO_MAX_IMAGE_PIXELS", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert "REFUSED image 0: could not decode" in out.stdout, out.stdout + out.stderr
    # Where OpenCV's pixel limit is below the server's, the header check applies it.
    monkeypatch.setattr(imaging, "OPENCV_MAX_PIXELS", 1 << 28)
    with pytest.raises(InvalidArgument, match="over the server's limit of 268435456"):
        imaging.check_pixels(17000, 17000, 10**9, 0)


# ---------------------------------------------------------------- tensors


@pytest.fixture(scope="module")
def stub(server):
    with grpc.insecure_channel(server.address) as channel:
        yield pb_grpc.InspectorStub(channel)


def predict_tensor(stub, dtype, shape, data=b"", model="r18") -> grpc.RpcError:
    request = pb.PredictRequest(model=model, images=[pb.Image(encoded=encode(strip(8, 8))),
                                                     pb.Image(tensor=pb.Tensor(dtype=dtype, shape=shape, data=data))])
    with pytest.raises(grpc.RpcError) as err:
        stub.Predict(request, timeout=60)
    return err.value


@pytest.mark.parametrize("dtype, shape, data, says", [
    (pb.UINT8, [4294967296, 4294967296], b"", "0 bytes of data do not match shape"),
    (pb.FLOAT32, [2**62, 2**62, 3], b"\0" * 12, "do not match shape"),
    (pb.BFLOAT16, [2**40, 2**40], b"", "do not match shape"),
    (pb.UINT8, [0, 5, 3], b"", "has a dimension below 1"),
    (pb.UINT8, [5, 0, 3], b"", "has a dimension below 1"),
    (pb.UINT8, [-1, 5, 3], b"", "has a dimension below 1"),
    (pb.UINT8, [1] * 9, b"\0", "has 9 dimensions; at most 8"),
    (pb.UINT8, [1] * 10000, b"\0", "has 10000 dimensions"),
    (pb.UINT8, [3000, 3000, 3], b"\0" * 100, "do not match shape"),
])
def test_lying_tensor_shapes_are_invalid_argument_before_allocation(stub, dtype, shape, data, says):
    err = predict_tensor(stub, dtype, shape, data)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert err.details().startswith("image 1: ") and says in err.details(), err.details()
    assert len(err.details()) < 400


def test_proto_to_numpy_checks_before_allocating():
    msg = pb.Tensor(dtype=pb.FLOAT64, shape=[2**31, 2**31, 2**31], data=b"")
    _, peak = peak_bytes(lambda: pytest.raises(InvalidArgument, convert.proto_to_numpy, msg, "t"))
    assert peak < 1e5


def test_uint8_pixels_over_max_pixels_are_refused_before_the_copy(client):
    message = refused(client, "r18", np.zeros((1500, 1500), np.uint8))  # grey: as_rgb would triple it
    assert message.startswith("image 0: 1500x1500 = 2250000 pixels is over")


@pytest.fixture(scope="module")
def squeezenet(client):
    client.load_model("sq_bounded", "squeezenet1_1")
    yield "sq_bounded"
    client.unload_model("sq_bounded")


def test_min_input_size_is_probed_reported_and_enforced(client, squeezenet, run_cli):
    info = client.model_info(squeezenet)
    assert info.min_input_size == 17
    assert client.model_info("r18").min_input_size == 1
    code, out, _ = run_cli("info", squeezenet)
    assert code == 0 and "runs on H, W >= 17" in out
    x = np.zeros((3, 8, 8), np.float32)
    message = refused(client, squeezenet, [np.zeros((3, 224, 224), np.float32), x])
    assert message.startswith("image 1: a float tensor of 8x8 is smaller") and "at least 17" in message, message
    assert "at least 17" in refused(client, squeezenet, np.zeros((3, 16, 400), np.float32))
    assert client.predict(squeezenet, np.zeros((3, 17, 17), np.float32))[0].top1.label
    assert client.predict("r18", np.zeros((3, 1, 1), np.float32))[0].top1.label  # resnet18 runs on 1x1


def test_float_tensors_far_larger_than_the_input_are_refused(client):
    message = refused(client, "r18", np.zeros((3, 1000, 1000), np.float32))  # under max_pixels, 20x the input
    assert "1000x1000 = 1000000 pixels is over the limit of 802816" in message and "16x its 224x224" in message
    assert client.predict("r18", np.zeros((3, 448, 448), np.float32))[0].top1.label


def test_smallest_size_search():
    from netscope.server.models.input_size import smallest_size

    for true_min in (1, 2, 3, 17, 63, 100, 224):
        calls = []
        assert smallest_size(lambda s: calls.append(s) or s >= true_min, 224) == true_min
        assert len(calls) <= 16
    assert smallest_size(lambda s: s == 224, 224) == 224  # a fixed-size model (ViT)
