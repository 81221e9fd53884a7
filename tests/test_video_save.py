"""Every written video decoded back: codec, pixel format, frame count, fps, size, embedded workflow; safe writes."""

import json
import re
import subprocess

import imageio_ffmpeg
import numpy as np
import pytest
import torch

from cinematic.nodes.video import OutputPathError, read_embedded_workflow, write_video

PROMPT = {"3": {"class_type": "CinematicSampler", "inputs": {"seed": 7, "text": "quote \" = ; # \\ end"}}}
WORKFLOW = {"nodes": [{"id": 3, "type": "CinematicSampler"}], "links": [], "version": 0.4, "extra": {"s": "é🎬"}}


def _frames(n=6, h=48, w=64):
    gen = torch.Generator().manual_seed(0)
    return torch.rand(n, h, w, 3, generator=gen)


def _probe(path):
    """(codec, pix_fmt, width, height, fps) from ffmpeg's stream line; frame count decoded."""
    err = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True,
                         text=True).stderr
    line = next(l for l in err.splitlines() if "Video:" in l)
    codec = line.split("Video:")[1].split()[0].strip(",")
    pix = re.search(r"(yuv\w+|rgb\w+|bgra|pal8)", line).group(1)
    w, h = map(int, re.search(r", (\d+)x(\d+)", line).groups())
    fps = float(re.search(r"([\d.]+) fps", line).group(1)) if " fps" in line else None
    nframes, _ = imageio_ffmpeg.count_frames_and_secs(str(path))
    return codec, pix, w, h, fps, nframes


def _save(pack, **kw):
    node = pack.NODE_CLASS_MAPPINGS["CinematicSaveVideo"]()
    args = dict(images=_frames(), fps=8.0, filename_prefix="Cinematic/test", format="mp4", prompt=PROMPT,
                extra_pnginfo={"workflow": WORKFLOW})
    args.update(kw)
    return node.save(**args)


@pytest.mark.parametrize("fmt,codec", [("mp4", "h264"), ("webm", "vp9")])
def test_mp4_and_webm(pack, models_dir, fmt, codec):
    out = _save(pack, format=fmt, fps=12.0)
    entry = out["ui"]["images"][0]
    assert out["ui"]["animated"] == (True,) and entry["type"] == "output" and entry["subfolder"] == "Cinematic"
    path = models_dir.parent / "output" / entry["subfolder"] / entry["filename"]
    assert re.fullmatch(r"test_00001_\." + fmt, entry["filename"])
    got_codec, pix, w, h, fps, n = _probe(path)
    assert (got_codec, pix, w, h, n) == (codec, "yuv420p", 64, 48, 6)
    assert fps == 12.0
    prompt, workflow = read_embedded_workflow(path)
    assert prompt == PROMPT and workflow == WORKFLOW
    frames = np.stack(list(imageio_ffmpeg.read_frames(str(path)))[1:])  # [0] is the meta dict
    assert frames.shape[0] == 6


def test_faststart_moov_before_mdat(pack, models_dir):
    entry = _save(pack)["ui"]["images"][0]
    data = (models_dir.parent / "output" / "Cinematic" / entry["filename"]).read_bytes()
    assert 0 <= data.find(b"moov") < data.find(b"mdat")


@pytest.mark.parametrize("fmt", ["gif", "webp"])
def test_animated_images(pack, models_dir, fmt):
    from PIL import Image

    entry = _save(pack, format=fmt, fps=10.0)["ui"]["images"][0]
    path = models_dir.parent / "output" / "Cinematic" / entry["filename"]
    with Image.open(path) as im:
        assert im.n_frames == 6 and im.size == (64, 48)
        im.seek(1)
        im.load()
        assert im.info.get("duration") == 100
    assert read_embedded_workflow(path) == (PROMPT, WORKFLOW)


def test_counter_increments(pack, models_dir):
    a = _save(pack)["ui"]["images"][0]["filename"]
    b = _save(pack)["ui"]["images"][0]["filename"]
    assert (a, b) == ("test_00001_.mp4", "test_00002_.mp4")


def test_odd_size_still_plays(pack, models_dir):
    entry = _save(pack, images=_frames(5, 33, 47))["ui"]["images"][0]
    codec, pix, w, h, _, n = _probe(models_dir.parent / "output" / "Cinematic" / entry["filename"])
    assert (codec, pix, w, h, n) == ("h264", "yuv420p", 48, 34, 5)


@pytest.mark.parametrize("prefix", ["../escape", "/tmp/abs_escape", "a/../../b"])
def test_traversal_prefix_refused_nothing_written(pack, models_dir, prefix):
    out_dir = models_dir.parent / "output"
    before = set(models_dir.parent.rglob("*"))
    with pytest.raises(OutputPathError, match="outside the output folder"):
        _save(pack, filename_prefix=prefix)
    assert set(models_dir.parent.rglob("*")) == before
    assert not out_dir.exists() or not any(out_dir.rglob("*.mp4"))


def test_failure_mid_write_leaves_no_file(models_dir, tmp_path, monkeypatch):
    import cinematic.nodes.video as video

    calls = {"n": 0}

    def interrupted():
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("cancelled")

    monkeypatch.setattr(video.comfy_env, "throw_if_interrupted", interrupted)
    target = tmp_path / "out" / "clip_00001_.mp4"
    with pytest.raises(KeyboardInterrupt):
        write_video(_frames(8), target, 8.0, "mp4")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_bad_frames(tmp_path):
    with pytest.raises(ValueError, match="IMAGE batch"):
        write_video(torch.rand(2, 3, 8, 8), tmp_path / "x.mp4", 8.0, "mp4")
    with pytest.raises(ValueError, match="fps"):
        write_video(_frames(), tmp_path / "x.mp4", 0.0, "mp4")
