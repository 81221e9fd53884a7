"""A tiny random-weight text-to-video model (UNet3D + text encoder + VAE) in each real checkpoint layout.

    write_original_folder(folder, seed)     # configuration.json + the three original files
    write_diffusers_folder(folder, seed)    # unet/ vae/ text_encoder/ tokenizer/
    write_single_file(path, seed)           # our single .safetensors (scripts/convert_checkpoint.py)

The three layouts of one seed hold the same weights. The VAE is the tiny one (2 levels, so it scales by 2, not 8):
tests that check image sizes use `VAE_SCALE`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from . import tiny_text, tiny_unet, tiny_vae

REPO = Path(__file__).resolve().parents[2]
VAE_SCALE = 2  # the tiny VAE has 2 levels


def parts(seed: int = 0):
    return (tiny_unet.tiny_state_dict(seed), tiny_text.reference_clip("tiny", seed).state_dict(),
            tiny_vae.tiny_state_dict(seed))


def write_original_folder(folder, seed: int = 0) -> Path:
    folder = Path(folder)
    unet, clip, vae = parts(seed)
    tiny_unet.write_modelscope_configuration(folder)
    tiny_unet.write_original_pth(unet, folder / "text2video_pytorch_model.pth")
    tiny_vae.write_lightning_checkpoint(vae, folder / "VQGAN_autoencoder.pth")
    torch.save(clip, folder / "open_clip_pytorch_model.bin")
    return folder


def write_diffusers_folder(folder, seed: int = 0) -> Path:
    from cinematic.model_loaders.text_encoder import text_encoder_from_state_dict

    folder = Path(folder)
    unet, clip, vae = parts(seed)
    tiny_unet.write_diffusers_folder(unet, folder)
    tiny_vae.write_diffusers_vae(vae, folder)
    encoder = text_encoder_from_state_dict(clip)  # the tower cut to its penultimate block, as diffusers ships it
    te_dir = folder / "text_encoder"
    te_dir.mkdir(parents=True, exist_ok=True)
    # transformers-4 style keys (text_model. prefix), as the published folders have
    sd = {"text_model." + k.removeprefix("text_model."): v.contiguous()
          for k, v in encoder.model.state_dict().items() if not k.endswith("position_ids")}
    save_file(sd, str(te_dir / "model.safetensors"))
    (te_dir / "config.json").write_text(encoder.model.config.to_json_string())
    tok = folder / "tokenizer"
    tok.mkdir(exist_ok=True)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(REPO / "model_loaders" / "data" / name, tok / name)
    (folder / "model_index.json").write_text('{"_class_name": "TextToVideoSDPipeline"}')
    return folder


def write_single_file(path, seed: int = 0, scratch=None) -> Path:
    from cinematic.model_loaders.checkpoint import SINGLE_FILE_FORMAT, load_checkpoint, single_file_state_dict

    path = Path(path)
    source = write_original_folder(Path(scratch or path.parent) / f"_single_src_{seed}", seed)
    sd = single_file_state_dict(*load_checkpoint(source, "fp32"))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(path), metadata={"cinematic_format": SINGLE_FILE_FORMAT})
    shutil.rmtree(source)
    return path
