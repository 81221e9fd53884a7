"""CinematicVAELoader, CinematicVAEDecode (5-D LATENT -> IMAGE) and CinematicVAEEncode (IMAGE -> 5-D LATENT)."""

from __future__ import annotations

import torch

from ..model_loaders.vae import load_vae
from . import comfy_env
from .text import default_aux_dtype


def check_video_latent(samples: torch.Tensor, node: str) -> None:
    if samples.ndim != 5:
        raise ValueError(
            f"{node} takes a 5-D video latent [batch, 4, frames, height/8, width/8], got a {samples.ndim}-D one "
            f"{tuple(samples.shape)}. A 4-D latent is an image latent from core nodes: make the latent with "
            "'Empty Text-to-Video Latent' or 'Text-to-Video VAE Encode' instead."
        )
    if samples.shape[1] != 4:
        raise ValueError(f"{node}: the latent has {samples.shape[1]} channels; the ModelScope VAE uses 4. "
                         "This latent comes from another model family.")


class CinematicVAELoader:
    DESCRIPTION = ("Loads the VAE that turns video latents into frames (VQGAN_autoencoder.pth, a diffusers vae/ "
                   "folder, or an SD VAE file such as vae-ft-mse-840000).")
    CATEGORY = "Cinematic/loaders"
    RETURN_TYPES = ("T2V_VAE",)
    RETURN_NAMES = ("vae",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        names = comfy_env.list_models(comfy_env.TEXT2VIDEO, "vae", include_folders=True)
        return {"required": {"vae_name": (names, {
            "tooltip": "The VAE weights, from models/text2video or models/vae."})}}

    def load(self, vae_name):
        path = comfy_env.resolve_model(vae_name, comfy_env.TEXT2VIDEO, "vae")
        return (load_vae(path, default_aux_dtype(comfy_env.torch_device())),)


def _chunks(total: int, size: int):
    for start in range(0, total, max(1, size)):
        yield slice(start, min(total, start + max(1, size)))


class CinematicVAEDecode:
    DESCRIPTION = ("Decodes a video latent into frames (an IMAGE batch: all frames of video 0, then video 1, ...), "
                   "a few frames at a time so long clips fit in memory.")
    CATEGORY = "Cinematic/latent"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "decode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae": ("T2V_VAE",),
            "latent": ("LATENT",),
            "frames_per_batch": ("INT", {"default": 4, "min": 1, "max": 4096, "tooltip": (
                "How many frames are decoded at once. Lower it if decoding runs out of memory; it changes "
                "memory use and speed, never the result. 4 is as fast as 8 or 16 (measured) with less memory.")}),
        }, "optional": {
            "tile_size": ("INT", {"default": 0, "min": 0, "max": 4096, "step": 64, "tooltip": (
                "0: decode whole frames (exact). Otherwise decode each frame in overlapping tiles of this many "
                "pixels, for very large frames that do not fit in memory. Each tile is decoded on its own (the VAE's "
                "attention sees only that tile), so the result differs slightly from a whole-frame decode.")}),
            "tile_overlap": ("INT", {"default": 64, "min": 0, "max": 1024, "step": 8, "tooltip": (
                "Pixels by which neighbouring tiles overlap and are blended (only with tile_size > 0).")}),
        }}

    def decode(self, vae, latent, frames_per_batch=4, tile_size=0, tile_overlap=64):
        samples = latent["samples"]
        check_video_latent(samples, "Text-to-Video VAE Decode")
        b, c, f, h, w = samples.shape
        frames = samples.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)  # batch-major: video 0's frames first
        device = comfy_env.torch_device()
        vae.to(device)
        progress = comfy_env.Progress(b * f, "decoding")
        out = None
        try:
            for part in _chunks(b * f, frames_per_batch):
                comfy_env.throw_if_interrupted()
                if tile_size:
                    image = vae.decode_tiled(frames[part], max(1, tile_size // 8), tile_overlap // 8)
                else:
                    image = vae.decode(frames[part])
                if out is None:  # the size comes from the VAE (8x for the real one)
                    out = torch.empty(b * f, image.shape[2], image.shape[3], 3)
                out[part] = image.clamp(-1, 1).mul(0.5).add(0.5).clamp(0, 1).permute(0, 2, 3, 1).cpu()
                progress.update(part.stop)
        finally:
            progress.close()
            vae.to(comfy_env.offload_device())
        return (out,)


class CinematicVAEEncode:
    DESCRIPTION = ("Encodes frames (one video: all frames in order) into a video latent, for video-to-video "
                   "(e.g. the zeroscope XL upscale pass).")
    CATEGORY = "Cinematic/latent"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae": ("T2V_VAE",),
            "images": ("IMAGE", {"tooltip": "The frames of one video, in order."}),
        }, "optional": {
            "frames_per_batch": ("INT", {"default": 8, "min": 1, "max": 4096, "tooltip": (
                "How many frames are encoded at once; changes memory use, never the result.")}),
        }}

    def encode(self, vae, images, frames_per_batch=8):
        if images.ndim != 4 or images.shape[-1] < 3:
            raise ValueError(f"Text-to-Video VAE Encode takes an IMAGE batch [frames, height, width, 3], got "
                             f"{tuple(images.shape)}.")
        n, height, width, _ = images.shape
        if height % 8 or width % 8:
            raise ValueError(f"The frames are {width}x{height}; width and height must be multiples of 8. Resize or "
                             f"crop them first, e.g. to {width // 8 * 8}x{height // 8 * 8}.")
        device = comfy_env.torch_device()
        vae.to(device)
        parts = []
        try:
            for part in _chunks(n, frames_per_batch):
                comfy_env.throw_if_interrupted()
                x = images[part, :, :, :3].permute(0, 3, 1, 2).float() * 2 - 1
                parts.append(vae.encode(x).cpu())
        finally:
            vae.to(comfy_env.offload_device())
        latent = torch.cat(parts).permute(1, 0, 2, 3).unsqueeze(0)  # [1, 4, N, h, w]
        return ({"samples": latent.contiguous()},)


NODE_CLASS_MAPPINGS = {
    "CinematicVAELoader": CinematicVAELoader,
    "CinematicVAEDecode": CinematicVAEDecode,
    "CinematicVAEEncode": CinematicVAEEncode,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "CinematicVAELoader": "Load Text-to-Video VAE",
    "CinematicVAEDecode": "Text-to-Video VAE Decode",
    "CinematicVAEEncode": "Text-to-Video VAE Encode",
}
