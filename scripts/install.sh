#!/usr/bin/env bash
# Set up kcnn from nothing: a virtual environment in .venv with PyTorch's CPU build,
# then kcnn itself (editable) with its test extras. Safe to re-run; it skips what is there.
#   PYTHON=python3.12 bash scripts/install.sh      # choose the interpreter
#   KCNN_TORCH="torch==2.13.0" bash scripts/install.sh   # choose another torch (e.g. a CUDA build)
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
torch_req=${KCNN_TORCH:-torch==2.13.0}

[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip install --disable-pip-version-check -q)

# PyTorch first, so nothing pulls the multi-GB CUDA build from PyPI: a local wheel that
# pip is configured to find (--no-index: find-links only), else PyTorch's CPU index.
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  "${pip[@]}" --no-index "$torch_req" 2>/dev/null ||
    "${pip[@]}" "$torch_req" --index-url https://download.pytorch.org/whl/cpu
fi
"${pip[@]}" -e ".[test]"
.venv/bin/python -c "import kcnn, torch, keras, tensorflow; print(f'kcnn {kcnn.__version__}: torch {torch.__version__}, keras {keras.__version__}, tensorflow {tensorflow.__version__}')"
