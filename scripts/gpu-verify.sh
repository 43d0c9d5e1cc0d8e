#!/usr/bin/env bash
# Runs on a machine WITH an NVIDIA GPU (no Rust needed), from the repository root, with the
# gpu-bundle/ made by scripts/gpu-bundle.sh: the device tests, then the GPU benchmarks (LeNet-5
# epochs beside PyTorch eager when a Python with torch is found, VGG-16 / ResNet-50 extraction,
# the VGG-16 head), and writes everything to ${OUT:-.}/gpu-results.md (machine, date, numbers).
#
#   scripts/gpu-verify.sh [tests|bench|all]      (default: all)
#   scripts/gpu-verify.sh report-start            the whole study on the GPU, in the background
#   scripts/gpu-verify.sh report-status           its progress; when done, report.html and
#                                                 results.json go to $OUT
# The study needs data/weights/vgg16_imagenet.safetensors (58 MB: carry it in its own call) and
# runs longer than one call; runs/report-cuda/ keeps its state (a rerun resumes).
#
# Settings: CUDA_LIBS (directory with libcublas.so.13, libcublasLt.so.13, libnvrtc.so.13; default:
# PyTorch's bundled CUDA 13 libraries or /usr/local/cuda), TORCH_PYTHON (python with torch),
# FASHION_MNIST_DATA (IDX files; default gpu-bundle/data), EXTRACT_IMAGES (default 70000).
set -uo pipefail
mode=${1:-all}
bundle=gpu-bundle
out=${OUT:-.}
results=$out/gpu-results.md
extract_images=${EXTRACT_IMAGES:-70000}
fail() {
    echo "error: $*" >&2
    exit 1
}
[ -x "$bundle/bin/fashion-mnist" ] || fail "$bundle/bin/fashion-mnist missing: make it with scripts/gpu-bundle.sh"
export FASHION_MNIST_DATA=${FASHION_MNIST_DATA:-$PWD/$bundle/data}
[ -f "$FASHION_MNIST_DATA/train-images-idx3-ubyte.gz" ] ||
    fail "no Fashion-MNIST IDX files in $FASHION_MNIST_DATA (scripts/gpu-bundle.sh --with-data)"

# The CUDA 13 libraries the binary links: cuBLAS(Lt) and NVRTC (the driver brings libcuda).
if [ -z "${CUDA_LIBS:-}" ]; then
    for candidate in /opt/torch/.venv/lib/python3*/site-packages/nvidia/cu13/lib \
        /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
        if [ -e "$candidate/libcublas.so.13" ]; then
            CUDA_LIBS=$candidate
            break
        fi
    done
fi
[ -n "${CUDA_LIBS:-}" ] || fail "libcublas.so.13 not found; set CUDA_LIBS to the directory holding the CUDA 13 libraries"
export LD_LIBRARY_PATH=$CUDA_LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
for lib in libcublas.so.13 libcublasLt.so.13 libnvrtc.so.13; do
    [ -e "$CUDA_LIBS/$lib" ] || echo "warning: $lib not in $CUDA_LIBS" >&2
done

