#!/usr/bin/env bash
# Fills .whl/ (git-ignored) with the wheels the GPU machine lacks, for its
# CPython 3.12 on manylinux x86_64, so scripts/gpu_check.sh can install them
# there without internet (the device README's recipe). Run it HERE, where pip
# reaches PyPI, after scripts/setup.sh; then carry ".whl" in the run call.
#
# The GPU image already has torch 2.11, torchvision 0.26, numpy, OpenCV,
# pytest(-benchmark, -timeout), scikit-image/-learn, pillow, tqdm, matplotlib,
# prometheus-client and tensorboard. It lacks captum and grad-cam (+ ttach).
# grpcio and protobuf are there at unknown versions, but our generated stubs
# (proto/netscope/v1) refuse older runtimes, so they travel at our versions.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES="captum grad-cam ttach grpcio grpcio-health-checking grpcio-reflection protobuf"

# Start empty: two versions of one package stop the whole install there.
rm -rf .whl
mkdir -p .whl

for name in $PACKAGES; do
    version=$(.venv/bin/pip show "$name" 2>/dev/null | sed -n 's/^Version: //p')
    [ -n "$version" ] || { echo "gpu_wheels: $name is not in .venv (run scripts/setup.sh)" >&2; exit 1; }
    # pip matches manylinux_2_N exactly, hence the list; pure-Python wheels match anyway.
    if ! python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "$name==$version" 2>/tmp/gpu_wheels.err
    then
        # Some releases are sdists only (grad-cam 1.5.7): build the wheel here. Only a
        # pure-Python one (py3-none-any) is safe: this machine's Python is not the GPU's.
        echo "gpu_wheels: no wheel of $name==$version on the index; building it from the sdist"
        .venv/bin/pip wheel -q --no-deps --no-binary "$name" "$name==$version" -w .whl
        ls .whl | grep -qi "^${name//-/_}-$version-py3-none-any.whl$" \
            || { echo "gpu_wheels: $name==$version did not build as py3-none-any" >&2; exit 1; }
    fi
done

# netscope itself, so the device imports netscope.* without building anything.
# A stale build/ could smuggle deleted modules into the wheel.
rm -rf build
.venv/bin/pip wheel -q --no-deps --no-build-isolation . -w .whl
rm -rf build
# Which commit the wheel was built from: gpu_check.sh prints it in its log.
echo "$(git describe --always --dirty) built $(date -u +%FT%TZ)" > .whl/SOURCE

echo "wheels in .whl:"
ls -l .whl/*.whl | awk '{printf "  %8.1f KiB  %s\n", $5 / 1024, substr($9, 6)}'
# What they need beyond themselves (--no-deps fetched none): check it is on the image.
for w in .whl/*.whl; do
    deps=$(unzip -p "$w" '*.dist-info/METADATA' | sed -n 's/^Requires-Dist: //p' | { grep -v 'extra ==' || true; } | tr '\n' ';')
    echo "  $(basename "$w"): ${deps:-no requirements}"
done
echo "size of .whl: $(du -sh .whl | cut -f1)"
# What travels: tracked + untracked-not-ignored files, plus the carried .whl (limit 64 MiB).
tree_bytes=$({ git ls-files -z; git ls-files -z --others --exclude-standard; } | xargs -0 -r stat -c %s 2>/dev/null \
    | awk '{s += $1} END {print s + 0}')
whl_bytes=$(du -sb .whl | cut -f1)
total=$((tree_bytes + whl_bytes))
printf 'travelling: working tree %.1f MiB + .whl %.1f MiB = %.1f MiB (limit 64 MiB)\n' \
    "$(echo "$tree_bytes / 1048576" | bc -l)" "$(echo "$whl_bytes / 1048576" | bc -l)" "$(echo "$total / 1048576" | bc -l)"
[ "$total" -lt $((48 * 1048576)) ] || { echo "gpu_wheels: over 48 MiB, too close to the 64 MiB limit" >&2; exit 1; }
