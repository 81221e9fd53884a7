"""Video latent sampling: classifier-free guidance around the eps UNet, the seed convention, denoise, the schedules.

    x = sample(eps_model, latent, cond, uncond, seed=0, steps=50, cfg=9.0, sampler="ddim", schedule="modelscope")

`eps_model(x_vp, t, context) -> eps` is the UNet3D's call signature. `latent` is the raw VAE latent
[B, 4, F, h, w] (zeros for text-to-video); the result is raw too (the 0.18215 factor is applied inside).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from . import k_samplers, lcm, schedules  # noqa: F401  (registers the built-in samplers and schedules)
from ..model_loaders.guidance_embedding import GUIDANCE_SCALE
from .context import ContextOptions, StepTracker, WindowedUNet
from .noise_mask import MaskedDenoiser, is_trivial, prepare_mask
from .registry import SAMPLERS, SCHEDULES
from .resample import with_resampling
from .schedule import DiscreteSchedule, EpsDenoiser

LATENT_SCALE = 0.18215
TRAINING_SCHEDULE = DiscreteSchedule(0.00085, 0.012, 1000)


def make_noise(shape, seed: int) -> torch.Tensor:
    """ComfyUI's convention: the same seed gives the same noise on every device and as core KSampler."""
    return torch.randn(shape, generator=torch.manual_seed(seed), dtype=torch.float32, device="cpu")


def get_sigmas(schedule_name: str, steps: int, denoise: float = 1.0,
               schedule: DiscreteSchedule = TRAINING_SCHEDULE) -> torch.Tensor:
    """The schedule for `steps`; with denoise < 1 only its last round(steps * denoise) steps (img2img strength)."""
    if schedule_name not in SCHEDULES:
        raise ValueError(f"Unknown scheduler {schedule_name!r}; choose one of {', '.join(SCHEDULES)}.")
    sigmas = SCHEDULES[schedule_name](schedule, steps)
    if denoise < 1.0:
        total = len(sigmas) - 1
        keep = max(1, round(total * denoise)) if denoise > 0 else 0
        sigmas = sigmas[total - keep:]
    return sigmas


class GuidedModel:
    """eps = uncond + cfg * (cond - uncond), in one batched forward when the contexts allow it. At cfg 1 the
    unconditional pass is skipped. `embedded`: a UNet with a guidance embedding (T2V-Turbo): one pass on `cond` with
    `cfg` as the w it embeds (the transformer option GUIDANCE_SCALE), no unconditional pass. Counts the UNet
    forwards (calls) for the curious."""

    def __init__(self, eps_model: Callable, cond: torch.Tensor, uncond: torch.Tensor | None, cfg: float,
                 batch_cond_uncond: bool = True, embedded: bool = False):
        self.eps_model = eps_model
        self.cond = cond
        self.uncond = uncond
        self.cfg = cfg
        self.batch = batch_cond_uncond and uncond is not None and uncond.shape[:2] == cond.shape[:2]
        self.calls = 0
        self.embedded = embedded

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        tt = t.reshape(-1).expand(b) if t.numel() == 1 else t
        if self.embedded:
            self.calls += 1
            return self.eps_model(x, tt, self.cond, transformer_options={GUIDANCE_SCALE: self.cfg})
        if self.cfg == 1.0 or self.uncond is None:
            self.calls += 1
            return self.eps_model(x, tt, self.cond)
        if self.batch:
            self.calls += 1
            eps = self.eps_model(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([self.cond, self.uncond]))
            eps_c, eps_u = eps.chunk(2)
        else:
            self.calls += 2
            eps_c = self.eps_model(x, tt, self.cond)
            eps_u = self.eps_model(x, tt, self.uncond)
        return eps_u + self.cfg * (eps_c - eps_u)


