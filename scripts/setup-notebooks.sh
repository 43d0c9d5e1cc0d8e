#!/usr/bin/env bash
# Sets up the notebooks in one go:
#   1. evcxr_jupyter 0.22, the Rust kernel (a cargo build of about 15 minutes on 2 cores, once per machine);
#   2. the Python side (Jupyter, nbconvert, nbclient, jupytext): into the active conda environment
#      when there is one (see environment.yml), else into .venv-notebooks/;
#   3. the kernel spec "Rust (fashion-mnist)" (notebooks/kernel/launch.sh), which the notebooks
#      name, so every kernel uses the project's configuration;
#   4. the prepared build every new kernel starts from (target/notebook-kernels/template): the
#      library and its dependencies compiled once with release settings (about 15 minutes), so the
#      first cell of any notebook takes about half a minute instead of ten. Run this script again
#      after updating the library's code.
# Each step is skipped when it is already done, so running it again is cheap.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
SECONDS=0
step() { echo "== [$((SECONDS / 60)) min $((SECONDS % 60)) s] $*" >&2; }
# cargo install puts binaries here; make sure the kernel is found right after installing it.
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

if ! evcxr_jupyter --help >/dev/null 2>&1 || [ "$(cargo install --list | grep -c '^evcxr_jupyter v0.22.0')" = 0 ]; then
  step "installing evcxr_jupyter 0.22.0 (cargo install, about 15 minutes)"
  cargo install evcxr_jupyter --version 0.22.0 --locked
fi

if [ -n "${CONDA_PREFIX:-}" ]; then
  python=python
  step "Python side into the conda environment $CONDA_PREFIX"
  "$python" -m pip install -q -r scripts/notebook-requirements.txt
else
  python=.venv-notebooks/bin/python
  [ -x "$python" ] || python3 -m venv .venv-notebooks
  step "Python side into .venv-notebooks/"
  "$python" -m pip install -q -r scripts/notebook-requirements.txt
fi

step "kernel spec 'Rust (fashion-mnist)'"
spec=$(mktemp -d)
trap 'rm -rf "$spec"' EXIT
# evcxr's own installation writes the logos and the editor support files; ours adds the launcher.
evcxr_jupyter --install >/dev/null
evcxr_spec=$("$python" -m jupyter kernelspec list --json | "$python" -c \
  'import json, sys; print(json.load(sys.stdin)["kernelspecs"]["rust"]["resource_dir"])')
cp "$evcxr_spec"/* "$spec/"
cat >"$spec/kernel.json" <<JSON
{
  "argv": ["$repo/notebooks/kernel/launch.sh", "{connection_file}"],
  "display_name": "Rust (fashion-mnist)",
  "language": "rust",
  "interrupt_mode": "message"
}
JSON
"$python" -m jupyter kernelspec install --user --name fashion-mnist "$spec" >/dev/null

# The kernels build offline (notebooks/evcxr/evcxr.toml): every pinned dependency must be on disk.
step "fetching the pinned dependencies (cargo fetch --locked)"
cargo fetch --locked --quiet
step "preparing the build new kernels start from (about 15 minutes the first time)"
template="$repo/target/notebook-kernels/template"
FASHION_MNIST_KERNEL_DIR="$template" "$python" scripts/run_notebooks.py --warm-up
# Kernels compare the library's files with this stamp to tell a learner when it is out of date.
touch "$template/.prepared"
step "done: open the notebooks with $([ -n "${CONDA_PREFIX:-}" ] && echo jupyter || echo .venv-notebooks/bin/jupyter) lab notebooks/ (kernel 'Rust (fashion-mnist)')"
