"""The headless command with frames you give it: --image (held first frame, loops) and --extend (continue a file)."""

import numpy as np
import pytest
import torch

from cinematic.nodes.video import write_video
from cinematic.nodes.video_reader import read_video_frames
import test_make_video
from cinematic_testing import tiny_checkpoint


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """A random-weight model in the original layout: these tests check the frame plumbing at 32x32, a size the
    built-in demo model (the default without weights) does not run at."""
    models = tmp_path_factory.mktemp("frames-models")
    tiny_checkpoint.write_original_folder(models / "text2video" / "tiny-t2v", seed=1)
    return models


@pytest.fixture
def _run(tiny_models):
    return lambda tmp_path, *args: test_make_video._run(tmp_path, *args, env_models=tiny_models)


def _png(path, size=(64, 48), seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def test_image_is_held_on_its_frame_whatever_the_seed(tmp_path, _run):
    image = _png(tmp_path / "still.png", size=(80, 40))  # another size: resized to --width x --height, said so
    outs = []
    for seed in ("1", "2"):
        out = tmp_path / f"i2v{seed}.gif"  # gif: each frame stored on its own, so held frames compare exactly
        proc = _run(tmp_path, "a cat", "--out", str(out), "--steps", "3", "--frames", "4", "--width", "32",
                    "--height", "32", "--image", str(image), "--seed", seed)
        assert proc.returncode == 0, proc.stderr
        assert "resized to 32x32" in proc.stderr
        outs.append(read_video_frames(out))
    a, b = outs
    assert a.shape == (4, 32, 32, 3)
    assert torch.equal(a[0], b[0])  # the held frame does not depend on the seed
    assert (a[1:] - b[1:]).abs().max() > 0.05  # the generated ones do


def test_loop_holds_the_image_at_both_ends(tmp_path, _run):
    out = tmp_path / "loop.gif"
    proc = _run(tmp_path, "waves", "--out", str(out), "--steps", "3", "--frames", "5", "--width", "32",
                "--height", "32", "--image", str(_png(tmp_path / "s.png", (32, 32))), "--keyframes", "0,-1",
                "--resample", "1")
    assert proc.returncode == 0, proc.stderr
    frames = read_video_frames(out)
    assert (frames[0] - frames[-1]).abs().mean() < 2 / 255  # the same decoded image (gif may dither it apart)
    assert (frames[0] - frames[2]).abs().mean() > 10 / 255  # the middle is generated


def test_extend_continues_a_file_and_writes_the_whole(tmp_path, _run):
    rng = np.random.default_rng(3)
    original = torch.from_numpy(rng.integers(0, 255, (6, 32, 32, 3), dtype=np.uint8)).float() / 255
    source = tmp_path / "clip.gif"
    write_video(original, source, 8.0, "gif")
    before = read_video_frames(source)
    out = tmp_path / "longer.gif"
    proc = _run(tmp_path, "a cat", "--out", str(out), "--steps", "3", "--frames", "4", "--width", "32",
                "--height", "32", "--extend", str(source), "--overlap", "2")
    assert proc.returncode == 0, proc.stderr
    after = read_video_frames(out)
    assert after.shape[0] == 6 + 4 - 2
    assert (after[:6] - before).abs().mean() < 2 / 255  # the file's own frames first (re-quantised by gif)


BAD_FRAME_OPTIONS = {
    "images-vs-keyframes": (["--image", "{png}", "--image", "{png}", "--keyframes", "0,1,2"], "2 images but 3"),
    "keyframe-outside": (["--image", "{png}", "--keyframes", "9"], "outside the clip"),
    "strength": (["--image", "{png}", "--image-strength", "1.5"], "--image-strength"),
    "overlap": (["--extend", "{png}", "--overlap", "4"], "--overlap"),
    "image-and-extend": (["--image", "{png}", "--extend", "{png}"], "do not go together"),
}


@pytest.mark.parametrize("case", BAD_FRAME_OPTIONS)
def test_bad_frame_options_exit_before_loading(tmp_path, case):
    args, message = BAD_FRAME_OPTIONS[case]
    png = str(_png(tmp_path / "a.png"))
    proc = test_make_video._run(tmp_path, "x", "--out", str(tmp_path / "o.mp4"), "--frames", "4",
                                *[a.format(png=png) for a in args])
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert "loading" not in proc.stderr and "RANDOM" not in proc.stderr and not (tmp_path / "o.mp4").exists()


def test_extend_refuses_a_file_that_is_not_a_video(tmp_path):
    fake = tmp_path / "notes.mp4"
    fake.write_text("not a video at all")
    out = tmp_path / "o.mp4"
    proc = test_make_video._run(tmp_path, "x", "--out", str(out), "--frames", "4", "--extend", str(fake),
                                "--overlap", "2")
    assert proc.returncode == 1 and "could not be read as a video" in proc.stderr and "Traceback" not in proc.stderr
    assert "sampling" not in proc.stderr  # refused before any model was loaded or run
    assert not out.exists()
