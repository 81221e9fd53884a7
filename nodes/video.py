"""CinematicSaveVideo: frames -> mp4 (H.264), webm (VP9), animated gif or webp, with the workflow inside.

Files play everywhere: mp4 is H.264 in yuv420p with +faststart (not the original pipeline's mp4v); sizes are made
even by repeating the last row/column where needed. The prompt and the workflow are embedded (mp4/webm: the
`comment` tag as JSON {"prompt", "workflow"}; gif: the comment block; webp: EXIF like ComfyUI's own webp saver),
so a shared video carries its graph: `video_reader.read_embedded_workflow(path)` reads it back. The encoders
themselves are in video_encoders.py.

A file is published only when it is whole: the encoder writes a private temporary file in the target folder (a
hidden name unique to the call), its exit status is checked, the result is decoded back and its frames counted, and
only then does it get its final name. The numbered name is claimed atomically (a hard link that fails if the name
exists, then the next counter), so saves with one prefix running at the same moment never collide. Any failure or
Cancel removes the temporary file: no broken or half-written video is ever left behind.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import comfy_env
from .video_encoders import (FFmpegUnavailable, VideoWriteError, _disk_hint, _verify_ffmpeg,  # noqa: F401
                             _verify_pillow, _write_ffmpeg, _write_pillow)  # errors re-exported

FORMATS = ["mp4", "webm", "gif", "webp"]


class OutputPathError(ValueError):
    pass


def _frames_uint8(images: torch.Tensor) -> np.ndarray:
    if images.ndim != 4 or images.shape[-1] not in (3, 4):
        raise ValueError(f"Save Video takes an IMAGE batch [frames, height, width, 3], got {tuple(images.shape)}.")
    if images.shape[0] == 0:
        raise ValueError("Save Video got no frames.")
    return (images[..., :3].float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


# ------------------------------------------------------------------------------------------- where it goes


@dataclass
class SaveTarget:
    """Where a numbered save goes: `folder/<name>_<counter:05>_.<ext>`, counting up from `counter` to a free name."""

    folder: Path
    name: str
    counter: int
    subfolder: str  # relative to the output folder, `/`-separated ("" for the folder itself)
    ext: str

    def filename(self, counter: int) -> str:
        return f"{self.name}_{counter:05}_.{self.ext}"


def _refuse(filename_prefix: str, why: str):
    raise OutputPathError(f"filename_prefix {filename_prefix!r} {why}; use a relative name inside the output folder "
                          "such as 'Cinematic/video'.")


def _inside(folder: Path, base: Path) -> bool:
    """Whether `folder` is `base` or below it, both compared as resolved (links followed) paths."""
    folder, base = folder.resolve(), base.resolve()
    return folder == base or base in folder.parents


def save_target(filename_prefix: str, width: int, height: int, ext: str) -> SaveTarget:
    """The folder, name and first counter for a save, with ComfyUI's scheme `<prefix>_00001_.<ext>` (inside ComfyUI
    its own `folder_paths.get_save_image_path`, so %date% and friends work). The prefix is checked on the resolved
    path: one whose folder lies outside the output folder (`..`, an absolute path, a link leading out) or that has
    no file name part ("", ".", "sub/..") is refused before anything is written."""
    out_dir = comfy_env.output_dir()
    if not isinstance(filename_prefix, str) or not filename_prefix.strip():
        _refuse(filename_prefix, "is empty")
    if comfy_env.folder_paths is not None:
        try:
            folder, name, counter, subfolder, _ = comfy_env.folder_paths.get_save_image_path(
                filename_prefix, str(out_dir), width, height)
        except Exception as exc:  # ComfyUI raises on a prefix outside the output folder
            raise OutputPathError(f"filename_prefix {filename_prefix!r} is not allowed: {exc}") from None
        folder = Path(folder)
    else:
        if os.path.isabs(filename_prefix) or Path(filename_prefix).is_absolute():
            _refuse(filename_prefix, "is an absolute path, outside the output folder")
        normal = os.path.normpath(filename_prefix)
        subfolder, name = os.path.split(normal)
        folder = out_dir / subfolder
        counter = None
    if name in ("", ".", ".."):
        _refuse(filename_prefix, "has no file name part (it names a folder)")
    if not _inside(folder, out_dir):
        _refuse(filename_prefix, f"points outside the output folder {out_dir.resolve()}")
    subfolder = Path(os.path.relpath(folder.resolve(), out_dir.resolve())).as_posix()
    subfolder = "" if subfolder == "." else subfolder
    if counter is None:
        pattern = re.compile(re.escape(name) + r"_(\d+)_\.")
        existing = [int(m.group(1)) for p in folder.glob(f"{_glob_escape(name)}_*") if (m := pattern.match(p.name))] \
            if folder.is_dir() else []
        counter = max(existing, default=0) + 1
    return SaveTarget(folder, name, int(counter), subfolder, ext)


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def _metadata(prompt, extra_pnginfo) -> dict:
    meta = {}
    if prompt is not None:
        meta["prompt"] = prompt
    if isinstance(extra_pnginfo, dict) and "workflow" in extra_pnginfo:
        meta["workflow"] = extra_pnginfo["workflow"]
    return meta


# ------------------------------------------------------------------------------------------- writing


def _private_temp(folder: Path, stem: str, fmt: str) -> Path:
    """Create an empty, hidden file only this call uses (pid, thread and a random part; O_EXCL), beside the target so
    publishing it is a link/rename within one file system."""
    tag = f"{os.getpid()}-{threading.get_ident()}"
    for _ in range(100):
        path = folder / f".{stem[:80]}.{tag}-{secrets.token_hex(4)}.partial.{fmt}"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return path
    raise VideoWriteError(f"Could not create a temporary file in {folder}.")


def _make_folder(folder: Path) -> list[Path]:
    """mkdir -p; returns the folders it created (removed again if the save fails and they are still empty)."""
    created = []
    for parent in reversed([folder, *folder.parents]):
        if not parent.exists():
            try:
                parent.mkdir()
                created.append(parent)
            except FileExistsError:
                pass
    return created


def _encode_verified(images: torch.Tensor, folder: Path, stem: str, fps: float, fmt: str, crf: int,
                     prompt, extra_pnginfo) -> tuple[Path, list[Path]]:
    """Encode into a private temporary file in `folder` and check it decodes: (that file, folders created for it).
    On any failure nothing of it is left."""
    if fmt not in FORMATS:
        raise ValueError(f"Unknown format {fmt!r}; choose one of {', '.join(FORMATS)}.")
    if not (isinstance(fps, (int, float)) and np.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number, got {fps}.")
    frames = _frames_uint8(images)
    meta = _metadata(prompt, extra_pnginfo)
    created: list[Path] = []
    tmp = None
    try:
        try:
            created = _make_folder(folder)
            tmp = _private_temp(folder, stem, fmt)
            if fmt in ("mp4", "webm"):
                comment = json.dumps(meta, separators=(",", ":")) if meta else None
                try:
                    _write_ffmpeg(tmp, frames, fps, fmt, crf, comment)
                except FFmpegUnavailable:
                    raise
                except VideoWriteError:
                    if comment is None:
                        raise
                    # Perhaps the muxer refused the metadata: the video matters more than its graph; a failure that
                    # is not about the metadata fails again and is reported.
                    _write_ffmpeg(tmp, frames, fps, fmt, crf, None)
                    print("[Cinematic] the video was written without its embedded workflow (the muxer refused it).")
                _verify_ffmpeg(tmp, frames.shape[0], fmt)
            else:
                _write_pillow(tmp, frames, fps, fmt, crf, meta)
                _verify_pillow(tmp, frames, fps, fmt)
        except OSError as exc:  # the file system said no: disk full, file too large, read-only, permissions
            reason = exc.strerror or str(exc)
            if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
                reason += " (the disk is full)"
            raise VideoWriteError(f"Writing the {fmt} into {folder} failed: {reason}.{_disk_hint(folder)} "
                                  "Nothing was saved.") from None
    except BaseException:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink()
        _remove_empty(created)
        raise
    return tmp, created


def _remove_empty(folders: list[Path]):
    for folder in reversed(folders):
        with contextlib.suppress(OSError):
            folder.rmdir()  # only if still empty: another save may be using it


def _claim(tmp: Path, target: SaveTarget) -> Path:
    """Give `tmp` the first free numbered name, atomically: os.link fails if the name exists (another save took it),
    then the next counter is tried. Where the file system has no hard links, the name is reserved with an exclusive
    create and the file renamed over the reservation."""
    counter = target.counter
    while True:
        final = target.folder / target.filename(counter)
        try:
            os.link(tmp, final)
            return final
        except FileExistsError:
            counter += 1
            continue
        except OSError:
            pass  # no hard links here (FAT, some network shares): reserve the name instead
        try:
            fd = os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            counter += 1
            continue
        os.close(fd)
        try:
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                final.unlink()
            raise
        return final


def save_video(images: torch.Tensor, target: SaveTarget, fps: float, crf: int = 19, prompt=None,
               extra_pnginfo=None) -> Path:
    """Encode, verify, then publish under the first free numbered name of `target` (see _claim)."""
    tmp, created = _encode_verified(images, target.folder, target.name, fps, target.ext, crf, prompt, extra_pnginfo)
    try:
        return _claim(tmp, target)
    except BaseException:
        _remove_empty(created)
        raise
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def write_video(images: torch.Tensor, path: Path, fps: float, fmt: str, crf: int = 19,
                prompt=None, extra_pnginfo=None) -> Path:
    """Write exactly `path` (replacing a file there): encoded and verified under a private temporary name beside it,
    then renamed in one step. On any failure nothing is left."""
    path = Path(path)
    tmp, created = _encode_verified(images, path.parent, path.stem, fps, fmt, crf, prompt, extra_pnginfo)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        _remove_empty(created)
        raise
    return path


# ------------------------------------------------------------------------------------------- the node


class CinematicSaveVideo:
    DESCRIPTION = ("Saves frames as a video that plays everywhere (H.264 mp4, VP9 webm, gif, webp), with the "
                   "workflow embedded so the file can be dropped back into ComfyUI.")
    CATEGORY = "Cinematic/output"
    RETURN_TYPES = ()
    FUNCTION = "save"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "images": ("IMAGE", {"tooltip": "The frames, in order (all frames of video 0, then video 1, ...)."}),
            "fps": ("FLOAT", {"default": 8.0, "min": 0.1, "max": 240.0, "step": 0.5, "tooltip": (
                "Frames per second (the original: 8). Duration = frames / fps.")}),
            "filename_prefix": ("STRING", {"default": "Cinematic/video", "tooltip": (
                "File name prefix inside ComfyUI's output folder; may include subfolders. A counter is added.")}),
            "format": (FORMATS, {"default": "mp4", "tooltip": (
                "mp4: H.264 yuv420p with +faststart, plays in browsers, QuickTime and Discord (odd widths/heights "
                "get their last row/column repeated to make them even). webm: VP9. gif / webp: animated images.")}),
        }, "optional": {
            "crf": ("INT", {"default": 19, "min": 0, "max": 51, "tooltip": (
                "Quality: lower is better and bigger (mp4/webm constant rate factor; webp quality = 100 - 2*crf). "
                "19 is visually lossless for most clips.")}),
        }, "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}

    def save(self, images, fps=8.0, filename_prefix="Cinematic/video", format="mp4", crf=19, prompt=None,
             extra_pnginfo=None):
        _, height, width, _ = images.shape
        target = save_target(filename_prefix, width, height, format)
        path = save_video(images, target, fps, crf, prompt, extra_pnginfo)
        frames = images.shape[0]
        info = f"{frames} frames at {fps:g} fps = {frames / fps:.2f} s, {width}x{height} {format}"
        return {"ui": {"images": [{"filename": path.name, "subfolder": target.subfolder, "type": "output"}],
                       "animated": (True,), "cinematic_info": [info]}}


NODE_CLASS_MAPPINGS = {"CinematicSaveVideo": CinematicSaveVideo}
NODE_DISPLAY_NAME_MAPPINGS = {"CinematicSaveVideo": "Save Video (Cinematic)"}
