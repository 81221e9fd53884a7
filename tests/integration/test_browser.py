"""A real browser on the ComfyUI page with the pack loaded: headless Debian chromium driven by playwright-core
(npm), the ComfyUI server on 127.0.0.1 only. Every example workflow opens with no missing node; text_to_video queued
on the tiny model shows its video preview. Screenshots are kept in $CINEMATIC_SCREENSHOTS (default: a temp folder).

Needs COMFYUI_PATH (see scripts/setup_comfyui.sh), /usr/bin/chromium (apt-get install chromium) and
playwright-core installed with npm in $PLAYWRIGHT_DIR (e.g. `cd /some/dir && npm install playwright-core`).

The page is ComfyUI's frontend package as installed in its venv (each ComfyUI pins one). To try another release, set
CINEMATIC_FRONTEND_DIR to a folder holding it, e.g.
`pip install --no-deps --target /some/dir comfyui-frontend-package==1.58.1`: that folder goes first on the server's
PYTHONPATH, and the test checks that the page reports that version. The version seen is printed with the result.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
PLAYWRIGHT_DIR = os.environ.get("PLAYWRIGHT_DIR", "")
ROOT = Path(__file__).resolve().parents[2]
FRONTEND_DIR = os.environ.get("CINEMATIC_FRONTEND_DIR", "")

pytestmark = [
    pytest.mark.skipif(not COMFYUI_PATH, reason="COMFYUI_PATH is not set (see scripts/setup_comfyui.sh)"),
    pytest.mark.skipif(not shutil.which("chromium"), reason="chromium is not installed (apt-get install chromium)"),
    pytest.mark.skipif(not shutil.which("node"), reason="node is not installed"),
    pytest.mark.skipif(not (Path(PLAYWRIGHT_DIR) / "node_modules" / "playwright-core").is_dir(),
                       reason="PLAYWRIGHT_DIR does not hold node_modules/playwright-core (npm install playwright-core)"),
]


def _frontend_version(folder: Path):
    """The comfyui-frontend-package version installed in `folder` (pip --target), or None."""
    found = sorted(folder.glob("comfyui_frontend_package-*.dist-info"))
    return found[-1].name.removeprefix("comfyui_frontend_package-").removesuffix(".dist-info") if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


NEWER_CORE_NODES = {"train_motion_lora.json"}  # built with ComfyUI 0.33's core training nodes


def _server_has(url: str, node: str) -> bool:
    return bool(json.loads(urllib.request.urlopen(f"{url}/object_info/{node}", timeout=10).read()))


def test_browser_opens_workflows_and_plays_the_preview(tmp_path):
    from cinematic_testing.comfy_harness import place_models, prepare_base

    base = prepare_base(tmp_path / "base")
    place_models(base / "models")
    shots = Path(os.environ.get("CINEMATIC_SCREENSHOTS", tmp_path / "shots"))
    shots.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    server_env = dict(os.environ)
    expected_frontend = None
    if FRONTEND_DIR:
        frontend = Path(FRONTEND_DIR).resolve()
        assert (frontend / "comfyui_frontend_package").is_dir(), f"no comfyui_frontend_package in {frontend}"
        expected_frontend = _frontend_version(frontend)
        server_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(frontend), os.environ.get("PYTHONPATH")]))
    log = open(tmp_path / "comfyui.log", "w")
    server = subprocess.Popen([sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
                               "--base-directory", str(base), "--disable-auto-launch",
                               "--database-url", f"sqlite:///{base / 'user' / 'comfyui.db'}"],
                              cwd=COMFYUI_PATH, stdout=log, stderr=subprocess.STDOUT, env=server_env)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(120):
            try:
                urllib.request.urlopen(url + "/object_info/CinematicSampler", timeout=2).read()
                break
            except OSError:
                time.sleep(1)
        else:
            pytest.fail("ComfyUI did not start: " + (tmp_path / "comfyui.log").read_text()[-2000:])
        env = {**os.environ, "COMFY_URL": url, "WORKFLOWS_DIR": str(ROOT / "example_workflows"),
               "SHOTS_DIR": str(shots), "PLAYWRIGHT_DIR": PLAYWRIGHT_DIR}
        proc = subprocess.run(["node", str(Path(__file__).parent / "browser" / "check.mjs")], env=env,
                              capture_output=True, text=True, timeout=400)
        assert proc.returncode == 0, proc.stderr[-3000:] + (tmp_path / "comfyui.log").read_text()[-3000:]
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        print(json.dumps(result, indent=1), "\nscreenshots:", shots)
        for name, info in result["workflows"].items():
            # a workflow made for 0.33's core nodes may name one this ComfyUI does not have at all (v0.3.64 calls
            # SaveLoRA SaveLoRANode); anything else missing is a fault
            absent = [n for n in info["missing"] if name in NEWER_CORE_NODES and not _server_has(url, n)]
            assert [n for n in info["missing"] if n not in absent] == [], (name, info)
            assert info["loaded"] > 0
        assert "filename=" in result["video_src"] and ".mp4" in result["video_src"], result["video_src"]
        assert (shots / "text_to_video_queued.png").is_file()
        if expected_frontend:
            assert result["frontend_version"] == expected_frontend, (result["frontend_version"], expected_frontend)
        log_text = (tmp_path / "comfyui.log").read_text()
        failed = [line for line in log_text.splitlines() if "IMPORT FAILED" in line and "Cinematic" in line]
        assert not failed, failed
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
