#!/usr/bin/env bash
# Regenerates the Python stubs beside the .proto (committed, so users need no
# protoc). With --check, generates into a temp dir and fails if the committed
# stubs differ: CI runs that.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
out=proto
if [ "${1:-}" = "--check" ]; then out=$(mktemp -d); fi
# google/rpc/status.proto ships with googleapis-common-protos (a dependency).
rpc_protos=$("$PY" -c 'import os, google.rpc.status_pb2 as m; print(os.path.dirname(os.path.dirname(os.path.dirname(m.__file__))))')
# netscope/v1: netscope's API; netscope/inference: the Open Inference Protocol (KServe v2).
protos="netscope/v1/inspector netscope/inference/grpc_service"
for p in $protos; do
  "$PY" -m grpc_tools.protoc -I proto -I "$rpc_protos" --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" "proto/$p.proto"
done
if [ "${1:-}" = "--check" ]; then
  for p in $protos; do
    for f in "${p}_pb2.py" "${p}_pb2.pyi" "${p}_pb2_grpc.py"; do
      if ! cmp -s "$out/$f" "proto/$f"; then
        echo "proto/$f is stale: run scripts/gen_proto.sh and commit" >&2
        exit 1
      fi
    done
  done
  echo "generated stubs are up to date"
fi
