"""Decoding a request's images: in a pool of threads, and on the model's
device with torchvision (run here on the CPU, the same code as on CUDA).

Tolerance of the device path against OpenCV, on the CPU: at most one grey
level (1/255 before normalisation) per pixel, and on average under 0.15
levels. The decoders agree bit for bit (both libjpeg-turbo); the resizes
differ only in rounding (OpenCV's fixed-point bilinear, and its integer
box filter rounding halves up). nvJPEG on a GPU is not measured here (no GPU
was lent to the session that wrote this)."""
from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import cv2
import grpc
import numpy as np
import pytest
import torch
from PIL import Image

from netscope.client import NetscopeError
from netscope.server.rpc import convert
from netscope.server.imaging import device_decode
from netscope.server import imaging
from netscope.server.errors import InvalidArgument
from netscope.server.imaging import Preprocessing
from netscope.v1 import inspector_pb2 as pb

from .conftest import MAX_PIXELS, encode

RECIPES = {
    "imagenet": Preprocessing(),                                     # shrink (INTER_AREA), crop
    "bicubic": Preprocessing(resize=600, interpolation="bicubic"),   # enlarge
    "nearest": Preprocessing(resize=700, crop=(224, 224), interpolation="nearest"),
    "odd": Preprocessing(resize=299, crop=(299, 299)),                # non-integer shrink
    "pad": Preprocessing(resize=0, crop=(520, 700)),                  # crop larger than the image: zero padding
    "grey": Preprocessing(resize=40, crop=(32, 32), mean=(0.5,), std=(0.25,), channels=1),
}


def with_exif_orientation(rgb: np.ndarray, orientation: int) -> bytes:
    im = Image.fromarray(rgb)
    exif = im.getexif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    im.save(out, "JPEG", exif=exif.tobytes(), quality=90)
    return out.getvalue()


def progressive(rgb: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, "JPEG", progressive=True, quality=85)
    return out.getvalue()


def test_jpeg_header_reads_size_and_orientation_without_decoding(photos):
    rgb = photos["chelsea"]
    assert device_decode.jpeg_header(encode(rgb)) == (300, 451, 1)
    assert device_decode.jpeg_header(progressive(rgb)) == (300, 451, 1)
    assert device_decode.jpeg_header(with_exif_orientation(rgb, 6)) == (300, 451, 6)
    assert device_decode.jpeg_header(encode(rgb, ".png")) is None
    assert device_decode.jpeg_header(encode(rgb)[:20]) is None
    assert device_decode.jpeg_header(b"\xff\xd8\xff") is None


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_device_preprocessing_matches_opencv_within_one_level(photos, recipe):
    r = RECIPES[recipe]
    images = dict(photos, small=cv2.resize(photos["chelsea"], (97, 71), interpolation=cv2.INTER_AREA))
    std = torch.tensor(r.std)[:, None, None]
    for name, rgb in images.items():
        data = encode(rgb)
        want = imaging.preprocess(imaging.decode(data), r)
        got = device_decode.decode_and_preprocess({0: data}, r, torch.device("cpu"), MAX_PIXELS)[0]
        assert got.shape == want.shape and got.dtype == torch.float32
        levels = (got - want).abs() * std * 255
        assert float(levels.max()) <= 1.0 + 1e-3, (name, float(levels.max()))
        assert float(levels.mean()) <= 0.15, (name, float(levels.mean()))


def test_rotated_and_unreadable_jpegs_are_left_to_opencv(photos):
    rgb = photos["chelsea"]
    jpegs = {0: with_exif_orientation(rgb, 6), 1: encode(rgb), 2: b"\xff\xd8\xff\xe0garbage", 3: progressive(rgb)}
    out = device_decode.decode_and_preprocess(jpegs, Preprocessing(), torch.device("cpu"), MAX_PIXELS)
    assert sorted(out) == [1, 3]


def test_oversized_jpeg_is_refused_from_its_header(photos):
    with pytest.raises(InvalidArgument, match=r"image 4: 451x300 = 135300 pixels is over"):
        device_decode.decode_and_preprocess({4: encode(photos["chelsea"])}, Preprocessing(), torch.device("cpu"),
                                            100_000)


