#!/usr/bin/env bash
# Builds (or type-checks) the `cuda` feature on a machine WITHOUT a GPU or a CUDA toolkit.
#
#   scripts/build-cuda.sh check   cargo clippy/check --features cuda --all-targets (nvcc only; CI runs this)
#   scripts/build-cuda.sh build   release binary target/release/fashion-mnist with CUDA support
#   scripts/build-cuda.sh tests   also the release test binaries (cargo test --no-run), for a GPU machine
#   scripts/build-cuda.sh env     print the environment the build uses (eval "$(... env)")
#
# dfdx's `cuda` feature (through cudarc 0.9) compiles CUDA kernels to PTX with nvcc, asks
# `nvidia-smi` for the GPU's compute capability, and links libcuda, libnvrtc, libcublas(Lt) and
# build time. Debian has no CUDA toolkit, but NVIDIA publishes its pieces on PyPI;
# this script installs CUDA 13.0 ones into a virtual environment (~1.2 GB for `build`, less for
# `check`), answers the compute-capability question with a stand-in `nvidia-smi`
# (CUDA_COMPUTE_CAP, default 90 = H100), and links against a stand-in libcuda.so whose functions
# only return an error: the real driver provides libcuda.so.1 at run time.
# CUDA 13.0 (not newer) on purpose: its PTX is what a CUDA 13.0 driver (580) can load.
#
# Settings (environment): FASHION_MNIST_CUDA_TOOLCHAIN (default target/cuda-toolchain),
# CUDA_COMPUTE_CAP (default 90), PYTHON (default python3).
set -euo pipefail

mode=${1:-build}
shift || true
root=$(cd "$(dirname "$0")/.." && pwd)
toolchain=${FASHION_MNIST_CUDA_TOOLCHAIN:-$root/target/cuda-toolchain}
compute_cap=${CUDA_COMPUTE_CAP:-90}
python=${PYTHON:-python3}

case "$mode" in
check | build | tests | env) ;;
*)
    echo "usage: $0 check|build|tests|env [extra cargo arguments]" >&2
    exit 2
    ;;
esac

# Wheels pinned to CUDA 13.0. `check` compiles kernels but links nothing.
check_wheels=(nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88
    nvidia-cuda-runtime==13.0.96 "nvidia-cuda-cccl==13.0.*")
link_wheels=(nvidia-cuda-nvrtc==13.0.88 "nvidia-cublas>=13.0,<13.1")

venv=$toolchain/venv
if [ ! -x "$venv/bin/python" ]; then
    if ! "$python" -m venv "$venv" >/dev/null 2>&1; then
        echo "error: '$python -m venv' failed; install python3-venv (Debian: apt-get install -y python3-venv)" >&2
        exit 1
    fi
fi
wheels=("${check_wheels[@]}")
if [ "$mode" != check ]; then
    wheels+=("${link_wheels[@]}")
fi
stamp=$toolchain/installed-$(echo "${wheels[*]}" | sha256sum | cut -c1-16)
if [ ! -e "$stamp" ]; then
    echo "installing the CUDA 13.0 toolchain from PyPI into $venv ..." >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps "${wheels[@]}"
    touch "$stamp"
fi
cuda_root=$(echo "$venv"/lib/python3*/site-packages/nvidia/cu13)
if [ ! -x "$cuda_root/bin/nvcc" ]; then
    echo "error: nvcc not found under $cuda_root after installing ${check_wheels[0]}" >&2
    exit 1
fi

# Stand-in nvidia-smi: dfdx's build script runs it even when CUDA_COMPUTE_CAP is set.
shim=$toolchain/shim
mkdir -p "$shim"
cat >"$shim/nvidia-smi" <<EOF
#!/bin/sh
# Stand-in written by scripts/build-cuda.sh: only answers dfdx's build-time question.
printf 'compute_cap\n%s\n' "$(echo "$compute_cap" | sed 's/^\(.*\)\(.\)$/\1.\2/')"
EOF
chmod +x "$shim/nvidia-smi"

link=$toolchain/link
rustflags=${RUSTFLAGS:-}
if [ "$mode" != check ]; then
    # Stand-in libcuda.so: every driver function cudarc's bindings name, returning
    # CUDA_ERROR_UNKNOWN (999). Only the linker sees it; the driver's libcuda.so.1 runs.
    mkdir -p "$link"
    if [ ! -e "$link/libcuda.so" ]; then
        (cd "$root" && cargo fetch --quiet)
        cargo_home=${CARGO_HOME:-$HOME/.cargo}
        bindings=$(ls "$cargo_home"/registry/src/*/cudarc-0.9.15/src/driver/sys.rs | head -n1)
        grep -o 'pub fn cu[A-Za-z0-9_]*' "$bindings" | sort -u |
            sed 's/pub fn \(.*\)/int \1(void) { return 999; }/' >"$link/libcuda_stub.c"
        cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$link/libcuda.so" "$link/libcuda_stub.c"
    fi
    for lib in nvrtc cublas cublasLt; do
        target=$(ls "$cuda_root"/lib/lib$lib.so.* 2>/dev/null | grep -v alt | head -n1)
        if [ -z "$target" ]; then
            echo "error: lib$lib.so.* not found under $cuda_root/lib" >&2
            exit 1
        fi
        ln -sf "$target" "$link/lib$lib.so"
    done
    rustflags="$rustflags -L native=$link"
fi

export CUDA_ROOT=$cuda_root
export CUDA_COMPUTE_CAP=$compute_cap
export PATH=$cuda_root/bin:$shim:$PATH
export RUSTFLAGS=$rustflags

cd "$root"
case "$mode" in
env)
    printf 'export CUDA_ROOT=%q CUDA_COMPUTE_CAP=%q PATH=%q RUSTFLAGS=%q\n' \
        "$CUDA_ROOT" "$CUDA_COMPUTE_CAP" "$PATH" "$RUSTFLAGS"
    ;;
check)
    # Lints too, so CUDA-only code stays as clean as the rest.
    if cargo clippy --version >/dev/null 2>&1; then
        cargo clippy --locked --features cuda --all-targets "$@" -- -D warnings
    else
        cargo check --locked --features cuda --all-targets "$@"
    fi
    ;;
build)
    cargo build --locked --release --features cuda "$@"
    echo "built target/release/fashion-mnist with CUDA support (compute capability $compute_cap)." >&2
    echo "At run time it needs the NVIDIA driver (libcuda.so.1) and libnvrtc.so.13, libcublas.so.13" >&2
    echo "and libcublasLt.so.13 on LD_LIBRARY_PATH (e.g. $cuda_root/lib)." >&2
    ;;
tests)
    cargo build --locked --release --features cuda "$@"
    cargo test --locked --release --features cuda --no-run "$@"
    ;;
esac
