"""Peak RSS growth of a real server answering one hostile image.

Each case runs in a fresh process (peak RSS only ever grows): a netscope
server on a loopback port with resnet18 (untrained) on the CPU and the default
--max-pixels (64 M), one warm-up Predict of a photo, then one Predict of the
case; the figure is the process's peak RSS after the case less its peak before
it (server and client share the process; the client's part is the request's
bytes). --unbounded swaps in the preprocessing netscope had before issue 12
(full shorter-side resize, decode before the size check, OpenCV's default
limit) to measure what the fix saves.

    .venv/bin/python benchmarks/bounded_input.py [--unbounded] [--case NAME ...]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import zlib


def png_strip(height: int, width: int) -> bytes:
    import cv2
    import numpy as np

    rgb = (np.arange(height * width * 3) % 251).astype(np.uint8).reshape(height, width, 3)
    return cv2.imencode(".png", rgb)[1].tobytes()


def jpeg_declaring(height: int, width: int) -> bytes:
    """A small JPEG whose frame header (SOF0) claims height x width."""
    import cv2
    import numpy as np

    data = bytearray(cv2.imencode(".jpg", np.full((8, 8, 3), 128, np.uint8))[1].tobytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def png_declaring(height: int, width: int) -> bytes:
    """A PNG whose IHDR claims height x width (CRC fixed up), with the pixel
    data of a 1x1 image."""
    data = bytearray(png_strip(1, 1))
    data[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    return bytes(data)


CASES = {
    "png_1x8000": lambda: png_strip(1, 8000),
    "png_1x100000": lambda: png_strip(1, 100000),
    "png_8000x1": lambda: png_strip(8000, 1),
    "jpeg_declares_30000x30000": lambda: jpeg_declaring(30000, 30000),
    "png_declares_60000x60000": lambda: png_declaring(60000, 60000),
}


def child(case: str, unbounded: bool) -> dict:
    if unbounded:  # as before issue 12: OpenCV's own default limit, 2**30 pixels
        os.environ["OPENCV_IO_MAX_IMAGE_PIXELS"] = str(1 << 30)
    import resource

    import cv2
    import numpy as np
    import skimage.data

    from netscope.client import Client, NetscopeError
    from netscope.server import imaging
    from netscope.server.app import ModelSpec, Server, ServerConfig

    if unbounded:
        def old_decode(data, *, max_pixels=imaging.DEFAULT_MAX_PIXELS, index=0):
            img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            if img is None:
                raise imaging.InvalidArgument(f"image {index}: could not decode")
            imaging.check_pixels(img.shape[0], img.shape[1], max_pixels, index)
            return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)

        imaging.decode = old_decode
        imaging.fit = lambda rgb, r: imaging.center_crop(imaging.resize_shorter(rgb, r.resize, r.interpolation),
                                                         r.crop)
    data = CASES[case]()
    srv = Server(ServerConfig(address="127.0.0.1:0", models=[ModelSpec("r18", "resnet18")], device="cpu",
                              store="/nonexistent")).start()
    try:
        with Client(srv.address, timeout=600) as c:
            c.wait_ready()
            c.predict("r18", cv2.imencode(".jpg", skimage.data.chelsea())[1].tobytes())
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            start = time.perf_counter()
            try:
                c.predict("r18", data)
                status = "OK"
            except NetscopeError as exc:
                status = f"{exc.code.name}: {exc.message[:100]}"
            seconds = time.perf_counter() - start
            after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    finally:
        srv.stop(grace=0)
    return {"case": case, "bytes": len(data), "unbounded": unbounded, "status": status,
            "seconds": round(seconds, 3), "peak_rss_growth_mb": round((after - before) / 1024, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--unbounded", action="store_true", help="measure the preprocessing before issue 12")
    ap.add_argument("--case", action="append", choices=sorted(CASES), help="default: all")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.unbounded)))
        return
    for case in args.case or list(CASES):
        cmd = [sys.executable, __file__, "--child", case] + (["--unbounded"] if args.unbounded else [])
        out = subprocess.run(cmd, capture_output=True, text=True)
        lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
        print(lines[-1] if lines else json.dumps({"case": case, "failed": out.returncode,
                                                  "stderr": out.stderr[-300:]}), flush=True)


if __name__ == "__main__":
    main()
