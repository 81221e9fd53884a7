"""CinematicUNet3DToModel: the UNet3D as a ComfyUI MODEL, so the stock KSampler, SamplerCustomAdvanced, every core
sampler and scheduler, and core model nodes (FreeU, LoraLoaderModelOnly, Context Windows (Manual), ...) drive it on
5-D video latents. The MODEL is a clone of the view's own ModelPatcher (nodes/comfy_model.py): LoRAs and temporal
strength applied with Cinematic's nodes come along.

Outside ComfyUI the node exists (workflows still load) but says plainly that it only works inside ComfyUI.
"""

from __future__ import annotations

from ..model_loaders.video_unet import VideoUNet
from . import comfy_model


class CinematicUNet3DToModel:
    DESCRIPTION = ("Turns the text-to-video UNet3D into a ComfyUI MODEL so the stock KSampler, the core samplers and "
                   "schedulers and core model nodes (FreeU, LoRA, context windows) can drive it (use a 5-D latent "
                   "from Empty Text-to-Video Latent). Inside ComfyUI only.")
    CATEGORY = "Cinematic/sampling"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "convert"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"unet": ("T2V_UNET3D", {"tooltip": (
            "From Load Text-to-Video UNet3D or Checkpoint, optionally through Cinematic LoRA / temporal strength "
            "nodes.")})}}

    def convert(self, unet):
        if not comfy_model.available():
            raise RuntimeError("UNet3D to MODEL only works inside ComfyUI (it hands the UNet3D to ComfyUI's own "
                               "samplers). Outside ComfyUI use the Text-to-Video Sampler node.")
        unet = unet if isinstance(unet, VideoUNet) else VideoUNet(unet)
        return (comfy_model.as_comfy_model(unet),)


NODE_CLASS_MAPPINGS = {"CinematicUNet3DToModel": CinematicUNet3DToModel}
NODE_DISPLAY_NAME_MAPPINGS = {"CinematicUNet3DToModel": "UNet3D to MODEL (for KSampler)"}
