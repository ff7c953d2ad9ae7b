#!/usr/bin/env bash
# Set up kcnn from nothing: a virtual environment in .venv with PyTorch's CPU build,
# then kcnn itself (editable) with its test extras. Safe to re-run; it skips what is there.
#   PYTHON=python3.12 bash scripts/install.sh      # choose the interpreter
#   KCNN_TORCH="torch==2.13.0" bash scripts/install.sh   # choose another torch (e.g. a CUDA build)
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
torch_req=${KCNN_TORCH:-torch==2.13.0+cpu}

[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip install --disable-pip-version-check -q)

# PyTorch first, so nothing pulls the multi-GB CUDA build from PyPI. The "+cpu" build
# comes from a local wheel where pip is configured to find one (find-links), its
# dependencies from the usual index; else from PyTorch's CPU index, PyPI beside it.
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  "${pip[@]}" "$torch_req" 2>/dev/null ||
    "${pip[@]}" "$torch_req" --index-url https://download.pytorch.org/whl/cpu \
      --extra-index-url https://pypi.org/simple
fi
"${pip[@]}" -e ".[test]"
# the check imports TensorFlow as kcnn does, its start-up notices off the terminal (kcnn.quiet)
.venv/bin/python -c "import kcnn, torch, keras; from kcnn.quiet import import_tensorflow; tf = import_tensorflow(); print(f'kcnn {kcnn.__version__}: torch {torch.__version__}, keras {keras.__version__}, tensorflow {tf.__version__}')"
