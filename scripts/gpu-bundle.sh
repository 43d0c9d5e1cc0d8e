#!/usr/bin/env bash
# Packs what a GPU machine without Rust needs to run the CUDA build into gpu-bundle/ (git-ignored,
# under 64 MiB): the CUDA release binary and device-test binary (stripped), the headers dfdx's
# run-time-compiled (NVRTC) kernels include, the paths baked into the binaries, and (with
# --with-data) the Fashion-MNIST IDX files. scripts/gpu-verify.sh runs it all on the GPU machine.
#
#   scripts/build-cuda.sh tests && scripts/gpu-bundle.sh --with-data
#
# Settings: CARGO_TARGET_DIR (default target), FASHION_MNIST_CUDA_TOOLCHAIN (as for build-cuda.sh),
# FASHION_MNIST_DATA (IDX directory for --with-data, default /usr/share/datasets/fashion-mnist).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
bundle=$root/gpu-bundle
with_data=false
for arg in "$@"; do
    case "$arg" in
    --with-data) with_data=true ;;
    *)
        echo "usage: $0 [--with-data]" >&2
        exit 2
        ;;
    esac
done

binary=$target/release/fashion-mnist
if [ ! -x "$binary" ]; then
    echo "error: $binary missing: run scripts/build-cuda.sh tests first" >&2
    exit 1
fi
# The newest device-test binary (cargo names it device-<hash>).
device_tests=$(ls -t "$target"/release/deps/device-* 2>/dev/null | grep -v '\.d$' | head -n1 || true)
if [ -z "$device_tests" ]; then
    echo "error: no device-test binary under $target/release/deps: run scripts/build-cuda.sh tests" >&2
    exit 1
fi
if ! grep -q "cuda_device" "$device_tests" || ! grep -q "lenet5_trains_on_cuda" "$device_tests"; then
    echo "error: $device_tests was not built with --features cuda: run scripts/build-cuda.sh tests" >&2
    exit 1
fi

rm -rf "$bundle"
mkdir -p "$bundle/bin" "$bundle/nvrtc"
strip -o "$bundle/bin/fashion-mnist" "$binary"
strip -o "$bundle/bin/device-tests" "$device_tests"

# dfdx compiles a few kernels at run time (non-contiguous reshape, concat, stack, dtype
# conversion) with include paths fixed at build time: its build OUT_DIR (cuda_utils.cuh) and
# the CUDA include directory. Record both; gpu-verify.sh recreates them on the GPU machine.
out_dir=$(ls -d "$target"/release/build/dfdx-*/out 2>/dev/null | while read -r d; do
    [ -f "$d/cuda_utils.cuh" ] && echo "$d"
done | head -n1)
if [ -z "$out_dir" ]; then
    echo "error: dfdx's build output (cuda_utils.cuh) not found under $target/release/build" >&2
    exit 1
fi
cp "$out_dir"/*.cuh "$bundle/nvrtc/"
# The same path scripts/build-cuda.sh gave the build (CUDA_ROOT/include).
toolchain=${FASHION_MNIST_CUDA_TOOLCHAIN:-$root/target/cuda-toolchain}
include_dir=$(echo "$toolchain"/venv/lib/python3*/site-packages/nvidia/cu13)/include
if ! grep -q "$include_dir" "$binary"; then
    echo "warning: $include_dir is not the include path baked into $binary (other toolchain dir?)" >&2
fi
{
    echo "dfdx_out_dir=$out_dir"
    echo "cuda_include_dir=$include_dir"
    echo "built=$(date -u +%Y-%m-%dT%H:%MZ) commit=$(git -C "$root" rev-parse --short HEAD)"
} >"$bundle/baked-paths"

if $with_data; then
    data=${FASHION_MNIST_DATA:-/usr/share/datasets/fashion-mnist}
    mkdir -p "$bundle/data"
    for name in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
        if [ -f "$data/$name.gz" ]; then
            cp "$data/$name.gz" "$bundle/data/"
        elif [ -f "$data/$name" ]; then
            gzip -c "$data/$name" >"$bundle/data/$name.gz"
        else
            echo "error: $name[.gz] not in $data" >&2
            exit 1
        fi
    done
fi

size=$(du -sm "$bundle" | cut -f1)
echo "gpu-bundle/: ${size} MiB ($(ls "$bundle" | tr '\n' ' '))"
if [ "$size" -ge 64 ]; then
    echo "warning: over 64 MiB: carry the data in a separate call" >&2
fi
