#!/usr/bin/env bash
# Every GPU check and figure in one command, for a lent GPU machine (offline;
# 15 minutes of device time a session, 10 a command). docs/PERFORMANCE.md,
# "Running the GPU checks", says how to call it. Here, first:
#     scripts/gpu_wheels.sh            # fills .whl/ with what the machine lacks
# There, from the repo root, with $OUT set (its files come back):
#     bash scripts/gpu_check.sh
# Dry run on this machine's CPU (tiny sizes, every step):
#     OUT=/tmp/gpucheck PYTHON=.venv/bin/python NETSCOPE_GPU_CHECK_DEVICE=cpu bash scripts/gpu_check.sh
#
# Knobs: PYTHON (python3), NETSCOPE_GPU_CHECK_DEVICE (cuda), NETSCOPE_GPU_CHECK_QUICK
# (1 on the CPU: tiny sizes, batch-1 Grad-CAM only), NETSCOPE_GPU_CHECK_DEADLINE (520 s).
#
# Writes $OUT/gpu_check.log (everything, each step's exit status and time, a
# summary last) and pytest-benchmark JSON: gradcam.json, stream.json,
# stream_overlay.json, serving.json, serving_compile.json (6 files; the
# limit is 8, 16 MiB each, names of letters, digits, '.', '_', '-').
#
# Time budget on an H200: each step's cap [expected]. Caps are also cut to
# what is left of DEADLINE (520 s), so the script ends inside 9 minutes even
# if steps hit their caps (a step left under 10 s is skipped); call it with
# timeout_s 560. The ratio scripts (cap 20 s each) take about a second.
#   install wheels     30 s  [~10]
#   wheel vs tree      20 s  [~1]   the wheel is what runs there: is it the tree?
#   environment        30 s  [~10]
#   CUDA tests        150 s  [~60]  test_transfer.py, test_metrics.py, test_cuda_explain.py, test_cuda_serving.py
#   grad-cam bench     90 s  [~40]  resnet18 224x224, batch 1 and 32
#   stream bench       50 s  [~25]  256 JPEGs, batch 32, 5 rounds
#   stream + overlay   50 s  [~25]
#   netscope bench     60 s  [~30]  resnet50, batch 1 JPEG, service vs in-process
#   serving bench     100 s  [~60]  every pair but compile
#   metric costs       40 s  [~15]  each faithfulness metric, resnet18 224 and the demo's net (log only)
#   onnxruntime GPU    60 s  [~20]  backend onnxruntime on cuda: providers, float16, logits vs torch
#   serving compile   120 s  [~80]  inductor reduce-overhead, resnet50 batch 64:
#                                   the riskiest, so last and in a JSON of its own
# Steps go on when one fails: one failure must not lose the rest of the lease.
set -uo pipefail
cd "$(dirname "$0")/.."

: "${OUT:?set OUT to the folder whose files come back}"
mkdir -p "$OUT"
PYTHON=${PYTHON:-python3}
DEVICE=${NETSCOPE_GPU_CHECK_DEVICE:-cuda}
# QUICK=1: tiny sizes, for a dry run on a CPU (the default there).
QUICK=${NETSCOPE_GPU_CHECK_QUICK:-$([ "$DEVICE" = cpu ] && echo 1 || echo 0)}
DEADLINE=${NETSCOPE_GPU_CHECK_DEADLINE:-520}
PYTEST=("$PYTHON" -m pytest -q -p no:cacheprovider)

if [ "$QUICK" = 1 ]; then
    GRADCAM_SIZE=32 GRADCAM_K=(-k "not 32") STREAM_IMAGES=8 STREAM_BATCH=4 STREAM_ROUNDS=1
    SERVING_OPTS=(--benchmark-max-time=0.2 --benchmark-min-rounds=2) SERVING_CALLERS=8
    CLI_MODEL=resnet18 CLI_REQUESTS=10 CLI_WARMUP=2
else
    GRADCAM_SIZE=224 GRADCAM_K=() STREAM_IMAGES=256 STREAM_BATCH=32 STREAM_ROUNDS=5
    # pytest-benchmark warms up only on PyPy by default; on a GPU the first calls pay cuDNN's and the allocator's first use.
    SERVING_OPTS=(--benchmark-max-time=1.0 --benchmark-min-rounds=10 --benchmark-warmup=on
                  --benchmark-warmup-iterations=3)
    SERVING_CALLERS=64
    CLI_MODEL=resnet50 CLI_REQUESTS=500 CLI_WARMUP=20
fi
# The step functions below run in `bash -c` (timeout needs a command), so they read these from the environment.
export PYTHONUNBUFFERED=1 NETSCOPE_BENCH_DEVICE=$DEVICE PYTHON DEVICE CLI_MODEL CLI_REQUESTS CLI_WARMUP

