#!/usr/bin/env bash
# Predict latency on a CPU server, idle and while another client loops a long
# explanation (Score-CAM by default) on the same model: docs/PERFORMANCE.md,
# "A Predict does not wait out a Score-CAM".
#
#     benchmarks/predict_under_explain.sh                 # resnet18, score_cam, 30 Predicts each
#     METHOD=ablation_cam REQUESTS=50 benchmarks/predict_under_explain.sh
#
# Prints `netscope bench --json` for both runs. Uses a free loopback port and a
# temporary store (seeded weights: nothing is downloaded).
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${MODEL:-resnet18} METHOD=${METHOD:-score_cam} REQUESTS=${REQUESTS:-30}
NETSCOPE=.venv/bin/netscope
work=$(mktemp -d)
port=$(.venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
.venv/bin/python -c "import cv2, skimage.data; cv2.imwrite('$work/chelsea.jpg', cv2.cvtColor(skimage.data.chelsea(), cv2.COLOR_RGB2BGR))"
$NETSCOPE serve --address 127.0.0.1:$port --model m=$MODEL --store "$work/store" >"$work/serve.log" 2>&1 &
server=$!
load=
trap 'kill $load $server 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 120); do $NETSCOPE models --server 127.0.0.1:$port >/dev/null 2>&1 && break; sleep 0.5; done
bench() { $NETSCOPE bench --server 127.0.0.1:$port --model m --input "$work/chelsea.jpg" --json "$@"; }

echo "== idle"
bench --requests "$REQUESTS"
bench --rpc explain --method "$METHOD" --duration 3600 --requests 1000000 >/dev/null 2>&1 &
load=$!
sleep 8  # the explanation loop is under way
echo "== while $METHOD runs"
bench --requests "$REQUESTS" --warmup 0 --timeout 300
