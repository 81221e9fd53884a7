"""The tensor part of self-attention guidance (SAG, Hong et al. 2023) for video latents: pure torch.

SAG blurs the model's unconditional prediction where the middle block's self-attention concentrates (the tokens
that receive more than `threshold` of the attention, summed over the queries and averaged over the heads), feeds that
degraded prediction back through the model, and steers away from what the model makes of it. This module holds the
map and the blur; nodes/video_sag.py holds the ComfyUI plumbing.

Frames are folded into the batch, as the UNet3D's spatial attention sees them: a latent [B, C, F, h, w] becomes
B*F images [B*F, C, h, w], all frames of video 0 first, the same row order as the attention rows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

KERNEL_SIZE = 9  # the blur's footprint in latent pixels (SAG's choice)


def received_attention(q: torch.Tensor, k: torch.Tensor, heads: int) -> torch.Tensor:
    """How much self-attention each token receives: softmax(q k^T / sqrt(d)) averaged over the heads and summed over
    the queries. q/k `[rows, tokens, heads*d]` -> `[rows, tokens]` (each row sums to the number of tokens)."""
    q, k = (t.unflatten(-1, (heads, -1)).transpose(1, 2).float() for t in (q, k))  # [rows, heads, tokens, d]
    probs = torch.softmax(q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5, dim=-1)
    return probs.mean(dim=1).sum(dim=1)


def fold_frames(x: torch.Tensor) -> torch.Tensor:
    """[B, C, F, h, w] -> [B*F, C, h, w] (video-major); a 4-D image batch is returned as it is."""
    if x.dim() == 4:
        return x
    return x.transpose(1, 2).flatten(0, 1)


def unfold_frames(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The inverse of `fold_frames` for a tensor shaped like `like`."""
    if like.dim() == 4:
        return x
    b, _, frames = like.shape[:3]
    return x.unflatten(0, (b, frames)).transpose(1, 2)


def gaussian_blur(x: torch.Tensor, sigma: float, kernel_size: int = KERNEL_SIZE) -> torch.Tensor:
    """A `kernel_size` Gaussian blur of [N, C, h, w] per channel, edges reflected (h and w must exceed
    kernel_size // 2). sigma <= 0 blurs nothing."""
    if sigma <= 0:
        return x
    offsets = torch.arange(kernel_size, dtype=torch.float64) - (kernel_size - 1) / 2
    weights = torch.exp(-0.5 * (offsets / sigma) ** 2)
    weights = (weights / weights.sum()).to(device=x.device, dtype=x.dtype)
    channels, pad = x.shape[1], kernel_size // 2
    rows = weights.view(1, 1, 1, kernel_size).expand(channels, 1, 1, kernel_size)
    cols = weights.view(1, 1, kernel_size, 1).expand(channels, 1, kernel_size, 1)
    x = F.conv2d(F.pad(x, (pad, pad, 0, 0), mode="reflect"), rows, groups=channels)
    return F.conv2d(F.pad(x, (0, 0, pad, pad), mode="reflect"), cols, groups=channels)


def attention_mask(received: torch.Tensor, grid: tuple[int, int], size: tuple[int, int],
                   threshold: float = 1.0) -> torch.Tensor:
    """[rows, tokens] received attention on the middle block's `grid` (h, w) -> a 0/1 mask [rows, 1, *size] at the
    latent's size (nearest neighbour), 1 where a token receives more than `threshold`."""
    gh, gw = grid
    if received.shape[-1] != gh * gw:
        raise ValueError(f"the attention map has {received.shape[-1]} tokens but the middle block's grid is "
                         f"{gh}x{gw}; the map must come from the same model call as the prediction.")
    mask = (received > threshold).to(torch.float32).view(-1, 1, gh, gw)
    return F.interpolate(mask, size=tuple(size), mode="nearest")


def adversarial_blur(x0: torch.Tensor, received: torch.Tensor, grid: tuple[int, int], sigma: float,
                     threshold: float = 1.0) -> torch.Tensor:
    """The prediction `x0` ([B, C, F, h, w] video or [N, C, h, w]) blurred where the mask from `received`
    ([B*F, tokens], one row per frame) is on, unchanged elsewhere; same shape as `x0`."""
    images = fold_frames(x0)
    if received.shape[0] != images.shape[0]:
        raise ValueError(f"the attention map has {received.shape[0]} rows but the prediction has {images.shape[0]} "
                         f"frames (videos x frames); the map must come from the same model call as the prediction.")
    mask = attention_mask(received, grid, images.shape[-2:], threshold).to(device=images.device, dtype=images.dtype)
    blurred = gaussian_blur(images, sigma)
    return unfold_frames(blurred * mask + images * (1 - mask), x0)
