"""Images placed on chosen frames of a clip: which frame holds which image, and the noise mask that holds them.

    frames_of = parse_keyframes("0,-1", frames=16, images=1)     # [0, 15]
    owner = nearest_keyframe(frames_of, 16)                       # per frame: the index of its nearest keyframe
    mask = keyframe_mask(frames_of, 16, strength=1.0, falloff=2)  # [16]: 1 - held strength (0 = kept throughout)

The mask follows the LATENT `noise_mask` convention (1 = generate, 0 = keep). A keyframe held with strength s has
mask 1 - s; with `falloff` n the n frames on each side are held with s * (n + 1 - d) / (n + 1) at distance d, and
where two keyframes reach one frame the stronger holds (the lower mask).

torch is imported only where a tensor is made, so the headless command can check keyframes before loading anything.
"""

from __future__ import annotations


def parse_keyframes(text: str, frames: int, images: int) -> list[int]:
    """Comma-separated 0-based frame indices, negative from the end. One image may go to several keyframes (a loop:
    "0,-1"); otherwise there is one keyframe per image. Raises a ValueError naming the problem."""
    parts = [p.strip() for p in str(text).replace(";", ",").split(",") if p.strip()]
    if not parts:
        raise ValueError('keyframes is empty; give the frame of each image, e.g. "0" (first), "-1" (last) or "0,-1".')
    indices = []
    for part in parts:
        try:
            value = int(part)
        except ValueError:
            raise ValueError(f"keyframes: {part!r} is not a frame number; write 0-based frame indices separated by "
                             f'commas, negative from the end ("0,-1").') from None
        if not -frames <= value < frames:
            raise ValueError(f"keyframe {value} is outside the clip of {frames} frames (valid: 0..{frames - 1}, or "
                             f"-1..-{frames} from the end).")
        indices.append(value % frames)
    if len(set(indices)) != len(indices):
        raise ValueError(f"keyframes {text!r} name the same frame twice ({indices}); give each frame once.")
    if images != 1 and images != len(indices):
        raise ValueError(f"{images} images but {len(indices)} keyframes ({text!r}): give one keyframe per image "
                         f"(or one image for all keyframes).")
    return indices


def nearest_keyframe(keyframes: list[int], frames: int) -> list[int]:
    """For every frame the position (in `keyframes`) of the nearest keyframe; ties go to the earlier one."""
    return [min(range(len(keyframes)), key=lambda k: (abs(keyframes[k] - f), keyframes[k])) for f in range(frames)]


def keyframe_mask(keyframes: list[int], frames: int, strength: float, falloff: int = 0):
    """[frames] float tensor: 1 - the strength each frame is held with (1 where no keyframe reaches)."""
    import torch

    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be between 0 and 1 (got {strength}): 1 holds the images through the whole "
                         f"schedule, 0 not at all.")
    if falloff < 0:
        raise ValueError(f"falloff must be 0 or more frames (got {falloff}).")
    held = torch.zeros(frames, dtype=torch.float64)
    for k in keyframes:
        for f in range(max(0, k - falloff), min(frames, k + falloff + 1)):
            held[f] = max(held[f], strength * (falloff + 1 - abs(f - k)) / (falloff + 1))
    return (1 - held).to(torch.float32)
