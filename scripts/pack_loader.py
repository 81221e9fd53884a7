"""Import the pack the way ComfyUI does: by path, under an alias; its root never goes on sys.path (its `nodes` and
`samplers` would shadow ComfyUI's). Used by the scripts and benchmarks: `from pack_loader import load_pack`."""

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_pack(alias: str = "cinematic"):
    if alias in sys.modules:
        return sys.modules[alias]
    spec = importlib.util.spec_from_file_location(alias, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[alias] = module
    spec.loader.exec_module(module)
    return module
