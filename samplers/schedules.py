"""Sigma schedules. Each takes the model's DiscreteSchedule and a step count and returns descending sigmas
(float64), one more than the steps taken; most end at 0 (the clean latent)."""

from __future__ import annotations

import math

import torch

from .registry import register_schedule
from .schedule import DiscreteSchedule


def _with_zero(sigmas: torch.Tensor) -> torch.Tensor:
    return torch.cat([sigmas.to(torch.float64), sigmas.new_zeros(1, dtype=torch.float64)])


@register_schedule("modelscope")
def modelscope(schedule: DiscreteSchedule, steps: int) -> torch.Tensor:
    """The original ModelScope DDIM timesteps: 981, 961, ..., 1 for 50 steps (1 + multiples of 1000 // steps), each
    step going to the alpha of max(t - stride, 0): the last step lands on alpha_bar[0], not on the clean image.
    Like the original, a step count that does not divide 1000 gives ceil(1000 / stride) steps."""
    n = schedule.num_timesteps
    stride = n // steps
    ts = (1 + torch.arange(0, n, stride)).clamp(0, n - 1).flip(0)
    last = max(int(ts[-1]) - stride, 0)
    return torch.cat([schedule.sigmas[ts], schedule.sigmas[last:last + 1]])


@register_schedule("ddim_uniform")
def ddim_uniform(schedule: DiscreteSchedule, steps: int) -> torch.Tensor:
    """ComfyUI's ddim_uniform: timesteps 1, 1 + k, ... (k = 1000 // steps), descending, then 0."""
    stride = max(schedule.num_timesteps // steps, 1)
    ts = torch.arange(1, schedule.num_timesteps, stride).flip(0)
    return _with_zero(schedule.sigmas[ts])


@register_schedule("karras")
def karras(schedule: DiscreteSchedule, steps: int, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. (2022): uniform in sigma^(1/rho)."""
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    lo, hi = schedule.sigma_min ** (1 / rho), schedule.sigma_max ** (1 / rho)
    return _with_zero((hi + ramp * (lo - hi)) ** rho)


@register_schedule("exponential")
def exponential(schedule: DiscreteSchedule, steps: int) -> torch.Tensor:
    """Uniform in log sigma."""
    return _with_zero(torch.linspace(math.log(schedule.sigma_max), math.log(schedule.sigma_min), steps,
                                     dtype=torch.float64).exp())


@register_schedule("simple")
def simple(schedule: DiscreteSchedule, steps: int) -> torch.Tensor:
    """Every (1000 / steps)-th training sigma from the top (ComfyUI's `simple`)."""
    stride = len(schedule.sigmas) / steps
    return _with_zero(torch.stack([schedule.sigmas[-(1 + int(i * stride))] for i in range(steps)]))


@register_schedule("uniform")
def uniform(schedule: DiscreteSchedule, steps: int) -> torch.Tensor:
    """Timesteps evenly spaced from 999 to 0 (k-diffusion's default, ComfyUI's `normal`)."""
    return _with_zero(schedule.sigma(torch.linspace(schedule.num_timesteps - 1, 0, steps, dtype=torch.float64)))


@register_schedule("sgm_uniform")
def sgm_uniform(schedule: DiscreteSchedule, steps: int) -> torch.Tensor:
    """Timesteps evenly spaced from 999 towards 0, leaving the last interval to the final jump to 0 (SGM's)."""
    ts = torch.linspace(schedule.num_timesteps - 1, 0, steps + 1, dtype=torch.float64)[:-1]
    return _with_zero(schedule.sigma(ts))
