"""JPEGs decoded on the model's device and preprocessed there.

`torchvision.io.decode_jpeg(list, device=...)` decodes a request's JPEGs in
one call (nvJPEG on CUDA, libjpeg-turbo on the CPU), and `preprocess` then
does what imaging.preprocess does, with tensors on that device:

- the same sizes: imaging.resized_size and imaging.crop_spans;
- only the crop's pixels are computed, as two small matrix products over
  the source window they read (imaging.resample_matrix): shrinking is
  OpenCV's INTER_AREA exactly (each output pixel the area-weighted mean of
  the input pixels it covers); enlarging is bilinear/bicubic/nearest with
  half-pixel centres, as cv2.resize. Memory is bounded by the crop, whatever
  the aspect ratio;
- the resized pixels are rounded to whole levels, as OpenCV's uint8 output;
- then /255, grey if the recipe wants one channel, mean and std.

On the CPU the decoders agree bit for bit (OpenCV and torchvision both use
libjpeg-turbo) and the preprocessed tensors agree to within one grey level
(1/255 before normalisation: OpenCV's bilinear uses fixed-point weights);
nvJPEG's IDCT and chroma upsampling differ from libjpeg-turbo's by a few
levels. Not yet measured on a GPU (no GPU was lent to the session that wrote
this): tests/test_device_decode.py states the CPU tolerance.

JPEGs whose EXIF orientation asks for a rotation take the OpenCV path (OpenCV
applies it; nvJPEG does not), as do files whose header we cannot read; if the
device decoder fails on a batch, the whole request falls back to OpenCV,
which names the offending image.
"""
from __future__ import annotations

import functools
import logging
import struct
import warnings

import torch

from .. import imaging
from . import Preprocessing

log = logging.getLogger("netscope.decode")

# torchvision >= 0.29 warns on every call that its decoders move to TorchCodec;
# they are still there in the versions we support (0.26 .. 0.29).
warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torchvision\.io")

_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def jpeg_header(data: bytes) -> tuple[int, int, int] | None:
    """(height, width, EXIF orientation; 1 when none) of a baseline or
    progressive JPEG, read from its markers without decoding; None when the
    bytes are not a JPEG we can read the header of."""
    if len(data) < 4 or data[:3] != b"\xff\xd8\xff":
        return None
    pos, orientation = 2, 1
    try:
        while pos + 4 <= len(data):
            if data[pos] != 0xFF:
                return None
            marker = data[pos + 1]
            if marker == 0xFF:  # fill byte
                pos += 1
                continue
            if marker == 0xD8 or 0xD0 <= marker <= 0xD7 or marker == 0x01:
                pos += 2
                continue
            (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
            body = data[pos + 4 : pos + 2 + length]
            if marker == 0xE1 and body[:6] == b"Exif\x00\x00":
                orientation = _exif_orientation(body[6:]) or orientation
            elif marker in _SOF:
                height, width = struct.unpack(">HH", body[1:5])
                return (height, width, orientation) if height and width else None
            elif marker == 0xDA:  # scan data before any frame header
                return None
            pos += 2 + length
    except struct.error:
        return None
    return None


def _exif_orientation(tiff: bytes) -> int | None:
    """The Orientation tag (0x0112) of IFD0 in a TIFF/EXIF block."""
    if tiff[:2] not in (b"II", b"MM"):
        return None
    order = "<" if tiff[:2] == b"II" else ">"
    (ifd,) = struct.unpack(order + "I", tiff[4:8])
    (count,) = struct.unpack(order + "H", tiff[ifd : ifd + 2])
    for i in range(count):
        entry = tiff[ifd + 2 + 12 * i : ifd + 14 + 12 * i]
        tag, kind = struct.unpack(order + "HH", entry[:4])
        if tag == 0x0112 and kind == 3:  # SHORT
            return struct.unpack(order + "H", entry[8:10])[0]
    return None


def decode(datas: list[bytes], device: torch.device) -> list[torch.Tensor]:
    """(3, H, W) uint8 RGB tensors on `device`, all in one decode_jpeg call."""
    from torchvision.io import ImageReadMode, decode_jpeg

    raw = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas]
    return list(decode_jpeg(raw, mode=ImageReadMode.RGB, device=device))


