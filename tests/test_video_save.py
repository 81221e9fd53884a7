"""Every written video decoded back: codec, pixel format, frame count, fps, size, embedded workflow; safe writes."""

import json
import re
import subprocess

import imageio_ffmpeg
import numpy as np
import pytest
import torch

from cinematic.nodes.video import OutputPathError, write_video
from cinematic.nodes.video_reader import read_embedded_workflow

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


# ------------------------------------------------------------------------------------ nothing lost, nothing broken

FORMATS = ("mp4", "webm", "gif", "webp")


def _files(folder):
    """Every file under `folder` (hidden temporaries included)."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.is_dir()) \
        if folder.exists() else []


def _decoded_frames(path):
    if path.suffix in (".mp4", ".webm"):
        return imageio_ffmpeg.count_frames_and_secs(str(path))[0]
    from PIL import Image

    with Image.open(path) as im:
        for i in range(im.n_frames):
            im.seek(i)
            im.load()
        return im.n_frames


# One subprocess per way of filling the disk; it saves every format through the node and reports, for each, the
# error and what was left in the output folder (inside a private tmpfs only that process can see).
_FULL_DISK_SCRIPT = r"""
import json, os, sys, torch
sys.path.insert(0, sys.argv[1])
from pack_loader import load_pack
pack = load_pack("cinematic")
out = os.environ["CINEMATIC_OUTPUT_DIR"]
node = pack.NODE_CLASS_MAPPINGS["CinematicSaveVideo"]()
frames = torch.rand(24, 128, 160, 3, generator=torch.Generator().manual_seed(0))  # noise: ~0.5 MB in any format
report = {}
for fmt in sys.argv[2:]:
    try:
        node.save(frames, 8.0, "Cinematic/full", fmt, prompt={"p": 1}, extra_pnginfo={"workflow": {"w": 2}})
        error = None
    except Exception as exc:
        error = [type(exc).__name__, str(exc)]
    left = [os.path.join(d, f) for d, _, fs in os.walk(out) for f in fs]
    report[fmt] = {"error": error, "left": left}
