"""One `text2video` entry holding all three sub-networks.

Layouts:
* original (ModelScope) folder: configuration.json, text2video_pytorch_model.pth, VQGAN_autoencoder.pth,
  open_clip_pytorch_model.bin;
* diffusers folder: unet/, vae/, text_encoder/, tokenizer/ (fp16 variant files too);
* a single .safetensors file written by scripts/convert_checkpoint.py, with these key prefixes:
    `unet.`          the UNet3D in the original ModelScope key layout,
    `vae.`           the AutoencoderKL in LDM key layout,
    `text_encoder.`  the text tower as transformers' CLIPTextModel keys (no `text_model.`), already cut to the
                     layers the model runs (23 for ViT-H/14's penultimate output),
  and metadata `cinematic_format` = "1".
A small model (the demo model, scripts/train_demo_model.py) also uses: metadata `cinematic_unet_head_dim` (its
attention head size, when not 64), a text tower narrower than 1024 (as wide as its UNet3D's context), and
`text_encoder.embeddings.token_embedding.ids` (only the token rows its prompts use are stored; see text_encoder.py).
"""

from __future__ import annotations

from pathlib import Path

import torch

from .safe_load import ModelFileError, read_keys, safetensors_metadata
from .text_encoder import TextEncoder, load_text_encoder
from .unet3d import UNet3D
from .unet_loader import load_unet
from .vae import VAE, load_vae

SINGLE_FILE_FORMAT = "1"
PREFIXES = {"unet": "unet.", "vae": "vae.", "text_encoder": "text_encoder."}


def checkpoint_layout(path: Path) -> str:
    if path.is_dir():
        if (path / "unet").is_dir():
            return "diffusers"
        if (path / "text2video_pytorch_model.pth").is_file() or (path / "configuration.json").is_file():
            return "original"
        raise ModelFileError(
            f"{path} is not a text-to-video model folder: expected configuration.json + text2video_pytorch_model.pth "
            "+ VQGAN_autoencoder.pth + open_clip_pytorch_model.bin (original layout) or unet/ vae/ text_encoder/ "
            "(diffusers layout)."
        )
    if path.suffix.lower() not in (".safetensors", ".sft"):
        raise ModelFileError(f"{path.name}: a single-file text-to-video checkpoint is a .safetensors file holding "
                             "unet., vae. and text_encoder. keys; pick a model folder or such a file.")
    keys = read_keys(path)
    missing = [part for part, prefix in PREFIXES.items() if not any(k.startswith(prefix) for k in keys)]
    if missing:
        raise ModelFileError(
            f"{path.name} does not hold all three parts (missing: {', '.join(missing)}). A file with only the UNet3D "
            "goes through 'Load Text-to-Video UNet3D'; a full single file is written by scripts/convert_checkpoint.py."
        )
    return "single_file"


def load_checkpoint(path, weight_dtype: str = "default", device=None,
                    operations=None) -> tuple[UNet3D, TextEncoder, VAE]:
    """(unet, text_encoder, vae), all on the CPU. The UNet takes weight_dtype; the text encoder and VAE are fp32 on
    the CPU and fp16 elsewhere (the VAE redoes any fp16 overflow in fp32), unless weight_dtype names fp32."""
    path = Path(path)
    layout = checkpoint_layout(path)
    kind = torch.device(device).type if device is not None else "cpu"
    aux_dtype = torch.float32 if kind == "cpu" or weight_dtype == "fp32" else torch.float16
    if layout == "original":
        for name in ("text2video_pytorch_model.pth", "VQGAN_autoencoder.pth", "open_clip_pytorch_model.bin"):
            if not (path / name).is_file():
                raise ModelFileError(f"{path} is missing {name} (original ModelScope layout).")
        unet = load_unet(path, weight_dtype, device, operations)
        vae = load_vae(path / "VQGAN_autoencoder.pth", aux_dtype)
        text = load_text_encoder(path / "open_clip_pytorch_model.bin", aux_dtype)
    elif layout == "diffusers":
        unet = load_unet(path, weight_dtype, device, operations)
        vae = load_vae(path, aux_dtype)
        text = load_text_encoder(path, aux_dtype)
    else:
        unet = load_unet(path, weight_dtype, device, operations)
        vae = load_vae(path, aux_dtype)
        text = load_text_encoder(path, aux_dtype)
    if text.width != unet.config.context_dim:
        raise ModelFileError(
            f"{path.name}: its text encoder is {text.width} wide but its UNet3D attends to {unet.config.context_dim}-"
            "wide text: the entry mixes parts of two models. Use the text encoder that was trained with this UNet3D."
        )
    return unet, text, vae


def single_file_state_dict(unet: UNet3D, text: TextEncoder, vae: VAE, dtype: torch.dtype | None = None) -> dict:
    out = {}
    parts = (("unet.", unet.state_dict()), ("vae.", vae.model.state_dict()), ("text_encoder.", text.model.state_dict()))
    for prefix, sd in parts:
        for key, value in sd.items():
            if key.endswith("position_ids"):
                continue
            key = key.removeprefix("text_model.") if prefix == "text_encoder." else key
            if dtype is not None and value.is_floating_point():
                value = value.to(dtype)
            out[prefix + key] = value.contiguous()
    return out


def is_single_file(path) -> bool:
    try:
        return safetensors_metadata(path).get("cinematic_format") == SINGLE_FILE_FORMAT
    except (ModelFileError, OSError):
        return False
