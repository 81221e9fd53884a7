"""The reference implementations the parity tests compare against, fetched from PyPI (test-only, never committed).

* the `modelscope` wheel's video_synthesis/{unet_sd,autoencoder,diffusion}.py (they import only torch, einops, numpy):
  the wheel is downloaded with `pip download --no-deps` and those files are loaded by path;
* `open_clip_torch`'s source, unpacked the same way (its package import needs torchvision, see `open_clip()`).

Files land in `<repo>/.cache/refs` (git-ignored). `python tests/cinematic_testing/refs.py` fetches them ahead of
time (CI does). When they cannot be fetched the tests that need them skip with the reason, unless
CINEMATIC_REQUIRE_REFS=1 (CI), where they fail.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("CINEMATIC_REFS_DIR", REPO / ".cache" / "refs"))

MODELSCOPE = ("modelscope", "1.40.2", "modelscope/models/multi_modal/video_synthesis/")
OPEN_CLIP = ("open_clip_torch", "3.3.0", "open_clip/")


class RefsUnavailable(RuntimeError):
    pass


def _fetch(dist: str, version: str, member_prefix: str) -> Path:
    target = CACHE / f"{dist}-{version}"
    marker = target / ".complete"
    if marker.exists():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    wheels = list(CACHE.glob(f"{dist}-{version}-*.whl"))
    if not wheels:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
               f"{dist}=={version}", "-d", str(CACHE)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(CACHE.glob(f"{dist}-{version}-*.whl"))
        if proc.returncode != 0 or not wheels:
            raise RefsUnavailable(f"could not download {dist}=={version} from PyPI: {proc.stderr.strip()[-300:]}")
    with zipfile.ZipFile(wheels[0]) as zf:
        for name in zf.namelist():
            if name.startswith(member_prefix):
                zf.extract(name, target)
    marker.touch()
    return target


def _unavailable(reason: str):
    import pytest

    if os.environ.get("CINEMATIC_REQUIRE_REFS") == "1":
        pytest.fail(f"reference code is required here but unavailable: {reason}")
    pytest.skip(f"reference code unavailable: {reason}")


_loaded: dict[str, object] = {}


def modelscope_module(name: str):
    """`unet_sd`, `autoencoder` or `diffusion` from the modelscope wheel, loaded by path (no modelscope import)."""
    if name not in _loaded:
        try:
            root = _fetch(*MODELSCOPE)
        except RefsUnavailable as exc:
            _unavailable(str(exc))
        path = root / MODELSCOPE[2] / f"{name}.py"
        spec = importlib.util.spec_from_file_location(f"_ref_modelscope_{name}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _loaded[name] = module
    return _loaded[name]


def open_clip_root() -> Path:
    """The folder holding the unpacked `open_clip/` package source."""
    try:
        return _fetch(*OPEN_CLIP)
    except RefsUnavailable as exc:
        _unavailable(str(exc))


if __name__ == "__main__":
    for spec in (MODELSCOPE, OPEN_CLIP):
        print("fetched", _fetch(*spec))
