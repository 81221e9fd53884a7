"""A tiny random-weight text-to-video model built in memory: the stand-in the headless main job uses when no real
weights are installed, so the whole pipeline (text encoder, UNet3D, sampler, VAE, video writer) runs anywhere.
Its output is noise by construction: it only proves the plumbing.
"""

from __future__ import annotations

import torch

from .text_encoder import SOT, EOT, TextEncoder, Tokenizer
from .unet3d import UNet3D, UNet3DConfig
from .vae import VAE, AutoencoderKL, VAEConfig

UNET = UNet3DConfig(model_channels=64, channel_mult=(1, 2, 2), num_res_blocks=1, attention_levels=(1,),
                    input_temporal_heads=1)
#: the stand-in's output is noise whatever the step count: more steps would only cost time
MAX_STEPS = 10
VAE_CONFIG = VAEConfig(ch=32, ch_mult=(1, 1, 1, 1), num_res_blocks=1)  # 3 downsamplings: 8x, like the real one


def build(seed: int = 0) -> tuple[UNet3D, TextEncoder, VAE]:
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet3D(UNET).eval().requires_grad_(False)
    vae = VAE(AutoencoderKL(VAE_CONFIG).eval().requires_grad_(False))
    config = CLIPTextConfig(vocab_size=49408, hidden_size=1024, intermediate_size=1024, num_hidden_layers=1,
                            num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu",
                            bos_token_id=SOT, eos_token_id=EOT, pad_token_id=0)
    text = TextEncoder(CLIPTextModel(config).eval().requires_grad_(False), Tokenizer())
    return unet, text, vae
