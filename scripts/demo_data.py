"""The demo model's world: synthetic clips of one coloured shape moving in a straight line on a plain background,
their prompts, and the evaluation that reads a decoded video back (colour, one coherent blob per frame, direction).

Pure torch, no pack imports: scripts/train_demo_model.py trains on these clips and prints `evaluate`'s table, and
tests import this module (tests put scripts/ on sys.path) to measure what the demo model makes.

Frames are float [F, 3, H, W] in 0..1 for training; the evaluation takes [F, H, W, 3] in 0..1 (ComfyUI's IMAGE
layout, or uint8 frames read from an mp4 divided by 255).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

SIZE = 64
FRAMES = 16
#: pixels per frame at SIZE 64 (scaled with the size)
SPEED = 2.0
COLOURS = {
    "red": (0.90, 0.12, 0.12),
    "green": (0.12, 0.78, 0.20),
    "blue": (0.15, 0.30, 0.95),
    "yellow": (0.95, 0.85, 0.10),
}
SHAPES = ("circle", "square")
#: (dx, dy) in image coordinates (y grows downwards)
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
BACKGROUND = (0.20, 0.20, 0.22)
#: the prompt the evaluation uses; training also sees the others
PROMPT = "a {colour} {shape} moving {direction}"
PHRASINGS = (
    PROMPT,
    "{colour} {shape} moving {direction}",
    "a {colour} {shape} going {direction}",
    "a {shape}, {colour}, moving {direction}",
    "the {colour} {shape} moves {direction}",
)
#: blob radius (circle) / half side (square) at SIZE 64
RADIUS = 9.0


@dataclass(frozen=True)
class Combo:
    shape: str
    colour: str
    direction: str

    def prompt(self, phrasing: str = PROMPT) -> str:
        return phrasing.format(shape=self.shape, colour=self.colour, direction=self.direction)


def combos() -> list[Combo]:
    """All 2 x 4 x 4 = 32 shape/colour/direction combinations, in a fixed order."""
    return [Combo(s, c, d) for s, c, d in itertools.product(SHAPES, COLOURS, DIRECTIONS)]


def all_prompts() -> list[str]:
    """Every prompt training uses (the empty prompt included: classifier-free guidance's unconditional)."""
    return [""] + [combo.prompt(p) for combo in combos() for p in PHRASINGS]


# ------------------------------------------------------------------------------------------------ rendering


def render(shape: str, colour: str, centres: torch.Tensor, size: int = SIZE) -> torch.Tensor:
    """One blob per frame at `centres` [F, 2] (x, y in pixels): [F, 3, size, size] in 0..1, edges antialiased."""
    scale = size / SIZE
    radius = RADIUS * scale
    coords = torch.arange(size, dtype=torch.float32) + 0.5
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    dx = xx[None] - centres[:, 0, None, None]
    dy = yy[None] - centres[:, 1, None, None]
    if shape == "circle":
        dist = torch.sqrt(dx * dx + dy * dy) - radius
    elif shape == "square":
        dist = torch.maximum(dx.abs(), dy.abs()) - radius * 0.9
    else:
        raise ValueError(f"unknown shape {shape!r}; one of {', '.join(SHAPES)}")
    alpha = (0.5 - dist).clamp(0, 1)[:, None]  # 1 inside, 0 outside, a one-pixel ramp on the edge
    fg = torch.tensor(COLOURS[colour]).view(1, 3, 1, 1)
    bg = torch.tensor(BACKGROUND).view(1, 3, 1, 1)
    return bg + alpha * (fg - bg)


def track(direction: str, start: tuple[float, float], frames: int = FRAMES, size: int = SIZE) -> torch.Tensor:
    """Centres [F, 2] moving SPEED (scaled) pixels a frame in `direction` from `start`."""
    dx, dy = DIRECTIONS[direction]
    step = SPEED * size / SIZE
    t = torch.arange(frames, dtype=torch.float32)
    return torch.stack([start[0] + dx * step * t, start[1] + dy * step * t], dim=1)


def random_start(direction: str, generator: torch.Generator, frames: int = FRAMES, size: int = SIZE) -> tuple:
    """A start that keeps the blob whole in the frame for the whole clip."""
    margin = (RADIUS + 2) * size / SIZE
    travel = SPEED * size / SIZE * (frames - 1)
    lo, hi = margin, size - margin
    u = torch.rand(2, generator=generator).tolist()
    across = lo + u[0] * (hi - lo)
    along_span = max(hi - lo - travel, 0.0)
    along = lo + u[1] * along_span
    dx, dy = DIRECTIONS[direction]
    if dx < 0 or dy < 0:
        along = size - along
    return (along, across) if dx else (across, along)


def random_clips(n: int, generator: torch.Generator, frames: int = FRAMES, size: int = SIZE):
    """`n` random clips [n, 3, F, size, size] in -1..1 (the VAE's range) and their combos."""
    all_combos = combos()
    picks = torch.randint(len(all_combos), (n,), generator=generator).tolist()
    clips, chosen = [], []
    for index in picks:
        combo = all_combos[index]
        centres = track(combo.direction, random_start(combo.direction, generator, frames, size), frames, size)
        clips.append(render(combo.shape, combo.colour, centres, size).transpose(0, 1))
        chosen.append(combo)
    return torch.stack(clips) * 2 - 1, chosen


def random_frames(n: int, generator: torch.Generator, size: int = SIZE) -> torch.Tensor:
    """`n` single frames [n, 3, size, size] in -1..1 with the blob anywhere (the VAE's training data)."""
    all_combos = combos()
    out = []
    margin = RADIUS * size / SIZE
    for index in torch.randint(len(all_combos), (n,), generator=generator).tolist():
        combo = all_combos[index]
        centre = margin * 0.5 + torch.rand(1, 2, generator=generator) * (size - margin)
        out.append(render(combo.shape, combo.colour, centre, size)[0])
    return torch.stack(out) * 2 - 1


# ------------------------------------------------------------------------------------------------ evaluation


def _components(mask: torch.Tensor) -> torch.Tensor:
    """4-connected component labels of a bool [H, W] mask (0 = background), by label propagation."""
    h, w = mask.shape
    labels = torch.where(mask, torch.arange(1, h * w + 1, dtype=torch.float32).view(h, w), torch.zeros(()))
    for _ in range(h * w):
        padded = F.pad(labels[None, None], (1, 1, 1, 1))[0, 0]
        neighbours = torch.stack([labels, padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:]])
        new = torch.where(mask, neighbours.max(dim=0).values, torch.zeros(()))
        if torch.equal(new, labels):
            break
        labels = new
    return labels


