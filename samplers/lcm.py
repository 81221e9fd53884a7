"""Few-step sampling of consistency-distilled UNet3Ds: T2V-Turbo (arXiv 2405.18750) and MCM (arXiv 2406.06890).

Schedules (timesteps of the 1000-step training schedule, then 0):
* `t2v_turbo`: T2V-Turbo's own: the 50 distillation timesteps `arange(1, 51) * 20 - 1` taken every `50 // N` from
  the end, the first N (4 steps: 999, 759, 519, 279);
* `lcm`: diffusers' LCMScheduler for 50 original steps: the same 50 timesteps reversed, picked at
  `floor(linspace(0, 50, N, endpoint=False))` (4 steps: 999, 759, 499, 259).

Sampler `lcm`: the consistency step. The model's x0 prediction goes through LCM's boundary condition,
`denoised = c_out * x0 + c_skip * x_t` (x_t variance-preserving) with `c_skip = s^2 / ((t k)^2 + s^2)`,
`c_out = t k / sqrt((t k)^2 + s^2)`, s = 0.5 and timestep scaling k = 10 (LCM's and T2V-Turbo's; MCM's scheduler uses
4, which differs from it by less than 1e-6 at these timesteps); then fresh noise to the next timestep,
`x = denoised + sigma_next * noise` in k-diffusion terms (= sqrt(a_next) denoised + sqrt(1 - a_next) noise); the last
step's denoised is the result. The noise comes from the sampler's noise source (the pack: one CPU draw per step
from Generator(seed + 1), CONTRACT).
"""

from __future__ import annotations

import math

import torch

from .k_samplers import _gaussian, _steps
from .registry import register_sampler, register_schedule
from .schedule import DiscreteSchedule

ORIGINAL_STEPS = 50
SIGMA_DATA = 0.5
TIMESTEP_SCALING = 10.0
_DEFAULT_SCHEDULE = DiscreteSchedule()


def _distillation_timesteps(schedule: DiscreteSchedule, steps: int, name: str) -> torch.Tensor:
    if not 1 <= steps <= ORIGINAL_STEPS:
        raise ValueError(f"The {name} scheduler takes 1 to {ORIGINAL_STEPS} steps (the distilled models use 1-8); "
                         f"got {steps}.")
    k = schedule.num_timesteps // ORIGINAL_STEPS
    return torch.arange(1, ORIGINAL_STEPS + 1) * k - 1  # 19, 39, ..., 999


def _sigmas(schedule: DiscreteSchedule, timesteps: torch.Tensor) -> torch.Tensor:
    sigmas = schedule.sigmas[timesteps.long()].to(torch.float64)
    return torch.cat([sigmas, sigmas.new_zeros(1)])


@register_schedule("t2v_turbo")
def t2v_turbo(schedule: DiscreteSchedule, steps: int) -> torch.Tensor:
    """T2V-Turbo's timesteps: every 50 // N of the 50 distillation timesteps from the end (999, 759, 519, 279)."""
    origin = _distillation_timesteps(schedule, steps, "t2v_turbo")
    skip = ORIGINAL_STEPS // steps
    return _sigmas(schedule, origin.flip(0)[::skip][:steps])


@register_schedule("lcm")
def lcm_schedule(schedule: DiscreteSchedule, steps: int) -> torch.Tensor:
    """diffusers LCMScheduler's timesteps for 50 original steps (999, 759, 499, 259)."""
    origin = _distillation_timesteps(schedule, steps, "lcm").flip(0)
    picks = [math.floor(i * ORIGINAL_STEPS / steps) for i in range(steps)]
    return _sigmas(schedule, origin[picks])


def boundary_scalings(t: float, timestep_scaling: float = TIMESTEP_SCALING) -> tuple[float, float]:
    """LCM's (c_skip, c_out) at timestep t."""
    scaled = t * timestep_scaling
    c_skip = SIGMA_DATA**2 / (scaled**2 + SIGMA_DATA**2)
    c_out = scaled / math.sqrt(scaled**2 + SIGMA_DATA**2)
    return c_skip, c_out


@register_sampler("lcm")
def lcm(model, x, sigmas, *, callback=None, noise_sampler=None, eta=None, timestep_scaling: float = TIMESTEP_SCALING):
    """Latent consistency sampling with LCM's boundary condition: denoise, re-noise to the next level with fresh
    noise; the last denoised is the result."""
    schedule = getattr(model, "schedule", None) or _DEFAULT_SCHEDULE
    noise_sampler = noise_sampler or _gaussian(x)
    for i, sigma, sigma_next in _steps(sigmas):
        x0 = model(x, sigmas[i])
        c_skip, c_out = boundary_scalings(float(schedule.t(sigma)), timestep_scaling)
        denoised = c_out * x0 + c_skip * (x / math.sqrt(1.0 + sigma**2))
        x = denoised
        if sigma_next > 0:
            x = x + noise_sampler(sigma, sigma_next) * sigma_next
        if callback:
            callback(i, x, denoised)
    return x
