#!/usr/bin/env bash
# Starts the notebooks' Rust kernel (evcxr_jupyter) the way this project configures it. Jupyter
# runs it through the "Rust (fashion-mnist)" kernel spec that scripts/setup-notebooks.sh registers.
#
# evcxr builds each kernel's code in a build directory of its own, and by default starts every
# kernel from an empty one, so the library and its ~180 dependencies compile again (about ten
# minutes on 2 cores) each time a notebook is opened. Here every kernel gets a copy of a build
# directory that the set-up prepared (target/notebook-kernels/template), so a new kernel only
# compiles the cells; kernels never share a directory, so any number can run at once.
#
# Environment:
#   FASHION_MNIST_EVCXR_CONFIG  evcxr configuration directory (default notebooks/evcxr; CI uses
#                               notebooks/evcxr-ci, which adds an abort-on-panic hook)
#   FASHION_MNIST_KERNEL_DIR    build in this directory as it is (the set-up's warm-up run uses
#                               it to fill the template)
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
kernels="$repo/target/notebook-kernels"
template="$kernels/template"
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

mkdir -p "$kernels/.cargo"
# Build settings for the library and its dependencies inside the kernel (cargo reads this file
# because every kernel's directory lies below it); the cells keep evcxr's quick-to-compile ones.
cp "$repo/notebooks/kernel/cargo-config.toml" "$kernels/.cargo/config.toml"

if [ -n "${FASHION_MNIST_KERNEL_DIR:-}" ]; then
  dir="$FASHION_MNIST_KERNEL_DIR"
  mkdir -p "$dir"
  # The dependency versions the project pins (and tests), not the newest ones: evcxr's crate
  # resolves against this lock file.
  [ -f "$dir/Cargo.lock" ] || cp "$repo/Cargo.lock" "$dir/Cargo.lock"
else
  # Directories of kernels that are no longer running (their process id is in the name),
  # removed in the background so that this kernel starts at once.
  for old in "$kernels"/kernel-*; do
    [ -d "$old" ] || continue
    kill -0 "${old##*-}" 2>/dev/null || mv "$old" "$kernels/.removing-${old##*/}" 2>/dev/null || true
  done
  (rm -rf "$kernels"/.removing-* &) >/dev/null 2>&1
  dir="$kernels/kernel-$$"
  rm -rf "$dir"
  if [ -d "$template/target" ]; then
    cp -a "$template/." "$dir/"
    if [ -n "$(find "$repo/src" "$repo/Cargo.toml" "$repo/Cargo.lock" -newer "$template/.prepared" -print -quit 2>/dev/null)" ] \
      || [ ! -f "$template/.prepared" ]; then
      echo "fashion-mnist kernel: the library changed since the set-up prepared its build; the first cell" \
        "compiles it again (a few minutes). Run scripts/setup-notebooks.sh to refresh the prepared build." >&2
    fi
  else
    mkdir -p "$dir"
    echo "fashion-mnist kernel: no prepared build ($template); the first cell compiles everything" \
      "(about ten minutes). Run scripts/setup-notebooks.sh once to prepare it." >&2
  fi
fi
export EVCXR_TMPDIR="$dir"
export EVCXR_CONFIG_DIR="${FASHION_MNIST_EVCXR_CONFIG:-$repo/notebooks/evcxr}"
# exec keeps this process id, so the directory's name tells whether its kernel still runs.
exec evcxr_jupyter --control_file "$1"
