"""FreeInit (Wu et al., arXiv 2312.07537): re-initialise the noise from the low frequencies of a first result.

Video diffusion models are trained on noise whose lowest spatio-temporal frequencies still carry the clip's layout;
at inference pure noise lacks that, which costs temporal consistency. FreeInit samples N times: after each run the
result is re-noised to the first timestep with the *same* initial noise, its low frequencies (3-D FFT over frames,
height, width) are kept and the high frequencies are replaced by fresh noise; the next run starts from that.

    options = FreeInitOptions(iterations=3)
    x = sample_freeinit(sample, latent, noise, options, seed, steps=..., callback=...)

Each iteration is a whole sampling run, so it costs N times the time (memory unchanged). In k-diffusion terms a run
starts at x = latent + c * noise (c = sqrt(1 + sigma_max^2) from pure noise, sigma_start with denoise < 1); the
re-noised result is r + c * noise; with the linear low-pass L that start is L(r) + c * (L(noise) + (1 - L)(fresh)),
i.e. the next run's latent is L(r) and its noise L(noise) + (1 - L)(fresh).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

FILTERS = ("butterworth", "gaussian")


@dataclass(frozen=True)
class FreeInitOptions:
    """What `CinematicFreeInit` hands the sampler (T2V_FREEINIT)."""

    iterations: int = 3
    filter: str = "butterworth"
    d_s: float = 0.25
    d_t: float = 0.25
    order: int = 4

    def __post_init__(self):
        if self.iterations < 1:
            raise ValueError(f"FreeInit iterations must be at least 1 (got {self.iterations}); 1 is plain sampling.")
        if self.filter not in FILTERS:
            raise ValueError(f"Unknown FreeInit filter {self.filter!r}; choose one of {', '.join(FILTERS)}.")
        if not (0 < self.d_s <= 1 and 0 < self.d_t <= 1):
            raise ValueError(f"FreeInit cut-off frequencies d_s and d_t must be in (0, 1] (got {self.d_s}, "
                             f"{self.d_t}); 0.25 is the paper's default.")
        if self.order < 1:
            raise ValueError(f"The butterworth order must be at least 1 (got {self.order}); the paper uses 4.")


def low_pass_filter(frames: int, height: int, width: int, options: FreeInitOptions) -> torch.Tensor:
    """The filter's gain [F, H, W] on the unshifted FFT grid (torch.fft.fftn's layout), 1 at DC.

    Frequencies are normalised to [-1, 1) per axis (cycles per sample x 2), the time axis scaled by d_s / d_t so
    d_s and d_t are the spatial and temporal cut-offs: D^2 = (f_t d_s / d_t)^2 + f_h^2 + f_w^2; butterworth
    1 / (1 + (D^2 / d_s^2)^order), gaussian exp(-D^2 / (2 d_s^2))."""
    f_t = torch.fft.fftfreq(frames, dtype=torch.float64) * 2 * (options.d_s / options.d_t)
    f_h = torch.fft.fftfreq(height, dtype=torch.float64) * 2
    f_w = torch.fft.fftfreq(width, dtype=torch.float64) * 2
    d2 = f_t[:, None, None] ** 2 + f_h[None, :, None] ** 2 + f_w[None, None, :] ** 2
    if options.filter == "gaussian":
        gain = torch.exp(-d2 / (2 * options.d_s**2))
    else:
        gain = 1 / (1 + (d2 / options.d_s**2) ** options.order)
    return gain.to(torch.float32)


def mix_frequencies(low_source: torch.Tensor, high_source: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    """L(low_source) + (1 - L)(high_source), L the filter `gain` over the last three axes (frames, h, w)."""
    dims = (-3, -2, -1)
    low = torch.fft.fftn(low_source.to(torch.float32), dim=dims) * gain
    high = torch.fft.fftn(high_source.to(torch.float32), dim=dims) * (1 - gain)
    return torch.fft.ifftn(low + high, dim=dims).real


def low_pass(x: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    return torch.fft.ifftn(torch.fft.fftn(x.to(torch.float32), dim=(-3, -2, -1)) * gain, dim=(-3, -2, -1)).real


def fresh_noise(shape, seed: int, iteration: int) -> torch.Tensor:
    """The high-frequency noise of iteration `iteration` (1, 2, ...): drawn on the CPU from the seed, a different
    stream from the initial noise and the ancestral samplers' noise."""
    generator = torch.Generator(device="cpu").manual_seed((int(seed) + 0x9E3779B97F4A7C15 * iteration) % 2**64)
    return torch.randn(shape, generator=generator, dtype=torch.float32, device="cpu")


def sample_freeinit(run: Callable, latent: torch.Tensor, noise: torch.Tensor, options: FreeInitOptions | None,
                    seed: int, steps_per_run: int, callback: Callable | None = None,
                    reschedule: Callable | None = None) -> torch.Tensor:
    """`run(latent, noise, callback) -> raw latent` is one sampling run (samplers.sampling.sample with everything
    else bound). Iteration i's callback steps are numbered i * steps_per_run + step, so a progress bar of
    iterations x steps counts every step of every run. `reschedule(noise) -> noise` is applied to the fresh noise as
    it was to the initial one (FreeNoise), so the high frequencies keep the same structure across frames."""
    iterations = 1 if options is None else options.iterations
    current_latent, current_noise = latent, noise
    for i in range(iterations):
        step_callback = None
        if callback is not None:
            step_callback = (lambda offset: (lambda step, x, denoised: callback(offset + step, x, denoised)))(
                i * steps_per_run)
        result = run(current_latent, current_noise, step_callback)
        if i == iterations - 1:
            return result
        gain = low_pass_filter(*noise.shape[-3:], options)
        current_latent = low_pass(result, gain)
        fresh = fresh_noise(noise.shape, seed, i + 1)
        if reschedule is not None:
            fresh = reschedule(fresh)
        current_noise = mix_frequencies(noise, fresh, gain)
    raise AssertionError("unreachable")
