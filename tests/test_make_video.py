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


def test_without_weights_runs_the_builtin_demo_model_and_says_so(tmp_path):
    """The README's first command: no weights installed, the built-in demo model makes the prompt's video."""
    import demo_data
    from cinematic.nodes.video_reader import read_video_frames

    out = tmp_path / "red_circle.mp4"
    proc = _run(tmp_path, "a red circle moving right", "--out", str(out), "--steps", "20")
    assert proc.returncode == 0, proc.stderr
    assert "built-in demo model" in proc.stderr and "64x64" in proc.stderr and "RANDOM" not in proc.stderr
    reader = imageio_ffmpeg.read_frames(str(out))
    meta = next(reader)
    assert meta["size"] == (64, 64) and meta["codec"] == "h264" and meta["fps"] == 8.0
    frames = read_video_frames(out)
    assert frames.shape == (16, 64, 64, 3)
    result = demo_data.judge_video(frames, demo_data.Combo("circle", "red", "right"))
    assert result["colour_ok"] and result["coherent"] >= 0.9 and result["direction"] != "still", result


def test_demo_model_says_it_ignores_another_size(tmp_path):
    out = tmp_path / "blue.gif"
    proc = _run(tmp_path, "a blue square moving up", "--out", str(out), "--steps", "2", "--frames", "4",
                "--width", "128", "--height", "96")
    assert proc.returncode == 0, proc.stderr
    assert "128x96 ignored" in proc.stderr
    from cinematic.nodes.video_reader import read_video_frames

    assert read_video_frames(out).shape == (4, 64, 64, 3)


def test_without_the_demo_file_the_random_stand_in_runs_and_says_so(tmp_path, monkeypatch, capsys):
    """A trimmed install without the demo file still makes a (noise) video, and says why."""
    import make_video
    from cinematic.model_loaders import builtin_demo

    monkeypatch.setattr(builtin_demo, "PATH", tmp_path / "gone.safetensors")
    monkeypatch.setenv("CINEMATIC_MODELS_DIR", str(tmp_path / "no-models"))
    out = tmp_path / "noise.mp4"
    assert make_video.main(["a cat", "--out", str(out), "--steps", "2", "--frames", "3", "--width", "64",
                            "--height", "48"]) == 0
    err = capsys.readouterr().err
    assert "is missing" in err and "RANDOM weights" in err and "noise" in err
    assert imageio_ffmpeg.count_frames_and_secs(str(out))[0] == 3


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
