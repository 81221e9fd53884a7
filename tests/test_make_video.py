"""The README's main job, as a user runs it: a subprocess that writes a playable mp4."""

import subprocess
import sys
import time
from pathlib import Path

import imageio_ffmpeg
import pytest

from cinematic_testing import tiny_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "make_video.py"


def _run(tmp_path, *args, env_models=None):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    import os

    env.update({k: v for k, v in os.environ.items() if k.startswith(("PYTHON", "VIRTUAL_ENV"))})
    env["CINEMATIC_MODELS_DIR"] = str(env_models or tmp_path / "no-models")
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=tmp_path, env=env)


def test_without_weights_runs_the_builtin_model_and_says_so(tmp_path):
    out = tmp_path / "panda.mp4"
    proc = _run(tmp_path, "a panda playing guitar", "--out", str(out), "--steps", "2", "--frames", "4",
                "--width", "64", "--height", "48")
    assert proc.returncode == 0, proc.stderr
    assert "RANDOM weights" in proc.stderr and "noise" in proc.stderr
    frames, secs = imageio_ffmpeg.count_frames_and_secs(str(out))
    assert frames == 4
    reader = imageio_ffmpeg.read_frames(str(out))
    meta = next(reader)
    assert meta["size"] == (64, 48) and meta["codec"] == "h264" and meta["fps"] == 8.0


def test_with_weights_in_the_models_folder(tmp_path):
    models = tmp_path / "models"
    tiny_checkpoint.write_original_folder(models / "text2video" / "tiny-t2v", seed=1)
    out = tmp_path / "clip.webm"
    proc = _run(tmp_path, "a cat", "--out", str(out), "--steps", "2", "--frames", "3", "--width", "32",
                "--height", "32", env_models=models)
    assert proc.returncode == 0, proc.stderr
    assert "RANDOM" not in proc.stderr and "tiny-t2v" in proc.stderr
    assert imageio_ffmpeg.count_frames_and_secs(str(out))[0] == 3


def test_clear_errors(tmp_path):
    proc = _run(tmp_path, "x", "--out", str(tmp_path / "a.avi"))
    assert proc.returncode == 2 and "must end in one of" in proc.stderr
    proc = _run(tmp_path, "x", "--out", str(tmp_path / "a.mp4"), "--width", "250")
    assert proc.returncode == 2 and "multiple of 8" in proc.stderr and "Traceback" not in proc.stderr
    proc = _run(tmp_path, "x", "--out", str(tmp_path / "a.mp4"), "--model", "missing-model")
    assert proc.returncode == 1 and "was not found" in proc.stderr and "Traceback" not in proc.stderr


BAD_NUMBERS = [("--fps", "0"), ("--fps", "-8"), ("--fps", "nan"), ("--steps", "0"), ("--steps", "-3"),
               ("--frames", "0"), ("--width", "0"), ("--width", "-256"), ("--height", "250"), ("--cfg", "-1"),
               ("--cfg", "inf"), ("--seed", "-1"), ("--frames-per-batch", "0")]


@pytest.mark.parametrize("flag,value", BAD_NUMBERS, ids=[f"{f}={v}" for f, v in BAD_NUMBERS])
def test_bad_numbers_exit_at_once_before_any_model_is_loaded(tmp_path, flag, value):
    models = tmp_path / "models"
    trap = models / "text2video" / "trap.safetensors"  # loading it would fail loudly (and take time)
    trap.parent.mkdir(parents=True)
    trap.write_bytes(b"\x08" + b"\x00" * 7 + b"garbage!")
    out = tmp_path / "a.mp4"
    start = time.perf_counter()
    proc = _run(tmp_path, "x", "--out", str(out), f"{flag}={value}", env_models=models)
    seconds = time.perf_counter() - start
    assert proc.returncode != 0
    assert seconds < 1.0, seconds
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and flag in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr and "trap" not in proc.stderr and "loading" not in proc.stderr
    assert not out.exists()
