"""CinematicSaveVideo: frames -> mp4 (H.264), webm (VP9), animated gif or webp, with the workflow inside.

Files play everywhere: mp4 is H.264 in yuv420p with +faststart (not the original pipeline's mp4v); sizes are made
even by repeating the last row/column where needed. The prompt and the workflow are embedded (mp4/webm: the
`comment` tag as JSON {"prompt", "workflow"}; gif: the comment block; webp: EXIF like ComfyUI's own webp saver),
so a shared video carries its graph: `read_embedded_workflow(path)` reads it back. Each file is written under a
temporary name and renamed when complete: a failed or cancelled run leaves no broken video.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import torch

from . import comfy_env

FORMATS = ["mp4", "webm", "gif", "webp"]


class OutputPathError(ValueError):
    pass


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


def save_path(filename_prefix: str, width: int, height: int, ext: str) -> tuple[Path, str, str]:
    """(full path, file name, subfolder) with ComfyUI's counter scheme: <prefix>_00001_.<ext>. A prefix that
    resolves outside the output folder is refused before anything is written."""
    out_dir = comfy_env.output_dir()
    if comfy_env.folder_paths is not None:
        try:
            folder, name, counter, subfolder, _ = comfy_env.folder_paths.get_save_image_path(
                filename_prefix, str(out_dir), width, height)
        except Exception as exc:  # ComfyUI raises on a prefix outside the output folder
            raise OutputPathError(f"filename_prefix {filename_prefix!r} is not allowed: {exc}") from None
        folder = Path(folder)
    else:
        base = out_dir.resolve()
        target = (base / filename_prefix).resolve()
        if target != base and base not in target.parents:
            raise OutputPathError(f"filename_prefix {filename_prefix!r} points outside the output folder {base}; "
                                  "use a relative name such as 'Cinematic/video'.")
        folder, name = target.parent, target.name
        if not name:
            raise OutputPathError("filename_prefix needs a file name part, e.g. 'Cinematic/video'.")
        subfolder = os.path.relpath(folder, base) if folder != base else ""
        pattern = re.compile(re.escape(name) + r"_(\d+)_?\.")
        existing = [int(m.group(1)) for p in folder.glob(f"{name}_*") if (m := pattern.match(p.name))] \
            if folder.is_dir() else []
        counter = max(existing, default=0) + 1
    while True:
        filename = f"{name}_{counter:05}_.{ext}"
        if not (folder / filename).exists():
            break
        counter += 1
    return folder / filename, filename, subfolder.replace(os.sep, "/") if subfolder != "." else ""


def _metadata(prompt, extra_pnginfo) -> dict:
    meta = {}
    if prompt is not None:
        meta["prompt"] = prompt
    if isinstance(extra_pnginfo, dict) and "workflow" in extra_pnginfo:
        meta["workflow"] = extra_pnginfo["workflow"]
    return meta


def _write_ffmpeg(path: Path, frames: np.ndarray, fps: float, fmt: str, crf: int, comment: str | None):
    import imageio_ffmpeg

    frames = _even(frames)
    _, h, w, _ = frames.shape
    if fmt == "mp4":
        codec, params = "libx264", ["-crf", str(crf), "-preset", "medium", "-movflags", "+faststart"]
    else:
        codec, params = "libvpx-vp9", ["-crf", str(crf), "-b:v", "0", "-row-mt", "1"]
    if comment:
        params += ["-metadata", f"comment={comment}"]
    writer = imageio_ffmpeg.write_frames(str(path), (w, h), fps=fps, codec=codec, pix_fmt_in="rgb24",
                                         pix_fmt_out="yuv420p", quality=None, macro_block_size=1,
                                         output_params=params, ffmpeg_log_level="error")
    writer.send(None)
    try:
        for frame in frames:
            comfy_env.throw_if_interrupted()
            writer.send(np.ascontiguousarray(frame))
    finally:
        writer.close()


def _write_pillow(path: Path, frames: np.ndarray, fps: float, fmt: str, crf: int, meta: dict):
    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    duration = max(1, round(1000 / fps))
    kwargs = dict(save_all=True, append_images=images[1:], duration=duration, loop=0)
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


def write_video(images: torch.Tensor, path: Path, fps: float, fmt: str, crf: int = 19,
                prompt=None, extra_pnginfo=None) -> Path:
    """Write atomically: a temporary file next to the target, renamed when complete, removed on any failure."""
    if fmt not in FORMATS:
        raise ValueError(f"Unknown format {fmt!r}; choose one of {', '.join(FORMATS)}.")
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}.")
    frames = _frames_uint8(images)
    meta = _metadata(prompt, extra_pnginfo)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.partial.{fmt}")
    try:
        if fmt in ("mp4", "webm"):
            comment = json.dumps(meta, separators=(",", ":")) if meta else None
            try:
                _write_ffmpeg(tmp, frames, fps, fmt, crf, comment)
            except (OSError, RuntimeError):
                if comment is None:
                    raise
                # The muxer refused the metadata (e.g. too large): the video matters more than its graph.
                print("[Cinematic] the video was written without its embedded workflow (the muxer refused it).")
                tmp.unlink(missing_ok=True)
                _write_ffmpeg(tmp, frames, fps, fmt, crf, None)
        else:
            _write_pillow(tmp, frames, fps, fmt, crf, meta)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


# ------------------------------------------------------------------------------------------- reading back


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
        path, filename, subfolder = save_path(filename_prefix, width, height, format)
        write_video(images, path, fps, format, crf, prompt, extra_pnginfo)
        frames = images.shape[0]
        info = f"{frames} frames at {fps:g} fps = {frames / fps:.2f} s, {width}x{height} {format}"
        return {"ui": {"images": [{"filename": filename, "subfolder": subfolder, "type": "output"}],
                       "animated": (True,), "cinematic_info": [info]}}


NODE_CLASS_MAPPINGS = {"CinematicSaveVideo": CinematicSaveVideo}
NODE_DISPLAY_NAME_MAPPINGS = {"CinematicSaveVideo": "Save Video (Cinematic)"}
