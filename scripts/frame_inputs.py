"""make_video.py's held frames: --image (image-to-video, keyframes, loops) and --extend (continue a video file).

    images = read_inputs(args)                            # before any model is loaded: a bad file fails at once
    latent, held = held_frames_latent(args, nodes, vae, images)   # held: --extend's frames (IMAGE), else None
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def keyframe_error(args) -> str | None:
    """--keyframes checked against the --image count and --frames before anything is loaded (no torch needed)."""
    if not args.image:
        return None
    spec = importlib.util.spec_from_file_location("_cinematic_keyframes", ROOT / "samplers" / "keyframes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        module.parse_keyframes(args.keyframes, args.frames, len(args.image))
    except ValueError as exc:
        return f"--keyframes: {exc}"
    return None


def _fit(images, width: int, height: int, what: str):
    """IMAGE [N, H, W, 3] resized to width x height (bilinear, antialiased) when it differs, saying so."""
    import torch.nn.functional as F

    h, w = images.shape[1:3]
    if (w, h) == (width, height):
        return images
    print(f"note: {what} is {w}x{h}; resized to {width}x{height} (--width/--height)", file=sys.stderr)
    x = F.interpolate(images.permute(0, 3, 1, 2), size=(height, width), mode="bilinear", antialias=True)
    return x.clamp(0, 1).permute(0, 2, 3, 1).contiguous()


def _load_image(path: Path):
    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            array = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"--image {path} is not an image Pillow can read ({exc}); give a .png or .jpg.") from None
    return torch.from_numpy(array)[None]


def read_inputs(args):
    """The --image(s) or the --extend video as one IMAGE batch at --width x --height."""
    import torch

    if args.image:
        return torch.cat([_fit(_load_image(p), args.width, args.height, f"--image {p.name}") for p in args.image])
    from cinematic.nodes.video_reader import read_video_frames

    video = _fit(read_video_frames(args.extend), args.width, args.height, f"--extend {args.extend.name}")
    if args.overlap > video.shape[0]:
        raise ValueError(f"--overlap {args.overlap} is more than the {video.shape[0]} frames of {args.extend.name}.")
    return video


def held_frames_latent(args, nodes, vae, images):
    if args.image:
        (latent,) = nodes["CinematicImageToVideoLatent"]().place(vae, images, args.frames, args.keyframes,
                                                                  args.image_strength, falloff=args.falloff)
        return latent, None
    video = images
    (encoded,) = nodes["CinematicVAEEncode"]().encode(vae, video[-args.overlap:])
    (latent,) = nodes["CinematicExtendVideo"]().extend(encoded, args.frames, args.overlap)
    return latent, video