print("REPORT" + json.dumps(report))
"""


def _run_full_disk(cmd, env):
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    line = next((l for l in proc.stdout.splitlines() if l.startswith("REPORT")), None)
    assert line is not None, proc.stdout + proc.stderr
    return json.loads(line[len("REPORT"):])


def _base_env(tmp_path):
    import os

    env = {k: v for k, v in os.environ.items() if k != "IMAGEIO_FFMPEG_EXE"}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def test_disk_full_names_the_cause_and_leaves_nothing(tmp_path):
    """A 64 KiB tmpfs as the output folder (in a private mount namespace): every format fails with the cause."""
    import shutil
    import sys
    from pathlib import Path

    unshare = shutil.which("unshare")
    probe = subprocess.run([unshare or "unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {tmp_path}"],
                           capture_output=True) if unshare else None
    if probe is None or probe.returncode != 0:
        pytest.skip("no private tmpfs here (unshare -rm / mount refused); the RLIMIT_FSIZE test covers the writer")
    mount = tmp_path / "out"
    mount.mkdir()
    env = _base_env(tmp_path)
    env["CINEMATIC_OUTPUT_DIR"] = str(mount)
    scripts = Path(__file__).resolve().parents[1] / "scripts"
    shell = f'mount -t tmpfs -o size=64k tmpfs "$1" && shift && exec "$@"'
    report = _run_full_disk([unshare, "-rm", "sh", "-c", shell, "sh", str(mount), sys.executable, "-c",
                             _FULL_DISK_SCRIPT, str(scripts), *FORMATS], env)
    for fmt in FORMATS:
        error, left = report[fmt]["error"], report[fmt]["left"]
        assert error is not None, f"{fmt}: a full disk was reported as success"
        assert error[0] == "VideoWriteError" and "No space left on device" in error[1], (fmt, error)
        assert "Nothing was saved" in error[1], (fmt, error)
        assert left == [], (fmt, left)


def test_file_size_limit_names_the_cause_and_leaves_nothing(tmp_path):
    """RLIMIT_FSIZE (ulimit -f) of 64 KiB on the saving process and its ffmpeg: the file cannot grow."""
    import resource
    import sys
    from pathlib import Path

    out = tmp_path / "out"
    env = _base_env(tmp_path)
    env["CINEMATIC_OUTPUT_DIR"] = str(out)
    scripts = Path(__file__).resolve().parents[1] / "scripts"

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    cmd = [sys.executable, "-c", _FULL_DISK_SCRIPT, str(scripts), *FORMATS]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, preexec_fn=limit)
    line = next((l for l in proc.stdout.splitlines() if l.startswith("REPORT")), None)
    assert line is not None, proc.stdout + proc.stderr
    report = json.loads(line[len("REPORT"):])
    for fmt in FORMATS:
        error = report[fmt]["error"]
        assert error is not None and error[0] == "VideoWriteError", (fmt, error)
        # ffmpeg is stopped by SIGXFSZ; Pillow's writes fail with EFBIG
        cause = "File size limit exceeded" if fmt in ("mp4", "webm") else "File too large"
        assert cause in error[1] and "Nothing was saved" in error[1], (fmt, error)
    assert _files(out) == []


@pytest.mark.parametrize("fmt", ["mp4", "webm"])
@pytest.mark.parametrize("exe", ["missing", "not-executable"])
def test_ffmpeg_that_cannot_start_is_named_with_the_fix(pack, models_dir, monkeypatch, fmt, exe):
    from cinematic.nodes.video import VideoWriteError

    path = models_dir.parent / exe
    if exe == "not-executable":
        path.write_text("not a program")
        path.chmod(0o644)
    monkeypatch.setenv("IMAGEIO_FFMPEG_EXE", str(path))
    with pytest.raises(VideoWriteError) as info:
        _save(pack, format=fmt)
    message = str(info.value)
    assert "ffmpeg could not be started" in message and str(path) in message and "IMAGEIO_FFMPEG_EXE" in message
    assert ".partial" not in message
    assert _files(models_dir.parent / "output") == []


def test_ffmpeg_failure_is_reported_with_its_log(pack, models_dir, monkeypatch):
    from cinematic.nodes.video import VideoWriteError

    fake = models_dir.parent / "ffmpeg"
    fake.write_text("#!/bin/sh\necho 'Unknown encoder libx264 (simulated)' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("IMAGEIO_FFMPEG_EXE", str(fake))
    with pytest.raises(VideoWriteError, match=r"exited with status 1(.|\n)*Unknown encoder libx264 \(simulated\)"):
        _save(pack)
    assert _files(models_dir.parent / "output") == []


def _concurrent_saves(pack, count, fmt):
    """`count` saves with one prefix, started together; save i writes 3 + i frames, so each file shows whose it is."""
    import threading

    node = pack.NODE_CLASS_MAPPINGS["CinematicSaveVideo"]()
    barrier = threading.Barrier(count)
    results, errors = [None] * count, []

    def save(i):
        try:
            barrier.wait()
            results[i] = node.save(_frames(3 + i, 32, 32), 8.0, "Cinematic/race", fmt)["ui"]["images"][0]["filename"]
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=save, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    return results


@pytest.mark.parametrize("count,fmt", [(2, "mp4"), (4, "mp4"), (4, "webm"), (2, "gif"), (4, "webp")])
def test_concurrent_saves_with_one_prefix_get_distinct_whole_files(pack, models_dir, count, fmt):
    names = _concurrent_saves(pack, count, fmt)
    assert sorted(names) == [f"race_{i:05}_.{fmt}" for i in range(1, count + 1)]
    folder = models_dir.parent / "output" / "Cinematic"
    frame_counts = sorted(_decoded_frames(folder / name) for name in names)
    assert frame_counts == [3 + i for i in range(count)]  # every save's own file, whole
    assert _files(folder) == sorted(names)  # no temporary file left


def test_concurrent_saves_from_separate_processes(tmp_path):
    """Two ComfyUI processes sharing an output folder save with one prefix at the same moment."""
    import sys
    from pathlib import Path

    out = tmp_path / "out"
    go = tmp_path / "go"
    script = r"""
import os, sys, time, torch
sys.path.insert(0, sys.argv[1])
from pack_loader import load_pack
pack = load_pack("cinematic")
node = pack.NODE_CLASS_MAPPINGS["CinematicSaveVideo"]()
n = int(sys.argv[3])
frames = torch.rand(3 + n, 32, 32, 3, generator=torch.Generator().manual_seed(n))
open(sys.argv[2] + f".ready{n}", "w").close()
while not os.path.exists(sys.argv[2]):
    time.sleep(0.005)
