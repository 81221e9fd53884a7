"""CinematicSaveVideo: frames -> mp4 (H.264), webm (VP9), animated gif or webp, with the workflow inside.

Files play everywhere: mp4 is H.264 in yuv420p with +faststart (not the original pipeline's mp4v); sizes are made
even by repeating the last row/column where needed. The prompt and the workflow are embedded (mp4/webm: the
`comment` tag as JSON {"prompt", "workflow"}; gif: the comment block; webp: EXIF like ComfyUI's own webp saver),
so a shared video carries its graph: `read_embedded_workflow(path)` reads it back.

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
import shutil
import signal
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import comfy_env

FORMATS = ["mp4", "webm", "gif", "webp"]


class OutputPathError(ValueError):
    pass


class VideoWriteError(RuntimeError):
    """The encoder failed or its result did not decode; nothing was published. The message names the cause."""


class FFmpegUnavailable(VideoWriteError):
    """ffmpeg is missing or could not be started (a retry cannot help)."""


def _frames_uint8(images: torch.Tensor) -> np.ndarray:
    if images.ndim != 4 or images.shape[-1] not in (3, 4):
        raise ValueError(f"Save Video takes an IMAGE batch [frames, height, width, 3], got {tuple(images.shape)}.")
    if images.shape[0] == 0:
        raise ValueError("Save Video got no frames.")
    return (images[..., :3].float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def _even(frames: np.ndarray) -> np.ndarray:
    """yuv420p needs even sizes: repeat the last row / column where one is odd."""
    _, h, w, _ = frames.shape
    if h % 2:
        frames = np.concatenate([frames, frames[:, -1:]], axis=1)
    if w % 2:
        frames = np.concatenate([frames, frames[:, :, -1:]], axis=2)
    return frames


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
