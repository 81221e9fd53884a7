"""Frames you give it: a LATENT's `noise_mask` (ComfyUI's convention: 1 = generate, 0 = keep the LATENT's samples).

    mask = prepare_mask(latent["noise_mask"], latent["samples"].shape)        # [B, 1, F, h, w] in 0..1
    denoiser = MaskedDenoiser(denoiser, source, noise, mask, sigmas, schedule)

Before every model call the kept positions hold the source plus the run's own initial noise at that call's sigma
(`source + sigma * noise` in k-diffusion terms), and the denoised value there is the source, exactly as core's
`KSamplerX0Inpaint` does; the sampler's own state is left alone, so every sampler, schedule and context-window
setting works unchanged. After the run the positions still kept at the last model call are the source, bit for bit.

Soft values m (between 0 and 1) follow core `DifferentialDiffusion` and the A1111 extension's inpainting frames: a
position is kept while the schedule's progress threshold `(t_now - t_last) / (t_first - t_last)` (1 at the first
step, falling towards 0) is above m, and generated once m reaches it; so m is the share of the schedule, counted
from the end, in which the model may change that position. m = 0 is kept for the whole run (also on a schedule whose
last model call sits at the lowest training sigma, where the threshold reaches 0 and core would release it).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .schedule import DiscreteSchedule


def prepare_mask(mask: torch.Tensor, latent_shape) -> torch.Tensor:
    """A MASK of any shape core accepts for a video latent -> float [B, 1, F, h, w] in 0..1.

    Read as core's `comfy.utils.reshape_mask` reads them: a 3-D or 4-D mask is a run of frames ([F, H, W] as a MASK
    batch, [F, 1, H, W] as core `SetLatentNoiseMask` stores it, [1, F, H, W]); a 5-D one is [B or 1, 1, F, H, W]; at
    pixel or latent size (any size: resized like core, bilinearly within each frame). Also [B, F, H, W] with one mask
    per video, and [F] / [B, F] (one value per frame). One frame (F = 1) holds for every frame. The frame count must
    be the latent's."""
    if not isinstance(mask, torch.Tensor):
        raise ValueError(f"noise_mask must be a tensor, got {type(mask).__name__}.")
    b, _, frames, h, w = latent_shape
    m = mask.detach().to(torch.float32).cpu()
    shape = tuple(m.shape)
    if m.ndim == 1:  # [F]
        m = m.reshape(1, 1, -1, 1, 1)
    elif m.ndim == 2:  # [B, F]
        m = m.reshape(m.shape[0], 1, m.shape[1], 1, 1)
    elif m.ndim == 4 and b > 1 and m.shape[:2] == (b, frames):  # [B, F, H, W]: one mask per video
        m = m.unsqueeze(1)
    elif m.ndim in (3, 4):  # core: every leading axis is frames
        m = m.reshape(1, 1, -1, m.shape[-2], m.shape[-1])
    elif m.ndim == 5:
        if m.shape[1] != 1:
            raise ValueError(f"noise_mask of shape {shape} has {m.shape[1]} channels; a video mask has one "
                             f"([B, 1, F, H, W]).")
    else:
        raise ValueError(f"noise_mask of shape {shape} fits no video mask layout; use [frames, height, width] "
                         f"(a MASK batch with one mask per frame) or [batch, 1, frames, height, width].")
    if m.shape[0] not in (1, b):
        raise ValueError(f"noise_mask of shape {shape} holds {m.shape[0]} videos but the latent holds {b}; give "
                         f"one mask for all videos or one per video.")
    if m.shape[2] not in (1, frames):
        raise ValueError(f"noise_mask of shape {shape} has {m.shape[2]} frames but the latent has {frames}; give "
                         f"one mask per frame (or one for all frames).")
    if m.shape[-2:] != (h, w):
        m = F.interpolate(m, size=(m.shape[2], h, w), mode="trilinear")
    return m.expand(b, 1, frames, h, w).clamp(0, 1).contiguous()


def is_trivial(mask: torch.Tensor | None) -> bool:
    """A mask that generates everywhere (or none at all): the run is the unmasked one."""
    return mask is None or bool((mask >= 1).all())


class MaskThreshold:
    """Core DifferentialDiffusion's moving threshold over one run's sigmas, in training timesteps."""

    def __init__(self, sigmas: torch.Tensor, schedule: DiscreteSchedule):
        self.schedule = schedule
        sigma_to = max(float(sigmas[-1]), schedule.sigma_min)
        self.t_from = float(schedule.t(float(sigmas[0])))
        self.t_to = float(schedule.t(sigma_to))

    def __call__(self, sigma) -> float:
        t_now = float(self.schedule.t(float(torch.as_tensor(sigma).reshape(-1)[0])))
        if self.t_from == self.t_to:
            return 0.0
        return (t_now - self.t_to) / (self.t_from - self.t_to)


def generated(mask: torch.Tensor, threshold: float) -> torch.Tensor:
    """The binary mask of one model call: 1 where the position is generated (m >= threshold, m > 0)."""
    return ((mask >= threshold) & (mask > 0)).to(mask.dtype)


class MaskedDenoiser:
    """Wraps a k-diffusion denoiser `model(x, sigma) -> x0` so the masked positions hold `source` (scaled, k-space).

    `noise` is the run's initial noise (unit variance); `last` is the binary mask of the latest call."""

    def __init__(self, model: Callable, source: torch.Tensor, noise: torch.Tensor, mask: torch.Tensor,
                 sigmas: torch.Tensor, schedule: DiscreteSchedule):
        self.model = model
        self.source = source
        self.noise = noise
        self.mask = mask
        self.threshold = MaskThreshold(sigmas, schedule)
        self.last = generated(mask, self.threshold(sigmas[0])).bool()

    def __call__(self, x: torch.Tensor, sigma, *args, **kwargs) -> torch.Tensor:
        m = generated(self.mask, self.threshold(sigma)).bool()
        self.last = m
        s = float(torch.as_tensor(sigma).reshape(-1)[0])
        x_in = torch.where(m, x, self.source + self.noise * s)
        out = self.model(x_in, sigma, *args, **kwargs)
        return torch.where(m, out, self.source)
