"""Harmonising masked runs by resampling (RePaint, Lugmayr et al., arXiv 2201.09865).

With kept frames the model sees the source re-noised next to its own generated frames, but its update of the
generated ones only partly accounts for them, so a clip may jump at the boundary. RePaint's fix: after each step
from sigma to sigma_next, re-noise the result back to sigma (x + sqrt(sigma^2 - sigma_next^2) * z, the forward
process in k-diffusion terms) and take the step again, r times; the generated frames then agree with the kept ones.

    sampler = with_resampling(SAMPLERS["ddim"], resample=2, seed=seed)      # 1 + r model calls per step

Each step is one call of the chosen sampler on the pair (sigma, sigma_next), so a multistep sampler (dpmpp_2m,
unipc) runs at first order under resampling (its history does not survive re-noising anyway). The re-noising noise is
drawn on the CPU from `torch.Generator().manual_seed(seed + 2)`, one draw per repetition in step order, a stream apart
from the initial (seed) and the stochastic samplers' (seed + 1) noise. `resample=0` returns the sampler unchanged.
"""

from __future__ import annotations

import math
from typing import Callable


import torch


def with_resampling(sampler: Callable, resample: int, seed: int) -> Callable:
    if resample < 0:
        raise ValueError(f"resample must be 0 or more (got {resample}); 0 turns resampling off.")
    if resample == 0:
        return sampler
    generator = torch.Generator().manual_seed((int(seed) + 2) % 2**64)

    def resampled(model, x, sigmas, *, callback=None, noise_sampler=None, eta=None, **kwargs):
        for i in range(len(sigmas) - 1):
            pair = sigmas[i:i + 2]
            sigma, sigma_next = float(pair[0]), float(pair[1])
            seen = {}

            def keep(_step, _x, denoised):
                seen["denoised"] = denoised

            for repetition in range(resample + 1):
                if repetition:
                    z = torch.randn(x.shape, generator=generator, dtype=torch.float32).to(x.device, x.dtype)
                    x = x + z * math.sqrt(max(sigma**2 - sigma_next**2, 0.0))
                x = sampler(model, x, pair, callback=keep, noise_sampler=noise_sampler, eta=eta, **kwargs)
            if callback:
                callback(i, x, seen.get("denoised", x))
        return x

    return resampled
