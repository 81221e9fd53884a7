#!/usr/bin/env bash
# Prepares a Python environment for running this pack inside a real ComfyUI checkout (the integration suite).
#
#   COMFYUI_PATH=/path/to/ComfyUI bash scripts/setup_comfyui.sh
#   COMFYUI_PATH=/path/to/ComfyUI $COMFYUI_PATH/venv/bin/python -m pytest -q tests/integration
#
# ComfyUI is not on PyPI: get a checkout yourself (git clone of Comfy-Org/ComfyUI); it stays outside this repo.
# Tried with v0.3.64 and 0.33.0 (docs/COMFYUI_VERSIONS.md).
#
# The venv goes to $COMFYUI_PATH/venv. torch comes first (TORCH_SPEC, default the CPU torch==2.13.0) and is pinned
# for every later step, so pip fails rather than replace it. ComfyUI's requirements follow without
# torch/torchvision/torchaudio; torchvision is added without its torch pin and its two compiled operators are declared
# at start-up so it imports beside a CPU torch (ComfyUI never calls them). ComfyUI since about 0.19 imports torchaudio
# at start-up (comfy/sd.py); when the checkout's start-up fails for lack of it, torchaudio is added without its torch
# pin and, unless TORCHAUDIO_KEEP_LIBS=1, its compiled libraries (PyPI's are CUDA builds) are moved aside: the
# pure-Python part that ComfyUI's start-up needs then imports beside a CPU torch.
set -euo pipefail
: "${COMFYUI_PATH:?set COMFYUI_PATH to a ComfyUI checkout}"
COMFYUI_PATH=$(cd "$COMFYUI_PATH" && pwd)
HERE=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
TORCHVISION_SPEC=${TORCHVISION_SPEC:-torchvision==0.28.0}
TORCHAUDIO_SPEC=${TORCHAUDIO_SPEC:-torchaudio==2.11.0}
VENV="$COMFYUI_PATH/venv"
export PIP_DISABLE_PIP_VERSION_CHECK=1
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
VPY="$VENV/bin/python"
"$VPY" -m pip install -q "$TORCH_SPEC"
TORCH_VERSION=$("$VPY" -c 'import importlib.metadata as m; print(m.version("torch"))')
PIN="$VENV/cinematic-torch-pin.txt"
echo "torch==$TORCH_VERSION" > "$PIN"
pip_pinned() { "$VPY" -m pip install -q -c "$PIN" "$@"; }

grep -viE '^(torch|torchvision|torchaudio|spandrel)([<>=~ ;\[]|$)' "$COMFYUI_PATH/requirements.txt" > "$VENV/comfy-reqs.txt"
pip_pinned -r "$VENV/comfy-reqs.txt"
pip_pinned --no-deps spandrel "$TORCHVISION_SPEC"
pip_pinned requests
pip_pinned -r "$HERE/requirements-test.txt"

SITE=$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
cat > "$SITE/cinematic_torchvision_ops.py" <<'PYEOF'
# Declares torchvision's nms/qnms operator schemas so PyPI's torchvision imports beside a CPU-only torch build.
# Imported at start-up (cinematic_torchvision_ops.pth) but acts only when torchvision is first imported: torch itself
# must not be imported before ComfyUI's main.py has set up its environment ("Torch already imported" warning).
import sys

_lib = None  # kept alive: the schemas go when the Library object does


def _declare():
    global _lib
    try:
        import torch
        lib = torch.library.Library("torchvision", "DEF")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _lib = lib
    except Exception:
        pass


class _BeforeTorchvision:
    """A finder that finds nothing: it only declares the schemas once, just before torchvision is first imported."""
    done = False

    def find_spec(self, name, path=None, target=None):
        if name == "torchvision" and not self.done:
            self.done = True
            _declare()
        return None


sys.meta_path.insert(0, _BeforeTorchvision())
PYEOF
echo "import cinematic_torchvision_ops" > "$SITE/cinematic_torchvision_ops.pth"

# Does this checkout's start-up (comfy.sd, nodes) import? Exit 3: only torchaudio is missing.
probe_startup() {
    (cd "$COMFYUI_PATH" && "$VPY" - <<'PYEOF'
import sys
sys.argv = [sys.argv[0], "--cpu"]
sys.path.insert(0, ".")
from comfy.cli_args import args
args.cpu = True
try:
    import utils.extra_config  # noqa: F401  ComfyUI's own utils, before `nodes` puts comfy/ first on sys.path
    import comfy.sd  # noqa: F401
    import nodes  # noqa: F401
except ModuleNotFoundError as e:
    if (e.name or "").split(".")[0] == "torchaudio":
        sys.exit(3)
    raise
PYEOF
    )
}
set +e
probe_startup > "$VENV/cinematic-probe.log" 2>&1
rc=$?
set -e
if [ "$rc" = 3 ]; then
    echo "This ComfyUI imports torchaudio at start-up: adding $TORCHAUDIO_SPEC (pure-Python part)"
    "$VPY" -m pip install -q --no-deps "$TORCHAUDIO_SPEC"
    TA_LIB="$SITE/torchaudio/lib"
    if [ "${TORCHAUDIO_KEEP_LIBS:-0}" != 1 ] && [ -d "$TA_LIB" ]; then
        mkdir -p "$VENV/torchaudio-libs-aside"
        find "$TA_LIB" -maxdepth 1 -name '*.so*' -exec mv -f {} "$VENV/torchaudio-libs-aside/" \;
    fi
    probe_startup > "$VENV/cinematic-probe.log" 2>&1 || { cat "$VENV/cinematic-probe.log"; exit 1; }
elif [ "$rc" != 0 ]; then
    cat "$VENV/cinematic-probe.log"
    echo "ComfyUI's start-up does not import in $VENV (log above)" >&2
    exit 1
fi

NOW=$("$VPY" -c 'import importlib.metadata as m; print(m.version("torch"))')
[ "$NOW" = "$TORCH_VERSION" ] || { echo "torch changed from $TORCH_VERSION to $NOW" >&2; exit 1; }
"$VPY" -c "import torchvision, torch; print('ComfyUI venv ready:', torch.__version__, torchvision.__version__)"
