"""The encoders behind CinematicSaveVideo (nodes/video.py): ffmpeg for mp4 (H.264) and webm (VP9), Pillow for gif and
webp; each writes one file and a verifier decodes it back. Errors name the cause and the fix (a missing or broken
ffmpeg, a full disk, the encoder's own log)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from . import comfy_env


class VideoWriteError(RuntimeError):
    """The encoder failed or its result did not decode; nothing was published. The message names the cause."""


class FFmpegUnavailable(VideoWriteError):
    """ffmpeg is missing or could not be started (a retry cannot help)."""


def _even(frames: np.ndarray) -> np.ndarray:
    """yuv420p needs even sizes: repeat the last row / column where one is odd."""
    _, h, w, _ = frames.shape
    if h % 2:
        frames = np.concatenate([frames, frames[:, -1:]], axis=1)
    if w % 2:
        frames = np.concatenate([frames, frames[:, :, -1:]], axis=2)
    return frames


# ------------------------------------------------------------------------------------------- ffmpeg


def _ffmpeg_exe() -> str:
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception as exc:  # ImportError, or imageio-ffmpeg found no binary
        raise FFmpegUnavailable(f"ffmpeg is not available ({exc}). mp4 and webm need it: pip install imageio-ffmpeg "
                              "(it ships an ffmpeg binary), or choose gif or webp. Nothing was saved.") from None


def _start_failure(exe: str, exc: OSError) -> VideoWriteError:
    source = f"IMAGEIO_FFMPEG_EXE={exe}" if os.environ.get("IMAGEIO_FFMPEG_EXE") else exe
    return FFmpegUnavailable(
        f"ffmpeg could not be started ({source}: {exc.strerror or exc}). Point IMAGEIO_FFMPEG_EXE to a working "
        "ffmpeg executable or unset it to use the one imageio-ffmpeg ships (pip install --force-reinstall "
        "imageio-ffmpeg). Nothing was saved."
    )


def _tail(log, limit: int = 1200) -> str:
    log.seek(0)
    text = log.read().decode("utf-8", "replace").strip()
    return text if len(text) <= limit else "..." + text[-limit:]


def _disk_hint(folder: Path) -> str:
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return ""
    if free < 64 * 1024 * 1024:
        return (f" The disk holding {folder} had {free // 1024} KiB free when writing stopped: free some space or "
                "choose another output folder.")
    return ""


def _encoder_failure(what: str, returncode: int, log_text: str, folder: Path) -> VideoWriteError:
    if returncode < 0:
        try:
            name, detail = signal.Signals(-returncode).name, signal.strsignal(-returncode)
        except ValueError:
            name, detail = f"signal {-returncode}", None
        cause = f"ffmpeg was stopped by {name} ({detail or 'unknown signal'})"
    else:
        cause = f"ffmpeg exited with status {returncode}"
    said = f" ffmpeg said:\n{log_text}" if log_text else ""
    return VideoWriteError(f"Writing the {what} failed: {cause}.{_disk_hint(folder)} Nothing was saved.{said}")


def _metadata_file(comment: str) -> str:
    """An ffmetadata file carrying the comment (a command-line argument would hit the OS's length limit for a large
    workflow)."""
    escaped = re.sub(r"([=;#\\\n])", r"\\\1", comment)
    fd, name = tempfile.mkstemp(prefix="cinematic-meta-", suffix=".txt")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(";FFMETADATA1\ncomment=" + escaped + "\n")
    return name


def _wait(proc: subprocess.Popen) -> int:
    """Wait for ffmpeg to finish encoding what it was sent, honouring Cancel meanwhile."""
    while True:
        try:
            return proc.wait(timeout=0.25)
        except subprocess.TimeoutExpired:
            comfy_env.throw_if_interrupted()


def _write_ffmpeg(path: Path, frames: np.ndarray, fps: float, fmt: str, crf: int, comment: str | None):
    from fractions import Fraction

    frames = _even(frames)
    _, h, w, _ = frames.shape
    if fmt == "mp4":
        codec, params = "libx264", ["-crf", str(crf), "-preset", "medium", "-movflags", "+faststart"]
    else:
        codec, params = "libvpx-vp9", ["-crf", str(crf), "-b:v", "0", "-row-mt", "1"]
    exe = _ffmpeg_exe()
    meta_file = _metadata_file(comment) if comment else None
    rate = str(Fraction(fps).limit_denominator())
    cmd = [exe, "-hide_banner", "-nostats", "-loglevel", "error", "-y",
           "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", rate, "-i", "-"]
    if meta_file:
        cmd += ["-f", "ffmetadata", "-i", meta_file, "-map", "0:v", "-map_metadata", "1"]
    cmd += ["-an", "-c:v", codec, "-pix_fmt", "yuv420p", *params, "-f", fmt, str(path)]
    try:
        with tempfile.TemporaryFile() as log:
            try:
                proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log)
            except OSError as exc:
                raise _start_failure(exe, exc) from None
            try:
                for frame in frames:
                    comfy_env.throw_if_interrupted()
                    try:
                        proc.stdin.write(np.ascontiguousarray(frame).tobytes())
                    except (BrokenPipeError, ConnectionResetError):
                        break  # ffmpeg stopped early: its exit status and log say why
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    proc.stdin.close()
                returncode = _wait(proc)
            except BaseException:
                proc.kill()
                proc.wait()
                raise
            finally:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
            if returncode != 0:
                raise _encoder_failure(fmt, returncode, _tail(log), path.parent)
    finally:
        if meta_file:
            with contextlib.suppress(OSError):
                os.unlink(meta_file)


def _verify_ffmpeg(path: Path, expected: int, fmt: str):
    """Decode the whole file back (ffmpeg, stopping at the first error) and count its frames."""
    exe = _ffmpeg_exe()
    cmd = [exe, "-hide_banner", "-nostdin", "-v", "error", "-xerror", "-i", str(path), "-map", "0:v:0",
           "-f", "framecrc", "-"]
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True)
    except OSError as exc:
        raise _start_failure(exe, exc) from None
    decoded = sum(1 for line in proc.stdout.decode("utf-8", "replace").splitlines()
                  if line.strip() and not line.startswith("#"))
    if proc.returncode != 0 or decoded != expected:
        said = proc.stderr.decode("utf-8", "replace").strip()[-600:]
        raise VideoWriteError(
            f"The {fmt} ffmpeg wrote does not decode completely ({decoded} of {expected} frames)."
            f"{_disk_hint(path.parent)} Nothing was saved." + (f" ffmpeg said:\n{said}" if said else "")
        )


# ------------------------------------------------------------------------------------------- gif / webp (Pillow)

_cancellable_frame = None


def _frame_image(array: np.ndarray):
    """A Pillow image for one frame whose seek() checks for Cancel: Pillow's gif and webp writers seek every frame of
    an animation once while encoding it, so this is the encoder's own per-frame loop."""
    global _cancellable_frame
    from PIL import Image

    if _cancellable_frame is None:
        class CancellableFrame(Image.Image):
            def seek(self, frame):
                if frame == 0:
                    comfy_env.throw_if_interrupted()
                super().seek(frame)

        _cancellable_frame = CancellableFrame
    image = Image.fromarray(array)
    image.__class__ = _cancellable_frame  # adds only a method: the same object layout as Image.Image
    return image