@dataclass
class FrameBlob:
    ok: bool  # one coherent blob of about the trained size
    centre: tuple[float, float] | None
    colour: torch.Tensor | None  # mean RGB of the blob, 0..1


def find_blob(frame: torch.Tensor, threshold: float = 0.18) -> FrameBlob:
    """The blob in one frame [H, W, 3] in 0..1: pixels that differ from the frame's median colour (its background)."""
    size = frame.shape[0]
    background = frame.reshape(-1, 3).median(dim=0).values
    mask = (frame - background).abs().amax(dim=-1) > threshold
    total = int(mask.sum())
    if total == 0:
        return FrameBlob(False, None, None)
    labels = _components(mask)
    ids, counts = labels[mask].unique(return_counts=True)
    largest = ids[counts.argmax()]
    blob = labels == largest
    area = int(blob.sum())
    expected = math.pi * (RADIUS * size / SIZE) ** 2
    ok = area >= 0.85 * total and 0.35 * expected <= area <= 2.5 * expected
    ys, xs = torch.nonzero(blob, as_tuple=True)
    centre = (float(xs.float().mean()) + 0.5, float(ys.float().mean()) + 0.5)
    return FrameBlob(ok, centre, frame[blob].mean(dim=0))


def nearest_colour(rgb: torch.Tensor) -> str:
    names = list(COLOURS)
    table = torch.tensor([COLOURS[n] for n in names])
    return names[int((table - rgb.float()).pow(2).sum(dim=1).argmin())]


def judge_video(frames: torch.Tensor, combo: Combo) -> dict:
    """One decoded video [F, H, W, 3] in 0..1 against what its prompt asked: the colour of its blobs (mean over the
    frames), the fraction of frames with one coherent blob, and the direction of the blob's centroid track (least
    squares over the frames that have a blob; at least a quarter of the trained speed, else 'still')."""
    blobs = [find_blob(frame.float()) for frame in frames]
    found = [(i, b) for i, b in enumerate(blobs) if b.centre is not None]
    coherent = sum(b.ok for b in blobs) / len(blobs)
    colour = nearest_colour(torch.stack([b.colour for _, b in found]).mean(dim=0)) if found else None
    direction = "still"
    if len(found) >= 2:
        t = torch.tensor([i for i, _ in found], dtype=torch.float32)
        xy = torch.tensor([b.centre for _, b in found])
        t = t - t.mean()
        slope = (t[:, None] * (xy - xy.mean(dim=0))).sum(dim=0) / t.pow(2).sum()
        speed = SPEED * frames.shape[1] / SIZE
        axis = int(slope.abs().argmax())
        if float(slope[axis].abs()) >= speed / 4:
            direction = {(0, True): "right", (0, False): "left", (1, True): "down", (1, False): "up"}[
                (axis, bool(slope[axis] > 0))]
    return {"colour": colour, "colour_ok": colour == combo.colour, "coherent": coherent,
            "direction": direction, "direction_ok": direction == combo.direction}


def summarise(results: list[dict]) -> dict:
    n = len(results)
    return {"videos": n,
            "colour_right": sum(r["colour_ok"] for r in results) / n,
            "one_blob_frames": sum(r["coherent"] for r in results) / n,
            "direction_right": sum(r["direction_ok"] for r in results) / n}


def format_table(summary: dict) -> str:
    return ("| measure | result | target |\n| --- | --- | --- |\n"
            f"| colour right ({summary['videos']} videos) | {summary['colour_right']:.1%} | >= 90% |\n"
            f"| one coherent blob (frames) | {summary['one_blob_frames']:.1%} | >= 90% |\n"
            f"| direction right (chance 25%) | {summary['direction_right']:.1%} | >= 75% |")