def sample(eps_model: Callable, latent: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor | None, *,
           seed: int = 0, steps: int = 50, cfg: float = 9.0, sampler: str = "ddim", schedule: str = "modelscope",
           denoise: float = 1.0, eta: float | None = None, callback: Callable | None = None,
           device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
           batch_cond_uncond: bool = True, noise: torch.Tensor | None = None,
           context: ContextOptions | None = None, between_windows: Callable | None = None,
           noise_mask: torch.Tensor | None = None, mask_source: torch.Tensor | None = None,
           resample: int = 0, guidance_embedded: bool | None = None) -> torch.Tensor:
    """Returns the raw (unscaled) sampled latent, float32 on the CPU.

    `cond` / `uncond`: [B, L, D] (one row per video) or [B*F, L, D] (one per frame; see conditioning.py).
    `context`: context windows (samplers/context.py); None runs the whole clip at once. FreeNoise's noise
    rescheduling is applied by the caller to `noise` (freenoise_noise), so FreeInit can reuse the same noise.
    `between_windows()` runs before each context window (a cancel check).
    `noise_mask` (core's LATENT convention, any shape `noise_mask.prepare_mask` reads): 1 = generate, 0 = keep
    `mask_source` (default `latent`: FreeInit passes the original latent while its runs start elsewhere), soft values
    by DifferentialDiffusion's moving threshold (samplers/noise_mask.py). `resample`: RePaint's r extra passes per
    step (samplers/resample.py). `guidance_embedded` (default: the model's own `guidance_embedded`): `cfg` is
    the w given to the UNet's guidance embedding, one pass per step."""
    if sampler not in SAMPLERS:
        raise ValueError(f"Unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}.")
    device = torch.device(device)
    sigmas = get_sigmas(schedule, steps, denoise)
    x0 = latent.to(torch.float32) * LATENT_SCALE
    if noise is None:
        noise = make_noise(latent.shape, seed)
    if len(sigmas) < 2:
        return latent.clone()
    mask = None if noise_mask is None else prepare_mask(noise_mask, latent.shape)
    if is_trivial(mask):
        mask = None
    source = latent if mask_source is None else mask_source
    if guidance_embedded is None:
        guidance_embedded = bool(getattr(eps_model, "guidance_embedded", False))
    windowed = None
    if context is not None and context.applies_to(latent.shape[2]):
        eps_model = windowed = WindowedUNet(eps_model, context, between_windows)
    guided = GuidedModel(eps_model, cond.to(device, dtype), None if uncond is None else uncond.to(device, dtype),
                         cfg, batch_cond_uncond, embedded=guidance_embedded)

    def eps_fn(x_vp, t):
        return guided(x_vp.to(device, dtype), t.to(device)).to(torch.float32)

    denoiser = EpsDenoiser(eps_fn, TRAINING_SCHEDULE)
    if windowed is not None:
        denoiser = StepTracker(denoiser, sigmas, windowed)
    if mask is not None:
        denoiser = masked = MaskedDenoiser(denoiser, (source.to(torch.float32) * LATENT_SCALE).to(device),
                                           noise.to(torch.float32).to(device), mask.to(device), sigmas,
                                           TRAINING_SCHEDULE)
    sigma_start = float(sigmas[0])
    if denoise >= 1.0:
        # Start from pure noise in the model's own (variance-preserving) space, x_vp = noise, as the original
        # loop does: in sigma space that is noise * sqrt(1 + sigma^2) (ComfyUI's max_denoise scaling).
        x = x0 + noise.to(torch.float32) * math.sqrt(1.0 + sigma_start**2)
    else:
        x = x0 + noise.to(torch.float32) * sigma_start
    x = x.to(device)
    ancestral_gen = torch.Generator().manual_seed((seed + 1) % 2**64)  # CPU like the initial noise: same everywhere

    def noise_sampler(sigma, sigma_next):
        return torch.randn(x.shape, generator=ancestral_gen, dtype=torch.float32).to(device)

    kwargs = {"callback": callback, "noise_sampler": noise_sampler, "eta": eta}
    out = with_resampling(SAMPLERS[sampler], resample, seed)(denoiser, x, sigmas, **kwargs)
    # Back to the variance-preserving latent: only differs where a schedule ends above 0 (the original's last step
    # lands on alpha_bar[0]).
    out = out / math.sqrt(1.0 + float(sigmas[-1]) ** 2)
    out = (out / LATENT_SCALE).cpu()
    if mask is not None:  # what the last model call kept comes out exactly as given
        out = torch.where(masked.last.cpu(), out, source.to(torch.float32).cpu())
    return out