def _duration_ms(fps: float) -> int:
    return max(1, round(1000 / fps))


def _write_pillow(path: Path, frames: np.ndarray, fps: float, fmt: str, crf: int, meta: dict):
    from PIL import Image

    images = [_frame_image(f) for f in frames]
    kwargs = dict(save_all=True, append_images=images[1:], duration=_duration_ms(fps), loop=0)
    if fmt == "gif":
        if meta:
            kwargs["comment"] = json.dumps(meta, separators=(",", ":")).encode()
    else:
        kwargs.update(quality=max(0, min(100, 100 - 2 * crf)), method=4, lossless=False)
        if meta:  # ComfyUI's own convention for webp: EXIF Make = workflow, Model = prompt
            exif = Image.Exif()
            if "workflow" in meta:
                exif[0x010F] = "workflow:" + json.dumps(meta["workflow"], separators=(",", ":"))
            if "prompt" in meta:
                exif[0x0110] = "prompt:" + json.dumps(meta["prompt"], separators=(",", ":"))
            kwargs["exif"] = exif
    images[0].save(path, format=fmt.upper(), **kwargs)


def _verify_pillow(path: Path, frames: np.ndarray, fps: float, fmt: str):
    """Decode every frame back; the animation must be the written size and last as long as the frames written.
    (The encoders merge identical consecutive frames into one longer frame, so the duration is what is compared;
    gif stores it in 1/100 s, rounding each frame down by under 10 ms; a single remaining frame may be a still.)"""
    from PIL import Image

    n, h, w, _ = frames.shape
    expected = n * _duration_ms(fps)
    try:
        with Image.open(path) as im:
            count, total = im.n_frames, 0
            for index in range(count):
                im.seek(index)
                im.load()
                total += int(im.info.get("duration") or 0)
            size = im.size
    except Exception as exc:
        raise VideoWriteError(f"The {fmt} Pillow wrote does not decode ({type(exc).__name__}: {exc})."
                              f"{_disk_hint(path.parent)} Nothing was saved.") from None
    slack = 10 * count if fmt == "gif" else 0
    # one frame left (a single frame, or all frames alike): webp then stores a still image, without a duration
    timed = count > 1 or total > 0
    if size != (w, h) or not 1 <= count <= n or (timed and not expected - slack <= total <= expected):
        raise VideoWriteError(f"The {fmt} Pillow wrote is incomplete ({count} frames of {size[0]}x{size[1]} lasting "
                              f"{total} ms; expected {n} frames of {w}x{h}, {expected} ms). Nothing was saved.")
