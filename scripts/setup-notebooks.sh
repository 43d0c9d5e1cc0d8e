#!/usr/bin/env bash
# Installs what the notebooks need and registers the Rust kernel:
#   - evcxr_jupyter 0.22 (the Rust kernel; a cargo build of about 15 minutes the first time),
#   - the Python side (Jupyter, nbconvert, nbclient, jupytext): into the active conda
#     environment when there is one (see environment.yml), else into .venv-notebooks/.
set -euo pipefail
cd "$(dirname "$0")/.."
# cargo install puts binaries here; make sure the kernel is found right after installing it.
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

if ! evcxr_jupyter --help >/dev/null 2>&1 || [ "$(cargo install --list | grep -c '^evcxr_jupyter v0.22.0')" = 0 ]; then
  cargo install evcxr_jupyter --version 0.22.0 --locked
fi
evcxr_jupyter --install

if [ -n "${CONDA_PREFIX:-}" ]; then
  python -m pip install -q -r scripts/notebook-requirements.txt
  echo "Python side installed into the conda environment $CONDA_PREFIX"
else
  [ -x .venv-notebooks/bin/python ] || python3 -m venv .venv-notebooks
  .venv-notebooks/bin/pip install -q -r scripts/notebook-requirements.txt
  echo "Python side installed into .venv-notebooks/ (start Jupyter with .venv-notebooks/bin/jupyter lab)"
fi
