"""Nodes that return a patched view of the UNet3D: CinematicLoraLoader, CinematicTemporalStrength.

Each returns a new T2V_UNET3D sharing the loaded weights with its input; the input (and every other branch of the
graph using it) is unchanged, and views stack in the order they are chained (model_loaders/video_unet.py).
"""

from __future__ import annotations

import logging

from ..model_loaders.lora import read_lora
from ..model_loaders.video_unet import VideoUNet
from . import comfy_env

LORA_FOLDER = "loras"
log = logging.getLogger("Cinematic")


def _view(unet) -> VideoUNet:
    return unet if isinstance(unet, VideoUNet) else VideoUNet(unet)


class CinematicLoraLoader:
    DESCRIPTION = ("Applies a LoRA to the text-to-video UNet3D: Text-To-Video-Finetuning stable_lora, MotionDirector, "
                   "diffusers/PEFT and kohya files are recognised by their keys. Chain several to stack them.")
    CATEGORY = "Cinematic/loaders"
    RETURN_TYPES = ("T2V_UNET3D",)
    RETURN_NAMES = ("unet",)
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "unet": ("T2V_UNET3D", {"tooltip": "The UNet3D to patch; it stays unchanged for other branches."}),
            "lora_name": (comfy_env.list_models(LORA_FOLDER), {"tooltip": (
                "A LoRA trained on text-to-video-ms-1.7b or zeroscope, from models/loras. Its text-encoder part, if "
                "any, is reported in the console and not applied.")}),
            "strength": ("FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.01, "tooltip": (
                "How much of the LoRA to add: 1 as trained, 0 none, negative to subtract it.")}),
        }}

    def apply(self, unet, lora_name, strength=1.0):
        unet = _view(unet)
        path = comfy_env.resolve_model(lora_name, LORA_FOLDER)
        if strength == 0:
            return (unet.view(),)
        lora = read_lora(path, unet.module)
        if lora.text_encoder_keys:
            msg = (f"[Cinematic] {path.name}: {len(lora.text_encoder_keys)} text-encoder LoRA tensors were not "
                   f"applied (this node patches the UNet3D only), e.g. {lora.text_encoder_keys[0]}")
            log.warning(msg)
            print(msg)
        label = f"lora:{path.name}@{strength:g}"
        print(f"[Cinematic] {path.name}: {lora.format} LoRA, {len(lora.patches)} UNet3D layers, strength {strength:g}")
        return (unet.with_weight_patches(lora.patches, strength, label),)


class CinematicTemporalStrength:
    DESCRIPTION = ("Scales how much the UNet3D's temporal layers act: 1 is the model as trained, 0 turns them off "
                   "(the original's image mode: every frame on its own). Chained, the strengths multiply.")
    CATEGORY = "Cinematic/loaders"
    RETURN_TYPES = ("T2V_UNET3D",)
    RETURN_NAMES = ("unet",)
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        strength = {"default": 1.0, "min": 0.0, "max": 2.0, "step": 0.01}
        return {"required": {
            "unet": ("T2V_UNET3D", {"tooltip": "The UNet3D to patch; it stays unchanged for other branches."}),
            "attention_strength": ("FLOAT", {**strength, "tooltip": (
                "Temporal attention (frames looking at each other): out = x + s * (attention(x) - x). Lower for "
                "less motion and more per-frame detail, higher for more coherence; 0 = independent frames.")}),
            "conv_strength": ("FLOAT", {**strength, "tooltip": (
                "Temporal convolutions (each frame mixing with its neighbours), blended the same way.")}),
        }}

    def apply(self, unet, attention_strength=1.0, conv_strength=1.0):
        return (_view(unet).with_temporal_strength(attention_strength, conv_strength),)


NODE_CLASS_MAPPINGS = {
    "CinematicLoraLoader": CinematicLoraLoader,
    "CinematicTemporalStrength": CinematicTemporalStrength,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "CinematicLoraLoader": "Load Text-to-Video LoRA",
    "CinematicTemporalStrength": "Text-to-Video Temporal Strength",
}
