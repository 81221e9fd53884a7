"""Prompt travel: keyframed prompts -> one conditioning row per frame, in pure torch.

    keyframes = parse_schedule("0: a cat walking\\n24: a dog running")   # [(0, "a cat walking"), (24, ...)]
    rows = interpolate_rows(embeddings [P, ...], [(frame, embedding index), ...], frames)   # [frames, ...]

Frames between two keyframes interpolate linearly (frame f between k_i and k_j: (1 - w) c_i + w c_j with
w = (f - k_i) / (k_j - k_i)); frames before the first keyframe hold the first prompt, after the last the last.
"""

from __future__ import annotations

import re

import torch

_LINE = re.compile(r'^\s*"?\s*(-?\d+)\s*"?\s*:\s*(.*?)\s*$')


class PromptScheduleError(ValueError):
    pass


def _unquote(text: str) -> str:
    """FizzNodes-style `"24": "a dog running",` lines: drop the trailing comma and the quotes."""
    if text.startswith('"'):
        text = text.rstrip(",").strip()
        if len(text) >= 2 and text.endswith('"'):
            return text[1:-1]
    return text


def parse_schedule(text: str) -> list[tuple[int, str]]:
    """`N: prompt` per line (N the 0-based frame); blank lines and lines starting with # are skipped. Also takes
    FizzNodes' quoted `"N": "prompt",` lines. Returns the keyframes sorted by frame."""
    keyframes: dict[int, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped in ("{", "}"):
            continue
        match = _LINE.match(stripped)
        if match is None:
            raise PromptScheduleError(
                f"Prompt schedule line {number} ({stripped[:60]!r}) is not a keyframe: write one per line as "
                f"`N: prompt`, N the frame number counted from 0, e.g. `0: a cat walking` then `24: a dog running`.")
        frame, prompt = int(match.group(1)), _unquote(match.group(2))
        if frame < 0:
            raise PromptScheduleError(f"Prompt schedule line {number}: frame {frame} is negative; frames count from 0.")
        if frame in keyframes:
            raise PromptScheduleError(f"Prompt schedule line {number}: frame {frame} has a keyframe already; give "
                                      "each frame at most one prompt.")
        keyframes[frame] = prompt
    if not keyframes:
        raise PromptScheduleError("The prompt schedule has no keyframes; write one per line as `N: prompt`, e.g. "
                                  "`0: a cat walking`.")
    return sorted(keyframes.items())


def compose(prompt: str, pre_text: str = "", app_text: str = "") -> str:
    """pre_text, the prompt and app_text joined by spaces (empty parts left out)."""
    return " ".join(part.strip() for part in (pre_text, prompt, app_text) if part and part.strip())


def interpolation_plan(keyframes: list[int], frames: int) -> list[tuple[int, int, float]]:
    """For each frame: (keyframe a, keyframe b, w) meaning (1 - w) * row_a + w * row_b, indices into `keyframes`
    (sorted frame numbers)."""
    plan = []
    last = len(keyframes) - 1
    for f in range(frames):
        if f <= keyframes[0]:
            plan.append((0, 0, 0.0))
        elif f >= keyframes[last]:
            plan.append((last, last, 0.0))
        else:
            j = next(i for i, k in enumerate(keyframes) if k > f)
            a, b = keyframes[j - 1], keyframes[j]
            plan.append((j - 1, j, (f - a) / (b - a)))
    return plan


def interpolate_rows(rows: torch.Tensor, keyframes: list[int], frames: int) -> torch.Tensor:
    """rows [K, ...] (one per keyframe, in keyframe order) -> [frames, ...] interpolated linearly."""
    if rows.shape[0] != len(keyframes):
        raise ValueError(f"{rows.shape[0]} rows for {len(keyframes)} keyframes")
    plan = interpolation_plan(keyframes, frames)
    a = torch.tensor([p[0] for p in plan])
    b = torch.tensor([p[1] for p in plan])
    w = torch.tensor([p[2] for p in plan], dtype=torch.float32).reshape(-1, *([1] * (rows.ndim - 1)))
    rows32 = rows.to(torch.float32)
    return ((1 - w) * rows32[a] + w * rows32[b]).to(rows.dtype)