@functools.lru_cache(maxsize=256)
def _weights(src: int, dst: int, start: int, count: int, mode: str | None,
             device: torch.device) -> tuple[int, torch.Tensor]:
    """imaging.resample_matrix on the device, as float32, made once per size:
    (first source pixel, (count, window) matrix)."""
    first, m = imaging.resample_matrix(src, dst, start, count, mode)
    return first, torch.from_numpy(m).to(device=device, dtype=torch.float32)


def preprocess(img: torch.Tensor, recipe: Preprocessing) -> torch.Tensor:
    """(3, H, W) uint8 RGB on any device -> (C, crop_h, crop_w) float32 there,
    normalised: imaging.preprocess in tensors.

    Only the crop is resampled: two matrix products over the source window it
    reads (imaging.resample_matrix: INTER_AREA when shrinking, else bilinear,
    bicubic or nearest with half-pixel centres, as cv2.resize), so memory is
    bounded by the crop whatever the image's aspect ratio; the result is
    rounded to whole levels as OpenCV's uint8 output is."""
    h, w = img.shape[-2:]
    new_h, new_w = imaging.resized_size(h, w, recipe.resize)
    mode = imaging.resize_mode(h, w, recipe.resize, recipe.interpolation)
    rows, cols = imaging.crop_spans(new_h, new_w, recipe.crop)
    y0, my = _weights(h, new_h, rows.start, rows.count, mode, img.device)
    x0, mx = _weights(w, new_w, cols.start, cols.count, mode, img.device)
    window = img[:, y0 : y0 + my.shape[1], x0 : x0 + mx.shape[1]].float()
    part = (my @ window @ mx.T).round_().clamp_(0, 255)  # OpenCV hands back whole uint8 levels
    x = torch.zeros((img.shape[0], *recipe.crop), dtype=torch.float32, device=img.device)
    x[:, rows.offset : rows.offset + rows.count, cols.offset : cols.offset + cols.count] = part
    x = x / 255.0
    grey, mean, std = _constants(recipe, x.device)
    if recipe.channels == 1:
        x = (x * grey).sum(0, keepdim=True)
    return ((x - mean) / std).contiguous()


@functools.lru_cache(maxsize=32)
def _constants(recipe: Preprocessing, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The grey weights, mean and std as (C, 1, 1) tensors on the device, made
    once (not three small host-to-device copies per image)."""
    def column(values):
        return torch.tensor(values, dtype=torch.float32, device=device)[:, None, None]

    return column((0.299, 0.587, 0.114)), column(recipe.mean), column(recipe.std)


def decode_and_preprocess(jpegs: dict[int, bytes], recipe: Preprocessing, device: torch.device,
                          max_pixels: int) -> dict[int, torch.Tensor]:
    """Preprocessed tensors on `device` for the JPEGs (by image index) this
    path takes; the others (not a readable JPEG, EXIF-rotated) are left out
    for the OpenCV path. Images over max_pixels are refused from the header,
    before anything is decoded. Empty if the device decoder fails."""
    taken: dict[int, bytes] = {}
    for index, data in jpegs.items():
        header = jpeg_header(data)
        if header is None or header[2] != 1:
            continue  # the OpenCV path reads (and refuses) it with the same header check
        imaging.check_pixels(header[0], header[1], max_pixels, index)
        taken[index] = data
    if not taken:
        return {}
    try:
        decoded = decode(list(taken.values()), device)
    except (RuntimeError, ValueError) as exc:  # a file nvJPEG cannot read, no image ops in this build, ...
        log.debug("device JPEG decode fell back to OpenCV: %s", exc)
        return {}
    return {index: preprocess(img, recipe) for index, img in zip(taken, decoded)}
