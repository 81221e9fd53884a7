"""Reading videos back: frames (to continue a clip, `make_video.py --extend`) and the workflow CinematicSaveVideo
embeds. The writer is nodes/video.py."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import torch

VIDEO_EXTENSIONS = ("mp4", "webm", "mkv", "mov", "avi", "gif", "webp")


class VideoReadError(ValueError):
    """A file that is not a readable video; the message names the file and what to do."""


def read_video_frames(path) -> torch.Tensor:
    """All frames of a video file as an IMAGE batch [N, H, W, 3] in 0..1 (mp4/webm/mkv/mov/avi through ffmpeg,
    gif/webp through Pillow)."""
    path = Path(path)
    if not path.is_file():
        raise VideoReadError(f"{path} does not exist (or is not a file); give the video to continue.")
    ext = path.suffix.lower().lstrip(".")
    if ext not in VIDEO_EXTENSIONS:
        raise VideoReadError(f"{path.name} is not a video file (.{ext}); give an .mp4, .webm, .mkv, .mov, .avi, "
                             f".gif or .webp.")
    try:
        frames = _read_pillow(path) if ext in ("gif", "webp") else _read_ffmpeg(path)
    except VideoReadError:
        raise
    except Exception as exc:  # the decoders' own errors: a truncated or mislabelled file
        raise VideoReadError(f"{path.name} could not be read as a video ({type(exc).__name__}: {exc}); is it a "
                             f"complete video file?") from None
    if not len(frames):
        raise VideoReadError(f"{path.name} holds no frames; is it a complete video file?")
    return torch.from_numpy(np.stack(frames)).to(torch.float32) / 255.0


def _read_ffmpeg(path: Path) -> list[np.ndarray]:
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
    meta = next(reader)
    width, height = meta["size"]
    frames = [np.frombuffer(raw, dtype=np.uint8).reshape(height, width, 3) for raw in reader]
    return frames


def _read_pillow(path: Path) -> list[np.ndarray]:
    from PIL import Image, ImageSequence

    with Image.open(path) as im:
        return [np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(im)]



def _ffmpeg_comment(path: Path) -> str | None:
    import imageio_ffmpeg

    proc = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "ffmetadata", "-"],
                          capture_output=True, text=True)
    text, value, reading = proc.stdout, [], False
    for line in text.splitlines():
        if not reading and line.lower().startswith("comment="):
            reading, line = True, line[len("comment="):]
        elif not reading:
            continue
        cont = line.endswith("\\") and not line.endswith("\\\\")
        value.append(line[:-1] + "\n" if cont else line)
        if not cont:
            break
    if not value:
        return None
    return re.sub(r"\\(.)", r"\1", "".join(value))


def read_embedded_workflow(path) -> tuple[dict | None, dict | None]:
    """(prompt, workflow) embedded by CinematicSaveVideo in an mp4, webm, gif or webp file."""
    path = Path(path)
    ext = path.suffix.lower().lstrip(".")
    meta: dict = {}
    if ext in ("mp4", "webm", "mkv", "mov"):
        comment = _ffmpeg_comment(path)
        meta = json.loads(comment) if comment else {}
    elif ext == "gif":
        from PIL import Image

        with Image.open(path) as im:
            comment = im.info.get("comment")
        meta = json.loads(comment) if comment else {}
    elif ext == "webp":
        from PIL import Image

        with Image.open(path) as im:
            exif = im.getexif()
        for tag, key in ((0x010F, "workflow"), (0x0110, "prompt")):
            value = exif.get(tag)
            if isinstance(value, str) and value.startswith(key + ":"):
                meta[key] = json.loads(value[len(key) + 1:])
    else:
        raise ValueError(f"Cannot read a workflow from a .{ext} file.")
    return meta.get("prompt"), meta.get("workflow")
