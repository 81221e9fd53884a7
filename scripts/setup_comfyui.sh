#!/usr/bin/env bash
# Prepares a Python environment for running this pack inside a real ComfyUI checkout (the integration suite).
#
#   COMFYUI_PATH=/path/to/ComfyUI bash scripts/setup_comfyui.sh
#   COMFYUI_PATH=/path/to/ComfyUI $COMFYUI_PATH/venv/bin/python -m pytest -q tests/integration
#
# ComfyUI is not on PyPI: get a checkout yourself (git clone of Comfy-Org/ComfyUI); it stays outside this repo.
# The venv goes to $COMFYUI_PATH/venv. torch comes first (TORCH_SPEC, default the CPU torch==2.13.0); ComfyUI's
# requirements follow without torch/torchvision/torchaudio; torchvision is added without its torch pin and its two
# compiled operators are declared at start-up so it imports beside a CPU torch (ComfyUI never calls them).
set -euo pipefail
: "${COMFYUI_PATH:?set COMFYUI_PATH to a ComfyUI checkout}"
HERE=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
VENV="$COMFYUI_PATH/venv"
export PIP_DISABLE_PIP_VERSION_CHECK=1
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q "$TORCH_SPEC"
grep -viE '^(torch|torchvision|torchaudio|spandrel)([<>=~ ]|$)' "$COMFYUI_PATH/requirements.txt" > "$VENV/comfy-reqs.txt"
"$VENV/bin/python" -m pip install -q -r "$VENV/comfy-reqs.txt"
"$VENV/bin/python" -m pip install -q --no-deps spandrel "torchvision==0.28.0"
"$VENV/bin/python" -m pip install -q requests
"$VENV/bin/python" -m pip install -q -r "$HERE/requirements-test.txt"
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
cat > "$SITE/cinematic_torchvision_ops.py" <<'PYEOF'
# Declares torchvision's nms/qnms operator schemas so PyPI's torchvision imports beside a CPU-only torch build.
try:
    import torch
    _lib = torch.library.Library("torchvision", "DEF")
    _lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
except Exception:
    pass
PYEOF
echo "import cinematic_torchvision_ops" > "$SITE/cinematic_torchvision_ops.pth"
"$VENV/bin/python" -c "import torchvision, torch; print('ComfyUI venv ready:', torch.__version__, torchvision.__version__)"
