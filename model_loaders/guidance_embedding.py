"""The guidance embedding of guidance-distilled UNet3Ds (T2V-Turbo): the guidance scale w as an input of the UNet.

T2V-Turbo-MS (arXiv 2405.18750) runs diffusers' UNet3DConditionModel built with `time_cond_proj_dim=256`: the
guidance scale w is embedded (w * 1000, 128 frequencies exp(-ln(10000) k / 127), [sin, cos], no offset on w) and
projected by `time_embedding.cond_proj` (Linear(256 -> model_channels, no bias)) onto the sinusoidal timestep
embedding, before the time MLP. One UNet pass per step then gives the guided prediction: no unconditional pass.

In the pack the projection is the UNet3D's `time_cond_proj` (`config.time_cond_proj_dim`), loaded from diffusers
folders whose config has `time_cond_proj_dim` (and single files holding it), or created by the LoRA loader when a
T2V-Turbo LoRA needs it (`add_guidance_embedding`). The scale reaches the forward as the transformer option
GUIDANCE_SCALE (the sampler puts `cfg` there; a view carries a default) or, through ComfyUI, as the `guidance`
keyword (core's FluxGuidance node on the positive conditioning).

The base weight when the LoRA creates it: T2V-Turbo's released code builds the UNet with a fresh random
`cond_proj` at every launch (the base it was trained on was never saved), so there is no "right" base. Offered:
* `authors_init` (default): torch's default Linear init (uniform +-1/sqrt(256)) drawn exactly as a fresh launch of
  the authors' demo draws it: torch's default seed (67280421310721, what an unseeded process uses), after the
  draws diffusers makes for the layers built before it (conv_in, time_embedding.linear_1; model loading from files
  draws nothing). This is what users of the released code ran, and the LoRA's delta was trained against a base of
  the same distribution.
* `zero`: the embedding only through the LoRA's own delta (deterministic, independent of any seed).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

#: transformer option: the guidance scale w given to a UNet3D with a guidance embedding (float or [B] tensor)
GUIDANCE_SCALE = "cinematic_guidance_scale"
#: T2V-Turbo's default guidance scale (its demo and README)
DEFAULT_GUIDANCE = 7.5
#: the width T2V-Turbo uses
TURBO_COND_DIM = 256
#: torch's default CPU seed: what `torch.initial_seed()` returns in a process that never seeded
TORCH_DEFAULT_SEED = 67280421310721
BASE_INITS = ("authors_init", "zero")


def guidance_embedding(w, dim: int, device=None) -> torch.Tensor:
    """[B, dim]: w * 1000 at dim // 2 frequencies exp(-ln(10000) k / (dim // 2 - 1)), sin then cos (zero-padded to
    an odd dim)."""
    w = torch.as_tensor(w, dtype=torch.float32, device=device).reshape(-1) * 1000.0
    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=torch.float32, device=w.device) * -(math.log(10000.0) / (half - 1)))
    args = w[:, None] * freqs[None]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    if dim % 2:
        emb = torch.nn.functional.pad(emb, (0, 1))
    return emb


def authors_init_weight(model_channels: int, in_channels: int = 4, dim: int = TURBO_COND_DIM) -> torch.Tensor:
    """The `cond_proj` weight [model_channels, dim] a fresh launch of T2V-Turbo's demo draws (see the module doc):
    torch's default seed, then diffusers' construction order conv_in (weight, bias), time_embedding.linear_1
    (weight, bias), cond_proj (weight), each with torch's default layer init. Drawn on a private generator, so the
    global RNG is untouched."""
    gen = torch.Generator().manual_seed(TORCH_DEFAULT_SEED)
    emb_dim = model_channels * 4

    def default_init(shape, fan_in: int, bias_shape=None):
        # torch's reset_parameters: kaiming_uniform_(a=sqrt(5)), the bound computed as torch computes it
        # (about 1/sqrt(fan_in)), then the bias uniform in +-1/sqrt(fan_in)
        gain = math.sqrt(2.0 / (1 + math.sqrt(5) ** 2))
        bound = math.sqrt(3.0) * (gain / math.sqrt(fan_in))
        weight = torch.empty(shape).uniform_(-bound, bound, generator=gen)
        if bias_shape is not None:
            torch.empty(bias_shape).uniform_(-1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in), generator=gen)
        return weight

    default_init((model_channels, in_channels, 3, 3), in_channels * 9, (model_channels,))  # conv_in
    default_init((emb_dim, model_channels), model_channels, (emb_dim,))  # time_embedding.linear_1
    return default_init((model_channels, dim), dim)  # cond_proj (no bias)


def make_cond_proj(like: nn.Module, dim: int, out_features: int) -> nn.Module:
    """A Linear(dim -> out_features, no bias) of the same layer family, device and dtype as `like` (the time MLP's
    first Linear: the pack's own layers, or ComfyUI's cast-weight ones), zero-initialised."""
    weight = like.weight
    layer = type(like)(dim, out_features, bias=False, device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        layer.weight = nn.Parameter(torch.zeros(out_features, dim, device=weight.device, dtype=weight.dtype),
                                    requires_grad=False)
    return layer