# Recreate the include paths baked in for dfdx's run-time-compiled kernels.
# shellcheck disable=SC1091
. "$bundle/baked-paths"
if mkdir -p "$dfdx_out_dir" 2>/dev/null; then
    cp "$bundle"/nvrtc/*.cuh "$dfdx_out_dir/"
else
    echo "warning: cannot create $dfdx_out_dir: kernels dfdx compiles at run time will fail" >&2
fi
if [ ! -e "$cuda_include_dir/cuda_fp16.h" ]; then
    headers=""
    for candidate in "$(dirname "$CUDA_LIBS")/include" /usr/local/cuda/include; do
        if [ -e "$candidate/cuda_fp16.h" ]; then
            headers=$candidate
            break
        fi
    done
    if [ -n "$headers" ] && mkdir -p "$(dirname "$cuda_include_dir")" 2>/dev/null; then
        ln -sfn "$headers" "$cuda_include_dir"
    else
        echo "warning: CUDA headers for $cuda_include_dir not found/linked" >&2
    fi
fi

if [ -z "${TORCH_PYTHON:-}" ]; then
    for candidate in /opt/torch/.venv/bin/python3 python3; do
        if "$candidate" -c "import torch" >/dev/null 2>&1; then
            TORCH_PYTHON=$candidate
            break
        fi
    done
fi

report_dir=runs/report-cuda
case "$mode" in
report-start)
    [ -f data/weights/vgg16_imagenet.safetensors ] ||
        fail "data/weights/vgg16_imagenet.safetensors missing (carry data/weights)"
    mkdir -p "$report_dir"
    nohup "$bundle/bin/fashion-mnist" --device cuda report --data "$FASHION_MNIST_DATA" \
        --out "$report_dir" >"$report_dir.log" 2>&1 &
    echo "started (pid $!): scripts/gpu-verify.sh report-status shows progress"
    exit 0
    ;;
report-status)
    tail -c 3000 "$report_dir.log" | tr '\r' '\n' | tail -n 15
    if [ -f "$report_dir/results.json" ] && ! pgrep -f "fashion-mnist --device cuda report" >/dev/null; then
        mkdir -p "$out"
        cp "$report_dir/report.html" "$report_dir/results.json" "$report_dir.log" "$out/"
        echo "done: report.html, results.json and the log are in $out"
    fi
    exit 0
    ;;
esac

mkdir -p "$out"
{
    echo "# GPU verification"
    echo
    echo "- date: $(date -u +%Y-%m-%dT%H:%MZ)"
    echo "- bundle: $(grep built= "$bundle/baked-paths" | cut -d= -f2-)"
    echo "- GPU: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo unknown)"
    echo "- CPU: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
    echo "- CUDA libraries: $CUDA_LIBS"
    echo "- PyTorch: ${TORCH_PYTHON:-not found}"
} >"$results"

status=0
section() {
    echo
    echo "## $1"
    echo
}
if [ "$mode" = tests ] || [ "$mode" = all ]; then
    section "Device tests (tests/device.rs, CPU composite and CUDA)" >>"$results"
    # One test at a time: one GPU, and the CPU tests switch a process-wide setting.
    if "$bundle/bin/device-tests" --test-threads 1 2>&1 | tee -a "$results.log" |
        grep -E "^test |test result|panicked at|relative error|no usable|accuracy" >>"$results"; then
        grep -q "test result: ok" "$results" || status=1
    else
        status=1
    fi
fi
if [ "$mode" = bench ] || [ "$mode" = all ]; then
    bin=$bundle/bin/fashion-mnist
    torch_args=()
    [ -n "${TORCH_PYTHON:-}" ] && torch_args=(--torch "$TORCH_PYTHON")
    {
        section "LeNet-5, batch 32, 48,000 images per epoch"
        echo '```'
        "$bin" --device cuda bench --data "$FASHION_MNIST_DATA" --epochs 3 "${torch_args[@]}" 2>&1 || status=1
        echo '```'
        section "Same on this machine's CPU ($(nproc) cores)"
        echo '```'
        "$bin" --device cpu bench --data "$FASHION_MNIST_DATA" --epochs 2 2>&1 || status=1
        echo '```'
        section "VGG-16 extraction ($extract_images images, 32x32, batch 64) and head epochs"
        echo '```'
        "$bin" --device cuda bench --backbone vgg16 --data "$FASHION_MNIST_DATA" \
            --extract-images "$extract_images" --epochs 2 2>&1 || status=1
        echo '```'
        section "ResNet-50 extraction ($extract_images images)"
        echo '```'
        "$bin" --device cuda bench --backbone resnet50 --data "$FASHION_MNIST_DATA" \
            --extract-images "$extract_images" --epochs 0 2>&1 || status=1
        echo '```'
    } >>"$results"
fi
cat "$results"
exit $status
