#!/usr/bin/env bash
# Creates .venv with everything the pack needs (and, with --test, the test-only references).
# torch comes first and on its own line: TORCH_SPEC (default torch==2.13.0) lets a GPU user pick their build,
# and nothing after it may pull another torch.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
.venv/bin/python -m pip install -q "$TORCH_SPEC"
.venv/bin/python -m pip install -q -r requirements.txt
if [ "${1:-}" = "--test" ]; then
    .venv/bin/python -m pip install -q -r requirements-test.txt
    .venv/bin/python tests/cinematic_testing/refs.py
fi
echo "Cinematic environment ready in .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
