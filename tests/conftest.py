"""Load the pack the way ComfyUI does: by path, under an alias, relative imports only.

The alias is `cinematic`; tests import `cinematic.model_loaders...`, `cinematic.nodes...`. The pack's root is never
put on sys.path (its `nodes/` and `samplers/` would shadow ComfyUI's). The tests folder is, for the shared test
helpers in `cinematic_testing/`.
"""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
PACK_ALIAS = "cinematic"

if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))


def load_pack(alias: str = PACK_ALIAS):
    if alias in sys.modules:
        return sys.modules[alias]
    spec = importlib.util.spec_from_file_location(alias, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[alias] = module
    spec.loader.exec_module(module)
    return module


load_pack()


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
