#!/usr/bin/env bash
# Sets everything up in ./.venv: torch (pinned, as the project is tested), then
# netscope itself, editable, with its training extra. Idempotent.
#
#   scripts/setup.sh        what `netscope serve` and the CLI need
#   scripts/setup.sh test   also everything the tests need: the test, onnx, ray and ui extras,
#                           Debian's headless Chromium (the browser tests drive it), and
#                           .venv-triton, a second virtualenv with tritonclient (its protobuf
#                           pin conflicts with ours), for the Open Inference Protocol tests
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q "torch==${TORCH_VERSION:-2.14.1}" "torchvision==${TORCHVISION_VERSION:-0.29.1}"
if [ "${1:-}" != test ]; then
    .venv/bin/python -m pip install -q -e '.[train]'
    exit 0
fi
.venv/bin/python -m pip install -q -e '.[test,train,onnx,ray,ui]'
if ! command -v chromium >/dev/null 2>&1; then
    SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get install -y -q --no-install-recommends chromium >/dev/null \
        || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q --no-install-recommends chromium >/dev/null; }
fi
[ -x .venv-triton/bin/python ] || "$PYTHON" -m venv .venv-triton
.venv-triton/bin/python -m pip install -q "tritonclient[grpc]>=2.50" numpy
