"""Load the pack the way ComfyUI does: by path, under an alias, relative imports only.

The alias is `cinematic`; tests import `cinematic.model_loaders...`, `cinematic.nodes...`. The pack's root is never
put on sys.path (its `nodes/` and `samplers/` would shadow ComfyUI's). The tests folder is, for the shared test
helpers in `cinematic_testing/`.
"""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
PACK_ALIAS = "cinematic"

for _path in (TESTS, ROOT / "scripts"):  # test helpers; scripts/pack_loader.py (not the pack root itself)
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from pack_loader import load_pack  # noqa: E402


load_pack(PACK_ALIAS)


@pytest.fixture(scope="session")
def pack():
    return load_pack()


@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    """An empty CINEMATIC_MODELS_DIR with the standard subfolders; outputs go to a temporary folder too."""
    root = tmp_path / "models"
    for sub in ("text2video", "diffusion_models", "text_encoders", "vae"):
        (root / sub).mkdir(parents=True)
    monkeypatch.setenv("CINEMATIC_MODELS_DIR", str(root))
    monkeypatch.setenv("CINEMATIC_OUTPUT_DIR", str(tmp_path / "output"))
    return root