SUMMARY=()
LAST_RC=0

# step NAME CAP_S COMMAND...: runs COMMAND under timeout (which signals its whole
# process group, servers too), logs exit status and time, never stops the script.
step() {
    local name=$1 cap=$2 left=$((DEADLINE - SECONDS))
    shift 2
    local limit=$((cap < left ? cap : left))
    if [ "$limit" -lt 10 ]; then
        echo "=== $name: skipped, ${left}s left of the ${DEADLINE}s deadline"
        SUMMARY+=("$(printf '%-22s skipped (deadline)' "$name")")
        LAST_RC=-1
        return
    fi
    echo
    echo "=== $name (cap ${limit}s) at $(date -u +%T)"
    local t0=$SECONDS
    timeout -k 5 "$limit" "$@"
    local rc=$? note=""
    { [ "$rc" = 124 ] || [ "$rc" = 137 ]; } && note=" (timed out)"
    echo "=== $name: exit $rc$note after $((SECONDS - t0))s"
    SUMMARY+=("$(printf '%-22s exit %3s %4ss%s' "$name" "$rc" "$((SECONDS - t0))" "$note")")
    LAST_RC=$rc
}

install_wheels() {  # MODE: install (there), check (a dry run with the wheels present) or none
    if [ "$MODE" = none ]; then
        echo "no .whl/: using $PYTHON's own packages (scripts/gpu_wheels.sh fills it)"
        return 0
    fi
    ls .whl
    if [ "$MODE" = check ]; then
        # The wheels are CPython 3.12's (the GPU machine's): only check that they install as one set.
        echo "$PYTHON is not Python 3.12: checking the wheels install for 3.12, then using $PYTHON's own packages"
        rm -rf /tmp/gpu_check_site
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/gpu_check_site \
            --python-version 3.12 --implementation cp --only-binary=:all: \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
            .whl/*.whl
        return
    fi
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
}

# The wheel, not the tree, is what runs there: say so if they differ (the tree
# was edited after gpu_wheels.sh). In Python: unzip and diff may be missing there.
wheel_matches_tree() {
    "$PYTHON" - <<'PY'
import glob, sys, zipfile
from pathlib import Path

wheels = glob.glob(".whl/netscope-*.whl")
if not wheels:
    sys.exit(print("no netscope wheel: netscope comes from the interpreter's own install"))
with zipfile.ZipFile(wheels[0]) as z:
    packed = {n: z.read(n) for n in z.namelist() if n.startswith("netscope/")}
tree = {}
for pkg, src in {"server": "server", "client": "client", "training": "training", "v1": "proto/netscope/v1"}.items():
    for f in Path(src).iterdir():
        if f.is_file() and f.suffix in (".py", ".pyi", ".proto"):
            tree[f"netscope/{pkg}/{f.name}"] = f.read_bytes()
differ = sorted(n for n in packed.keys() | tree.keys() if packed.get(n) != tree.get(n))
for n in differ:
    print("  differs:" if n in packed and n in tree else "  only in the wheel:" if n in packed else "  only in the tree:", n)
print(f"STALE: {wheels[0]} is not the tree; rerun scripts/gpu_wheels.sh" if differ else
      f"{wheels[0]} matches the tree ({len(tree)} files)")
sys.exit(1 if differ else 0)
PY
}

environment() {
    date -u
    echo "source: $(cat .whl/SOURCE 2>/dev/null || git describe --always --dirty 2>/dev/null || echo unknown)"
    echo "$(nproc) cores"
    nvidia-smi 2>&1 | head -15
    "$PYTHON" - <<'PY'
import importlib.metadata as md
import sys

import torch

print("python", sys.version.split()[0], sys.executable)
for name in ("torch", "torchvision", "triton", "numpy", "opencv-python-headless", "grpcio", "grpcio-health-checking",
             "grpcio-reflection", "protobuf", "captum", "grad-cam", "ttach", "pytest", "pytest-benchmark", "netscope"):
    try:
        print(f"  {name:24s} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"  {name:24s} MISSING")
import netscope.server
import netscope.v1.inspector_pb2_grpc  # the stubs check the grpcio and protobuf runtimes on import

print("netscope from", netscope.server.__path__[0])
print("torch threads", torch.get_num_threads(), "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(),
      "available", torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"GPU {p.name}, {p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs, capability {p.major}.{p.minor}")
    print("tf32 matmul", torch.backends.cuda.matmul.allow_tf32, "cudnn tf32", torch.backends.cudnn.allow_tf32)
PY
}

cli_bench() {
    # `netscope bench` against a real server on loopback (untrained seeded weights),
    # the same requests in-process first: prints both p50s and their ratio.
    local store=/tmp/gpu_check_store port server rc
    mkdir -p "$store"
    "$PYTHON" -c 'import cv2, skimage.data; cv2.imwrite("/tmp/chelsea.jpg", cv2.cvtColor(skimage.data.chelsea(), cv2.COLOR_RGB2BGR))' || return 1
    port=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    "$PYTHON" -m netscope.cli serve --address "127.0.0.1:$port" --model "m=$CLI_MODEL" --device "$DEVICE" \
        --store "$store" --log-level WARNING &
    server=$!
    "$PYTHON" -m netscope.cli bench --server "127.0.0.1:$port" --model m --input /tmp/chelsea.jpg \
        --requests "$CLI_REQUESTS" --warmup "$CLI_WARMUP" --in-process --store "$store"
    rc=$?
    kill "$server" 2>/dev/null
    wait "$server" 2>/dev/null
    return $rc
}

main() {
    echo "netscope GPU check: device $DEVICE, quick $QUICK, deadline ${DEADLINE}s, out $OUT"
    local mode=none
    if ls .whl/*.whl >/dev/null 2>&1; then
        mode=check
        "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' && mode=install
    fi
    step "install wheels" 30 env MODE=$mode bash -c "$(declare -f install_wheels); install_wheels"
    if [ $mode = install ] && [ "$LAST_RC" = 0 ]; then
        export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
        echo "PYTHONPATH=$PYTHONPATH"
    fi
    step "wheel vs tree" 20 bash -c "$(declare -f wheel_matches_tree); wheel_matches_tree"
    step "environment" 30 bash -c "$(declare -f environment); environment"

    # The CUDA-only tests skip without CUDA; -rs lists the skips in the log.
    step "CUDA tests" 150 "${PYTEST[@]}" -rs tests/test_transfer.py tests/test_metrics.py tests/test_cuda_explain.py \
        tests/test_cuda_serving.py

    step "grad-cam bench" 90 env NETSCOPE_BENCH_SIZE=$GRADCAM_SIZE "${PYTEST[@]}" tests/bench/test_gradcam_bench.py \
        ${GRADCAM_K[@]+"${GRADCAM_K[@]}"} --benchmark-enable --benchmark-json="$OUT/gradcam.json"
    step "grad-cam ratios" 20 "$PYTHON" tests/bench/gradcam_ratios.py "$OUT/gradcam.json"

    local overlay name json
    for overlay in 0 1; do
        name=stream json=$OUT/stream.json
        [ $overlay = 1 ] && name="stream overlay" json=$OUT/stream_overlay.json
        step "$name bench" 50 env NETSCOPE_STREAM_IMAGES=$STREAM_IMAGES NETSCOPE_STREAM_BATCH=$STREAM_BATCH \
            NETSCOPE_STREAM_ROUNDS=$STREAM_ROUNDS NETSCOPE_STREAM_OVERLAY=$overlay \
            "${PYTEST[@]}" tests/bench/test_stream_bench.py --benchmark-enable --benchmark-json="$json"
        step "$name ratio" 20 "$PYTHON" tests/bench/stream_ratio.py "$json"
    done

    step "netscope bench" 60 bash -c "$(declare -f cli_bench); cli_bench"

    step "serving bench" 100 env NETSCOPE_BENCH_CALLERS=$SERVING_CALLERS "${PYTEST[@]}" \
        tests/bench/test_serving_bench.py -k "not compile" --benchmark-enable "${SERVING_OPTS[@]}" \
        --benchmark-json="$OUT/serving.json"
    step "serving ratios" 20 "$PYTHON" tests/bench/serving_ratios.py "$OUT/serving.json"
    # The onnxruntime backend's GPU providers (issue 18): TensorRT/CUDA first, float32 and float16, the logits
    # against the torch backend's. Skips (says so) when the machine's onnxruntime has no CUDA provider.
    step "onnxruntime GPU" 60 "${PYTEST[@]}" -rs tests/test_onnx_backend.py -k gpu_providers
    # Seconds per image of each faithfulness metric (docs/EXPLANATIONS.md's GPU column), in the log.
    step "metric costs" 40 "$PYTHON" scripts/metric_costs.py --device "$DEVICE" --images "$([ "$QUICK" = 1 ] && echo 1 || echo 5)"
    step "serving compile" 120 env NETSCOPE_BENCH_CALLERS=$SERVING_CALLERS "${PYTEST[@]}" \
        tests/bench/test_serving_bench.py -k compile --benchmark-enable "${SERVING_OPTS[@]}" \
        --benchmark-json="$OUT/serving_compile.json"
    step "compile ratio" 20 "$PYTHON" tests/bench/serving_ratios.py "$OUT/serving_compile.json"

    echo
    echo "=== summary: ${SECONDS}s in all, device $DEVICE, quick $QUICK"
    printf '  %s\n' "${SUMMARY[@]}"
    ls -l "$OUT"
}

main 2>&1 | tee "$OUT/gpu_check.log"
