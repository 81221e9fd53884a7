"""A tiny random-weight SD AutoencoderKL in the real layouts.

    ref = reference_vae(seed)              # the modelscope wheel's AutoencoderKL, tiny, random
    sd = ref.state_dict()                  # LDM keys
    write_lightning_checkpoint(sd, path)   # VQGAN_autoencoder.pth style (Lightning pickle, numpy scalars)
    d = diffusers_vae(sd)                  # diffusers AutoencoderKL with the same weights (diffusers' own converter)
    write_diffusers_vae(sd, folder)        # folder/vae/{config.json, diffusion_pytorch_model.safetensors}
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import torch
from safetensors.torch import save_file

from . import refs

TINY_DDCONFIG = dict(double_z=True, z_channels=4, resolution=64, in_channels=3, out_ch=3, ch=32, ch_mult=[1, 2],
                     num_res_blocks=1, attn_resolutions=[], dropout=0.0)
TINY_DIFFUSERS_VAE = dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                          up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(32, 64), layers_per_block=1,
                          latent_channels=4, norm_num_groups=32, sample_size=64)


def reference_vae(seed: int = 0):
    ae = refs.modelscope_module("autoencoder")
    torch.manual_seed(seed)
    model = ae.AutoencoderKL(TINY_DDCONFIG, embed_dim=4).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("weight") and p.ndim == 1:
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    return model


def tiny_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in reference_vae(seed).state_dict().items()}


def diffusers_vae(sd):
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    model = AutoencoderKL(**TINY_DIFFUSERS_VAE).eval()
    converted = convert_ldm_vae_checkpoint(dict(sd), dict(model.config))
    model.load_state_dict(converted)
    return model


def write_diffusers_vae(sd, folder) -> Path:
    model = diffusers_vae(sd)
    vae_dir = Path(folder) / "vae"
    vae_dir.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(vae_dir / "diffusion_pytorch_model.safetensors"))
    (vae_dir / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL", **model.config}, default=list))
    return vae_dir


def write_lightning_checkpoint(sd, path) -> Path:
    """Write a checkpoint shaped like VQGAN_autoencoder.pth: a PyTorch Lightning pickle whose callbacks dict is keyed by
    Lightning's ModelCheckpoint class and holds numpy scalars. Written in a subprocess with a stand-in
    `pytorch_lightning` package, so the test process never has that module."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".weights.pt")
    torch.save({"first_stage_model." + k: v for k, v in sd.items()}, tmp)
    script = textwrap.dedent(f"""
        import sys, types, torch, numpy as np
        for name in ("pytorch_lightning", "pytorch_lightning.callbacks", "pytorch_lightning.callbacks.model_checkpoint"):
            sys.modules[name] = types.ModuleType(name)
        mod = sys.modules["pytorch_lightning.callbacks.model_checkpoint"]
        class ModelCheckpoint:
            pass
        ModelCheckpoint.__module__ = mod.__name__
        mod.ModelCheckpoint = ModelCheckpoint
        weights = torch.load({str(tmp)!r}, weights_only=True)
        ckpt = {{"epoch": 7, "global_step": np.int64(123456), "pytorch-lightning_version": "1.4.2",
                "state_dict": weights,
                "callbacks": {{ModelCheckpoint: {{"monitor": "val/rec_loss", "best_model_score": torch.tensor(0.1),
                                                "current_score": np.float64(0.25)}}}},
                "optimizer_states": [], "lr_schedulers": []}}
        torch.save(ckpt, {str(path)!r})
    """)
    subprocess.run([sys.executable, "-c", script], check=True)
    tmp.unlink()
    return path
