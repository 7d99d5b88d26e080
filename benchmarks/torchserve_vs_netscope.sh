#!/usr/bin/env bash
# TorchServe 0.12 and netscope side by side on CPU, on the same JPEGs.
#
# Sets up TorchServe in its own virtual environment (under $TS_WORK, default
# ./.ts, which git ignores), traces resnet18 with the seeded random weights
# netscope gives `resnet18` with weights `none`, archives it with TorchServe's
# `image_classifier` handler, starts TorchServe (one worker, token auth off,
# no config snapshots) and `netscope serve --model r18=resnet18` on loopback,
# and measures both with the same client code: batch 1, one JPEG per request,
# 1 and then 4 concurrent callers, a fixed number of requests after a warm-up,
# in alternating rounds. Prints a side-by-side table and the ratios, and stops
# both servers on any exit. Not part of the test suite.
#
#   benchmarks/torchserve_vs_netscope.sh
#   REQUESTS=300 ROUNDS=3 CONCURRENCY="1 2 4" benchmarks/torchserve_vs_netscope.sh
#
# Needs: ./.venv from scripts/setup.sh (made if absent), Java 11+ (17 here),
# and the package registry for the first run's TorchServe environment.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${TS_WORK:-$ROOT/.ts}
REQUESTS=${REQUESTS:-100}          # measured requests per server, caller count and round
WARMUP=${WARMUP:-20}               # requests before measuring, each time
ROUNDS=${ROUNDS:-4}                # rounds per caller count; who goes first alternates
CONCURRENCY=${CONCURRENCY:-"1 4"}  # caller counts
TORCH_VERSION=${TORCH_VERSION:-2.14.1}
TORCHVISION_VERSION=${TORCHVISION_VERSION:-0.29.1}
TORCHSERVE_VERSION=${TORCHSERVE_VERSION:-0.12.0}
CAPTUM_VERSION=${CAPTUM_VERSION:-0.9.0}   # TorchServe's vision handlers import captum
START_TIMEOUT=${START_TIMEOUT:-300}       # seconds each server may take to become ready
RUN_TIMEOUT=${RUN_TIMEOUT:-1800}          # seconds the whole measurement may take

NS_PY=$ROOT/.venv/bin/python
TS_VENV=$WORK/venv
TS_HOME=$WORK/torchserve   # TorchServe's config, model store, logs, temp dir (pid file, sockets)
PREP=$WORK/prep            # JPEGs and the traced model
mkdir -p "$WORK" "$TS_HOME/model-store" "$TS_HOME/logs" "$TS_HOME/tmp" "$PREP"

say() { printf '\n== %s\n' "$*"; }

# ------------------------------------------------------------------ stop on any exit
TS_WRAPPER_PID="" ; NS_PID=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "$NS_PID" ] && kill -0 "$NS_PID" 2>/dev/null; then
        kill -TERM "$NS_PID" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$NS_PID" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$NS_PID" 2>/dev/null || true
    fi
    local java_pid=""
    [ -f "$TS_HOME/tmp/.model_server.pid" ] && java_pid=$(cat "$TS_HOME/tmp/.model_server.pid" 2>/dev/null || true)
    if [ -n "$java_pid" ] && kill -0 "$java_pid" 2>/dev/null; then
        local workers
        workers=$(pgrep -P "$java_pid" 2>/dev/null || true)   # the Python backend worker(s)
        kill -TERM "$java_pid" 2>/dev/null || true
        for _ in $(seq 150); do kill -0 "$java_pid" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$java_pid" 2>/dev/null || true
        for w in $workers; do kill -KILL "$w" 2>/dev/null || true; done
        rm -f "$TS_HOME/tmp/.model_server.pid"
    fi
    if [ -n "$TS_WRAPPER_PID" ]; then
        kill -TERM "$TS_WRAPPER_PID" 2>/dev/null || true
        wait "$TS_WRAPPER_PID" 2>/dev/null || true
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------------------ environments
command -v java >/dev/null || { echo "TorchServe needs Java 11+ (17 is what we test with); none on PATH" >&2; exit 1; }
JAVA_MAJOR=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)
[ "${JAVA_MAJOR:-0}" -ge 11 ] || { echo "TorchServe needs Java 11+, found ${JAVA_MAJOR:-none}" >&2; exit 1; }
[ -x "$NS_PY" ] || { say "netscope's .venv is missing: running scripts/setup.sh"; "$ROOT/scripts/setup.sh"; }

TS_SPEC="torch==$TORCH_VERSION torchvision==$TORCHVISION_VERSION torchserve==$TORCHSERVE_VERSION torch-model-archiver==$TORCHSERVE_VERSION pyyaml captum==$CAPTUM_VERSION"
if [ "$(cat "$TS_VENV/.bench-spec" 2>/dev/null)" != "$TS_SPEC" ]; then
    say "TorchServe environment in $TS_VENV: $TS_SPEC"
    [ -x "$TS_VENV/bin/python" ] || python3 -m venv "$TS_VENV"
    "$TS_VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
    # shellcheck disable=SC2086
    "$TS_VENV/bin/python" -m pip install -q $TS_SPEC
    echo "$TS_SPEC" > "$TS_VENV/.bench-spec"
fi

