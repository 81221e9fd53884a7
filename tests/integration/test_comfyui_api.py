"""Every ComfyUI symbol the pack touches (the table in docs/DESIGN.md) exists in the running ComfyUI (COMFYUI_PATH).
Run on each supported version; a symbol marked "when present" may be missing."""

import importlib
import os
import re
from pathlib import Path

import pytest

COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
pytestmark = pytest.mark.skipif(not COMFYUI_PATH, reason="COMFYUI_PATH is not set: the integration suite needs a "
                                                          "ComfyUI checkout (see scripts/setup_comfyui.sh)")
ROOT = Path(__file__).resolve().parents[2]


def _table():
    rows = re.findall(r"^\| `([A-Za-z_.]+)` \| [^|]+ \| ([^|]+) \|$", (ROOT / "docs" / "DESIGN.md").read_text(), re.M)
    assert len(rows) >= 15, rows
    return rows


@pytest.fixture(scope="module")
def comfyui(tmp_path_factory):
    from cinematic_testing.comfy_harness import ComfyHarness

    return ComfyHarness(COMFYUI_PATH, tmp_path_factory.mktemp("comfy_api"))


def test_every_listed_symbol_exists(comfyui):
    missing = []
    for symbol, what_for in _table():
        module_name, attr = symbol.rsplit(".", 1)
        module = importlib.import_module(module_name)
        if not hasattr(module, attr) and "when present" not in what_for:
            missing.append(symbol)
    assert not missing, f"ComfyUI {comfyui.version if hasattr(comfyui, 'version') else ''} lacks {missing}"
