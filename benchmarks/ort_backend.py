"""Predict's runtimes on the CPU, one run, interleaved: the onnxruntime
backend, the torch backend (eager) and torch.compile, on the same model and
JPEG, through the server's own Predict code (InspectorService.predict_response,
no gRPC). Batch 1 from one caller, then 64 callers of one image with dynamic
batching (max_batch_size 64). Prints JSON with medians and ratios.

    .venv/bin/python benchmarks/ort_backend.py --rounds 5 --block 20 --json-out ort.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time

import torch


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--block", type=int, default=20, help="batch-1 calls per model per round")
    p.add_argument("--callers", type=int, default=64)
    p.add_argument("--per-caller", type=int, default=2, help="calls per caller per round at --callers")
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--json-out", default="")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    import cv2
    import skimage.data

    from netscope.server.models.registry import Registry
    from netscope.server.rpc.service import InspectorService, Limits
    from netscope.v1 import inspector_pb2 as pb

    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(skimage.data.chelsea(), cv2.COLOR_RGB2BGR))
    image = pb.Image(encoded=buf.tobytes())
    reg = Registry("models", default_device="cpu")
    kinds = {"onnxruntime": dict(backend="onnxruntime"), "torch": {}}
    if not args.no_compile:
        kinds["compile"] = dict(compile="default")
    load_s = {}
    for name, options in kinds.items():
        t = time.perf_counter()
        reg.load(name, args.arch, **options)
        load_s[name] = time.perf_counter() - t
        reg.load(name + "_b", args.arch, max_batch_size=args.callers, max_delay_ms=5, max_queue=4 * args.callers,
                 **({**options, "compile_batch_sizes": [1, args.callers]} if "compile" in options else options))
    svc = InspectorService(reg, Limits(max_images=args.callers))
    one = {n: [] for n in kinds}
    many = {n: [] for n in kinds}
    for _ in range(3):  # warm
        for n in kinds:
            svc.predict_response(pb.PredictRequest(model=n, images=[image], top_k=5))
    for r in range(args.rounds):
        order = list(kinds) if r % 2 == 0 else list(reversed(kinds))
        for n in order:
            req = pb.PredictRequest(model=n, images=[image], top_k=5)
            for _ in range(args.block):
                t = time.perf_counter()
                svc.predict_response(req)
                one[n].append((time.perf_counter() - t) * 1e3)
        for n in order:
            req = pb.PredictRequest(model=n + "_b", images=[image], top_k=5)
            barrier = threading.Barrier(args.callers + 1)

            def caller():
                barrier.wait()
                for _ in range(args.per_caller):
                    svc.predict_response(req)

            threads = [threading.Thread(target=caller) for _ in range(args.callers)]
            for t in threads:
                t.start()
            barrier.wait()
            t0 = time.perf_counter()
            for t in threads:
                t.join()
            many[n].append(args.callers * args.per_caller / (time.perf_counter() - t0))
    out = {"arch": args.arch, "threads": args.threads, "rounds": args.rounds, "load_s": load_s,
           "batch1_p50_ms": {n: statistics.median(v) for n, v in one.items()},
           f"callers{args.callers}_images_per_s": {n: statistics.median(v) for n, v in many.items()},
           "onnx_export_ms": reg.get("onnxruntime").ort.export_s * 1e3}
    b1, tp = out["batch1_p50_ms"], out[f"callers{args.callers}_images_per_s"]
    out["ratios"] = {"batch1 eager/onnxruntime (speed-up)": b1["torch"] / b1["onnxruntime"],
                     f"callers{args.callers} onnxruntime/eager images/s": tp["onnxruntime"] / tp["torch"]}
    if "compile" in kinds:
        out["ratios"]["batch1 compile/onnxruntime"] = b1["compile"] / b1["onnxruntime"]
        out["ratios"]["batch1 eager/compile"] = b1["torch"] / b1["compile"]
        out["ratios"][f"callers{args.callers} onnxruntime/compile images/s"] = tp["onnxruntime"] / tp["compile"]
    text = json.dumps(out, indent=2)
    print(text)
    if args.json_out:
        open(args.json_out, "w").write(text)
    svc.close()
    for m in list(reg.list()):
        reg.unload(m.id)
    return 0


if __name__ == "__main__":
    sys.exit(main())