def test_a_decode_pool_gives_the_same_batch_and_names_the_bad_image(photos):
    images = [pb.Image(encoded=encode(photos[n], ext)) for n, ext in
              [("chelsea", ".jpg"), ("astronaut", ".png"), ("coffee", ".jpg"), ("rocket", ".bmp")]]
    r = Preprocessing()
    with ThreadPoolExecutor(4) as pool:
        serial = convert.images_to_batch(images, r, max_pixels=MAX_PIXELS, max_images=8)
        pooled = convert.images_to_batch(images, r, max_pixels=MAX_PIXELS, max_images=8, pool=pool)
        assert torch.equal(serial, pooled)
        broken = images[:2] + [pb.Image(encoded=b"\x89PNG broken")] + images[3:]
        with pytest.raises(InvalidArgument, match="image 2: could not decode"):
            convert.images_to_batch(broken, r, max_pixels=MAX_PIXELS, max_images=8, pool=pool)


def test_mixed_request_on_the_device_path_keeps_order(photos):
    r = Preprocessing()
    images = [pb.Image(encoded=encode(photos["chelsea"])), pb.Image(encoded=encode(photos["coffee"], ".png")),
              pb.Image(encoded=with_exif_orientation(photos["rocket"], 8)), pb.Image(encoded=encode(photos["rocket"]))]
    want = convert.images_to_batch(images, r, max_pixels=MAX_PIXELS, max_images=8)
    got = convert.images_to_batch(images, r, max_pixels=MAX_PIXELS, max_images=8, device=torch.device("cpu"))
    std = torch.tensor(r.std)[None, :, None, None]
    assert float(((got - want).abs() * std * 255).max()) <= 1.0 + 1e-3


# ---------------------------------------------------------------- through the server


@pytest.fixture(scope="module")
def decoding_on_device(client):
    info = client.load_model("mnv3dd", "mobilenet_v3_small", device_decode=True)
    assert info.device_decode and info.pin_memory
    yield "mnv3dd"
    client.unload_model("mnv3dd")


def test_predictions_with_device_decode_match_opencv(client, decoding_on_device, photo_files, photos):
    paths = [photo_files[n] for n in ("chelsea", "astronaut", "coffee", "rocket")]  # JPEGs and PNGs
    want = client.predict("mnv3", paths, probabilities=True)
    got = client.predict(decoding_on_device, paths, probabilities=True)
    for g, w in zip(got, want):
        assert g.top1.index == w.top1.index
        np.testing.assert_allclose(g.probabilities, w.probabilities, atol=2e-4)
    rotated = with_exif_orientation(photos["coffee"], 6)  # OpenCV applies the rotation; so must we
    np.testing.assert_allclose(client.predict(decoding_on_device, rotated, probabilities=True)[0].probabilities,
                               client.predict("mnv3", rotated, probabilities=True)[0].probabilities, atol=1e-6)


def test_device_decode_errors_name_the_image(client, decoding_on_device, photos):
    good = encode(photos["rocket"])
    corrupt = encode(photos["chelsea"])[:600]  # a readable header, a truncated body: the device decoder fails
    for images, bad in [([good, corrupt], 1), ([good, good, b"nope"], 2), ([corrupt, good], 0)]:
        with pytest.raises(NetscopeError) as err:
            client.predict(decoding_on_device, images)
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.message.startswith(f"image {bad}: could not decode"), err.value.message
    huge = encode(np.zeros((1500, 1500, 3), np.uint8))  # over the session server's 2 MP
    with pytest.raises(NetscopeError) as err:
        client.predict(decoding_on_device, [encode(photos["rocket"]), huge])
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT and "image 1: 1500x1500" in err.value.message
    assert client.predict(decoding_on_device, photos["rocket"])[0].top1.label  # still serving


@pytest.mark.parametrize("shape", [(2, 3000), (3000, 2), (1, 60000)])
def test_device_path_crops_an_extreme_aspect_ratio_without_the_full_resize(shape):
    """Both paths resample only the crop's window (a full resize of 1x60000
    would be 256 x 15 M pixels); they agree within a level."""
    rgb = (np.arange(shape[0] * shape[1] * 3) % 251).astype(np.uint8).reshape(*shape, 3)
    data = encode(rgb, ".jpg")
    r = Preprocessing()
    want = imaging.preprocess(imaging.decode(data), r)
    got = device_decode.decode_and_preprocess({0: data}, r, torch.device("cpu"), MAX_PIXELS)[0]
    levels = (got - want).abs() * torch.tensor(r.std)[:, None, None] * 255
    assert got.shape == (3, 224, 224) and float(levels.max()) <= 1.0 + 1e-3