print(node.save(frames, 8.0, "race", "mp4")["ui"]["images"][0]["filename"])
"""
    env = _base_env(tmp_path)
    env["CINEMATIC_OUTPUT_DIR"] = str(out)
    scripts = Path(__file__).resolve().parents[1] / "scripts"
    procs = [subprocess.Popen([sys.executable, "-c", script, str(scripts), str(go), str(i)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for i in range(2)]
    import time

    deadline = time.time() + 120
    while not all((tmp_path / f"go.ready{i}").exists() for i in range(2)) and time.time() < deadline:
        time.sleep(0.05)
    go.touch()  # both imported and waiting: they save at the same moment
    names = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr
        names.append(stdout.strip().splitlines()[-1])
    assert sorted(names) == ["race_00001_.mp4", "race_00002_.mp4"]
    assert sorted(_decoded_frames(out / name) for name in names) == [3, 4]
    assert _files(out) == sorted(names)


@pytest.mark.parametrize("prefix", ["", ".", "sub/..", "../x", "ABSOLUTE", "link_out/x", "   "])
def test_prefix_never_writes_outside_the_output_folder(pack, models_dir, prefix):
    """Each of these is refused before anything is written (an error is the contract's answer; a file inside the
    output folder would be acceptable, one anywhere else never)."""
    root = models_dir.parent
    out = root / "output"
    out.mkdir()
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    (out / "link_out").symlink_to(elsewhere, target_is_directory=True)
    if prefix == "ABSOLUTE":
        prefix = str(root / "abs" / "x")
    before = _files(root)
    with pytest.raises(OutputPathError, match="filename_prefix"):
        _save(pack, filename_prefix=prefix, format="gif")
    assert _files(root) == before


@pytest.mark.parametrize("prefix,subfolder", [("./x", ""), ("sub/../x", ""), ("a/./b/x", "a/b"), ("x", "")])
def test_prefix_that_normalises_inside_is_written_inside(pack, models_dir, prefix, subfolder):
    entry = _save(pack, filename_prefix=prefix, format="gif")["ui"]["images"][0]
    out = (models_dir.parent / "output").resolve()
    path = (out / entry["subfolder"] / entry["filename"]).resolve()
    assert entry["subfolder"] == subfolder and entry["filename"] == "x_00001_.gif"
    assert path.is_file() and out in path.parents


class _Cancelled(Exception):
    pass


@pytest.mark.parametrize("fmt", ["gif", "webp"])
def test_cancel_while_writing_gif_or_webp_stops_and_leaves_no_file(pack, models_dir, monkeypatch, fmt):
    import cinematic.nodes.video as video

    calls = []

    def count_only():
        calls.append(1)

    monkeypatch.setattr(video.comfy_env, "throw_if_interrupted", count_only)
    _save(pack, images=_frames(10), format=fmt)
    assert len(calls) >= 10  # the encoder checks once per frame

    out = models_dir.parent / "output"
    before = _files(out)
    calls.clear()
    seen_partial = []

    def cancel_at_fourth_frame():
        calls.append(1)
        if len(calls) == 4:
            seen_partial.append(any(".partial." in name for name in _files(out)))
            raise _Cancelled()

    monkeypatch.setattr(video.comfy_env, "throw_if_interrupted", cancel_at_fourth_frame)
    with pytest.raises(_Cancelled):
        _save(pack, images=_frames(10), format=fmt)
    # stopped at the fourth frame (Pillow's webp writer seeks the first frame once more on its way out), while its
    # temporary file was being written
    assert 4 <= len(calls) <= 5 and seen_partial == [True]
    assert _files(out) == before  # nothing new: no video, no temporary file


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kind", ["one frame", "all frames alike"])
def test_still_clips_pass_the_decode_check(pack, models_dir, fmt, kind):
    """The encoders merge identical frames (webp then stores a still image): the check must accept that."""
    images = _frames(1) if kind == "one frame" else torch.full((10, 16, 16, 3), 0.3)
    entry = _save(pack, images=images, format=fmt)["ui"]["images"][0]
    assert _decoded_frames(models_dir.parent / "output" / "Cinematic" / entry["filename"]) >= 1
