"""Rows of a CONDITIONING against a video latent of B videos and F frames (CONTRACT.md), in pure torch.

    rows = rows_for_latent(cond [R, L, D], batch=B, frames=F)   # -> [B, L, D] (per video) or [B*F, L, D] (per frame)
    cond, uncond = match_layouts(cond, uncond, batch=B, frames=F)

The rows are read in this order:
  * R <= B: one row per video, repeated over the videos the way ComfyUI's core `repeat_to_batch_size` does
    (2 rows on 3 videos: rows 0, 1, 0);
  * R == F: one row per frame, the same rows for every video (a prompt schedule);
  * R == B*F: one row per frame per video, batch-major (all frames of video 0, then video 1, ...);
  * anything else is an error that names the rows, the frames and the batch.
The UNet3D takes both layouts: [B, L, D] is shared by the frames of each video, [B*F, L, D] is one row per frame.
"""

from __future__ import annotations

import torch


class ConditioningRowsError(ValueError):
    pass


def per_video_rows(cond: torch.Tensor, batch: int) -> torch.Tensor:
    """`batch` rows from R <= batch rows, cycling (ComfyUI's repeat_to_batch_size: 0, 1, 0, 1, ...)."""
    rows = cond.shape[0]
    if rows == batch:
        return cond
    repeats = -(-batch // rows)
    return cond.repeat(repeats, *([1] * (cond.ndim - 1)))[:batch]


def rows_for_latent(cond: torch.Tensor, batch: int, frames: int, which: str = "conditioning") -> torch.Tensor:
    """[B, L, D] when the rows are per video, [B*F, L, D] when they are per frame (see the module doc)."""
    if cond.ndim != 3:
        raise ConditioningRowsError(f"The {which} has shape {tuple(cond.shape)}; expected [rows, tokens, width].")
    rows = cond.shape[0]
    if rows == 0:
        raise ConditioningRowsError(f"The {which} has no rows; connect a text encode node to it.")
    if rows <= batch:
        return per_video_rows(cond, batch)
    if rows == frames:
        return cond.repeat(batch, 1, 1)
    if rows == batch * frames:
        return cond
    per_frame = f"{frames} (one per frame)" + (f" or {batch * frames} (one per frame of each video)" if batch > 1 else "")
    raise ConditioningRowsError(
        f"The {which} has {rows} rows, which fits neither the {batch} video(s) of the latent nor its {frames} frames: "
        f"a CONDITIONING needs 1 to {batch} rows (one per video) or {per_frame}. A prompt schedule made for "
        f"{rows} frames on a {frames}-frame clip gives this: set the schedule's frames to {frames}, or the latent's "
        f"frames to {rows}.")


def is_per_frame(rows: torch.Tensor, batch: int, frames: int) -> bool:
    """Whether rows made by rows_for_latent are per frame ([B*F]) rather than per video ([B])."""
    return frames > 1 and rows.shape[0] == batch * frames and rows.shape[0] != batch


def to_per_frame(rows: torch.Tensor, batch: int, frames: int) -> torch.Tensor:
    """Per-video rows [B] -> per-frame rows [B*F] (each video's row for each of its frames); per-frame rows as they are."""
    if is_per_frame(rows, batch, frames) or frames == 1:
        return rows
    return rows.repeat_interleave(frames, dim=0)


def match_layouts(cond: torch.Tensor, uncond: torch.Tensor | None, batch: int, frames: int,
                  names: tuple[str, str] = ("positive conditioning", "negative conditioning")):
    """Both through rows_for_latent; if one is per frame and the other per video, the per-video one is expanded to
    per frame, so the two can be batched into one UNet call."""
    cond = rows_for_latent(cond, batch, frames, names[0])
    if uncond is None:
        return cond, None
    uncond = rows_for_latent(uncond, batch, frames, names[1])
    if is_per_frame(cond, batch, frames) != is_per_frame(uncond, batch, frames):
        cond, uncond = to_per_frame(cond, batch, frames), to_per_frame(uncond, batch, frames)
    return cond, uncond


def slice_frames(context: torch.Tensor, batch: int, frames: int, index) -> torch.Tensor:
    """The rows of the frames `index` (a list of frame numbers) of every video: per-frame rows [B*F] -> [B*len];
    per-video rows [B] are returned as they are."""
    if not is_per_frame(context, batch, frames):
        return context
    index = torch.as_tensor(index, dtype=torch.long, device=context.device)
    per_video = context.reshape(batch, frames, *context.shape[1:])
    return per_video.index_select(1, index).reshape(batch * len(index), *context.shape[1:])
