"""The training noise schedule of the model and the k-diffusion view of it.

ModelScope was trained with SD's scaled_linear betas (0.00085 -> 0.012 over 1000 steps) and predicts eps. In
k-diffusion terms a latent at timestep t is x = x_vp / sqrt(alpha_bar_t) with sigma_t = sqrt((1 - alpha_bar_t) /
alpha_bar_t); the denoiser is D(x, sigma) = x - sigma * eps(x / sqrt(1 + sigma^2), t(sigma)).
"""

from __future__ import annotations

import torch


class DiscreteSchedule:
    def __init__(self, beta_start: float = 0.00085, beta_end: float = 0.012, num_timesteps: int = 1000):
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_timesteps, dtype=torch.float64) ** 2
        self.alphas_cumprod = torch.cumprod(1 - betas, dim=0)
        self.sigmas = ((1 - self.alphas_cumprod) / self.alphas_cumprod).sqrt()
        self.log_sigmas = self.sigmas.log()
        self.num_timesteps = num_timesteps

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def sigma(self, t) -> torch.Tensor:
        """sigma at (possibly fractional) timesteps, interpolated in log sigma."""
        t = torch.as_tensor(t, dtype=torch.float64).clamp(0, self.num_timesteps - 1)
        low = t.floor().long()
        high = (low + 1).clamp(max=self.num_timesteps - 1)
        w = t - low
        return ((1 - w) * self.log_sigmas[low] + w * self.log_sigmas[high]).exp()

    def t(self, sigma) -> torch.Tensor:
        """The (fractional) timestep of a sigma: the inverse of `sigma`, interpolating in log sigma."""
        log_sigma = torch.as_tensor(sigma, dtype=torch.float64).log()
        dists = log_sigma - self.log_sigmas[:, None]
        low = dists.ge(0).cumsum(dim=0).argmax(dim=0).clamp(max=self.num_timesteps - 2)
        high = low + 1
        lo, hi = self.log_sigmas[low], self.log_sigmas[high]
        w = ((lo - log_sigma) / (lo - hi)).clamp(0, 1)
        return ((1 - w) * low + w * high).view(torch.as_tensor(sigma).shape)


class EpsDenoiser:
    """Wraps an eps-prediction model `eps_fn(x_vp, t) -> eps` as a k-diffusion denoiser `D(x, sigma) -> x0`."""

    def __init__(self, eps_fn, schedule: DiscreteSchedule):
        self.eps_fn = eps_fn
        self.schedule = schedule

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=torch.float64)
        t = self.schedule.t(sigma).to(torch.float32)
        c_in = (1.0 / (sigma**2 + 1).sqrt()).to(x.dtype)
        eps = self.eps_fn(x * c_in, t)
        return x - eps.to(x.dtype) * sigma.to(x.dtype)