# ------------------------------------------------------------------ model and images
say "images and the traced model in $PREP"
"$NS_PY" -W ignore::FutureWarning "$ROOT/benchmarks/torchserve_client.py" prepare "$PREP"
IMAGES=("$PREP"/chelsea.jpg "$PREP"/astronaut.jpg "$PREP"/coffee.jpg)
"$TS_VENV/bin/torch-model-archiver" --model-name r18 --version 1.0 --serialized-file "$PREP/r18.pt" \
    --handler image_classifier --export-path "$TS_HOME/model-store" --force

# ------------------------------------------------------------------ loopback ports
read -r P_INF P_MGT P_MET P_GINF P_GMGT P_WORKER P_NS < <("$NS_PY" - <<'EOF'
import socket
socks = [socket.socket() for _ in range(7)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
for s in socks:
    s.close()
EOF
)

# ------------------------------------------------------------------ TorchServe
cat > "$TS_HOME/config.properties" <<EOF
inference_address=http://127.0.0.1:$P_INF
management_address=http://127.0.0.1:$P_MGT
metrics_address=http://127.0.0.1:$P_MET
grpc_inference_address=127.0.0.1
grpc_inference_port=$P_GINF
grpc_management_address=127.0.0.1
grpc_management_port=$P_GMGT
initial_worker_port=$P_WORKER
default_workers_per_model=1
model_store=$TS_HOME/model-store
load_models=r18=r18.mar
disable_system_metrics=true
EOF
say "starting TorchServe $TORCHSERVE_VERSION on 127.0.0.1:$P_INF (one worker, logs in $TS_HOME/logs)"
(
    cd "$TS_HOME"
    export TMPDIR="$TS_HOME/tmp" TEMP="$TS_HOME/tmp" LOG_LOCATION="$TS_HOME/logs" METRICS_LOCATION="$TS_HOME/logs"
    exec "$TS_VENV/bin/torchserve" --start --foreground --ts-config "$TS_HOME/config.properties" \
        --model-store "$TS_HOME/model-store" --disable-token-auth --ncs
) > "$TS_HOME/logs/stdout.log" 2>&1 &
TS_WRAPPER_PID=$!

say "starting netscope on 127.0.0.1:$P_NS"
"$ROOT/.venv/bin/netscope" serve --address "127.0.0.1:$P_NS" --model r18=resnet18 --device cpu \
    --store "$WORK/netscope-store" --log-level WARNING > "$WORK/netscope.log" 2>&1 &
NS_PID=$!

deadline=$((SECONDS + START_TIMEOUT))
until [ "$(curl -s -o /dev/null -w '%{http_code}' -X POST --data-binary @"${IMAGES[0]}" \
            -H 'Content-Type: application/octet-stream' "http://127.0.0.1:$P_INF/predictions/r18")" = 200 ]; do
    if ! kill -0 "$TS_WRAPPER_PID" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
        echo "TorchServe did not answer a prediction within ${START_TIMEOUT}s; its log:" >&2
        tail -n 40 "$TS_HOME/logs/stdout.log" >&2
        exit 1
    fi
    sleep 1
done
echo "TorchServe answers"
kill -0 "$NS_PID" 2>/dev/null || { echo "netscope serve exited; its log:" >&2; cat "$WORK/netscope.log" >&2; exit 1; }

# ------------------------------------------------------------------ measure
# CPU seconds (user + system) a set of processes has used so far, to tell what
# each server costs, idle or busy, over the measurement.
cpu_seconds() {
    local total=0 pid
    for pid in "$@"; do
        [ -r "/proc/$pid/stat" ] || continue
        total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
    done
    awk -v t="$total" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.1f", t / hz}'
}
TS_JAVA=$(cat "$TS_HOME/tmp/.model_server.pid")
TS_PIDS="$TS_JAVA $(pgrep -P "$TS_JAVA" | tr '\n' ' ')"
TS_CPU0=$(cpu_seconds $TS_PIDS); NS_CPU0=$(cpu_seconds "$NS_PID")
STAMP=$(date +%Y%m%d-%H%M%S)
say "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p' | head -1), load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "torch $TORCH_VERSION / torchvision $TORCHVISION_VERSION on both sides; TorchServe $TORCHSERVE_VERSION; $(java -version 2>&1 | head -1)"
# shellcheck disable=SC2086
timeout "$RUN_TIMEOUT" "$NS_PY" "$ROOT/benchmarks/torchserve_client.py" run \
    --torchserve "http://127.0.0.1:$P_INF" --netscope "127.0.0.1:$P_NS" --images "${IMAGES[@]}" \
    --concurrency $CONCURRENCY --requests "$REQUESTS" --warmup "$WARMUP" --rounds "$ROUNDS" --in-process \
    --json "$WORK/results-$STAMP.json" | tee "$WORK/results-$STAMP.txt" && rc=0 || rc=$?
{
    echo "CPU seconds used during the measurement: TorchServe (frontend + worker) $(awk -v a="$(cpu_seconds $TS_PIDS)" -v b="$TS_CPU0" 'BEGIN {printf "%.1f", a - b}'), netscope server $(awk -v a="$(cpu_seconds "$NS_PID")" -v b="$NS_CPU0" 'BEGIN {printf "%.1f", a - b}')"
    echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee -a "$WORK/results-$STAMP.txt"
exit "$rc"
