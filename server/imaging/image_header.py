"""What an encoded image is and how large it says it is, read from its first
bytes without decoding a pixel.

The server decodes exactly the formats it documents (JPEG, PNG, WebP, BMP),
recognised by their magic bytes, so that no other OpenCV codec (TIFF, JPEG
2000, AVIF, HDR, PXM, ...) is ever reached by a client's bytes. The size comes
from Pillow's format plugins, which read only the header (Pillow keeps these
parsers fuzzed and patched); WebP's three header kinds are read here from the
RIFF layout in the WebP container specification, because Pillow's WebP plugin
allocates the whole canvas when it opens a file.
"""
from __future__ import annotations

import io
import struct
from dataclasses import dataclass

ACCEPTED = ("JPEG", "PNG", "WebP", "BMP")


@dataclass(frozen=True)
class Header:
    format: str  # one of ACCEPTED
    width: int
    height: int


class HeaderError(ValueError):
    """The bytes are not an accepted format, or its header cannot be read."""


def sniff(data: bytes) -> str | None:
    """The accepted format the magic bytes announce, or None."""
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    if data[:2] == b"BM":
        return "BMP"
    return None


def read(data: bytes) -> Header:
    """The format and declared (width, height) of encoded image bytes.

    Raises HeaderError when the magic bytes are none of ACCEPTED or the
    header is unreadable. Sizes may be 0: the caller decides what to refuse."""
    fmt = sniff(data)
    if fmt is None:
        raise HeaderError(f"not a {'/'.join(ACCEPTED)} file (magic bytes {data[:8].hex(' ') or 'none'})")
    if fmt == "WebP":
        size = _webp_size(data)
    else:
        size = _pillow_size(fmt, data)
    if size is None:
        raise HeaderError(f"could not read the {fmt} header")
    return Header(fmt, int(size[0]), int(size[1]))


def _pillow_size(fmt: str, data: bytes) -> tuple[int, int] | None:
    # The plugin classes themselves, not Image.open: no probing of other
    # formats, and no DecompressionBomb check of Pillow's (ours is max_pixels).
    from PIL import BmpImagePlugin, JpegImagePlugin, PngImagePlugin

    cls = {"JPEG": JpegImagePlugin.JpegImageFile, "PNG": PngImagePlugin.PngImageFile,
           "BMP": BmpImagePlugin.BmpImageFile}[fmt]
    try:
        with cls(io.BytesIO(data)) as im:
            return im.size
    except Exception:  # Pillow raises SyntaxError, OSError, ValueError, struct.error, ... on bad headers
        return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    """Canvas (width, height) of a simple lossy (VP8), lossless (VP8L) or
    extended (VP8X) WebP file."""
    chunk = data[12:16]
    try:
        if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
            w, h = struct.unpack("<HH", data[26:30])
            return w & 0x3FFF, h & 0x3FFF
        if chunk == b"VP8L" and data[20:21] == b"\x2f":
            (bits,) = struct.unpack("<I", data[21:25])
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        if chunk == b"VP8X" and len(data) >= 30:
            return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    except struct.error:
        return None
    return None
