"""CinematicCheckpointLoader: the three sub-networks from one `text2video` entry."""

from __future__ import annotations

import functools

from ..model_loaders import builtin_demo
from ..model_loaders.checkpoint import load_checkpoint
from ..model_loaders.unet_loader import load_unet
from ..model_loaders.video_unet import VideoUNet
from . import comfy_env, comfy_model
from .loaders import WEIGHT_DTYPE_TOOLTIP, WEIGHT_DTYPES


class CinematicCheckpointLoader:
    DESCRIPTION = ("Loads a whole text-to-video model (UNet3D, text encoder, VAE) from models/text2video: a folder in "
                   "the original ModelScope layout, a diffusers folder, or a single .safetensors file.")
    CATEGORY = "Cinematic/loaders"
    RETURN_TYPES = ("T2V_UNET3D", "T2V_TEXT_ENCODER", "T2V_VAE")
    RETURN_NAMES = ("unet", "text_encoder", "vae")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        names = comfy_env.list_models(comfy_env.TEXT2VIDEO, include_folders=True, files_in_model_folders=False)
        if builtin_demo.available():  # last, so a real model stays the default pick
            names = names + [builtin_demo.NAME]
        return {"required": {
            "model_name": (names, {"tooltip": (
                "A model folder (text-to-video-ms-1.7b, zeroscope_v2_576w, ...) or a single .safetensors from "
                f"models/text2video. '{builtin_demo.NAME}' is the pack's own tiny demo model: a red, green, blue "
                "or yellow circle or square moving left, right, up or down (\"a red circle moving right\"), at "
                "64x64 and 16 frames (it follows the colour and shape, not yet the direction); it runs on any CPU in "
                "seconds.")}),
            "weight_dtype": (WEIGHT_DTYPES, {"default": "default", "tooltip": WEIGHT_DTYPE_TOOLTIP}),
        }}

    def load(self, model_name, weight_dtype="default"):
        if model_name == builtin_demo.NAME:
            path = builtin_demo.require_path()
        else:
            path = comfy_env.resolve_model(model_name, comfy_env.TEXT2VIDEO)
        operations = comfy_model.unet_operations(weight_dtype)
        unet, text, vae = load_checkpoint(path, weight_dtype, device=comfy_env.torch_device(), operations=operations)
        comfy_model.remember_source(unet, functools.partial(load_unet, path, weight_dtype,
                                                            device=comfy_env.torch_device(), operations=operations))
        return VideoUNet(unet), text, vae


NODE_CLASS_MAPPINGS = {"CinematicCheckpointLoader": CinematicCheckpointLoader}
NODE_DISPLAY_NAME_MAPPINGS = {"CinematicCheckpointLoader": "Load Text-to-Video Checkpoint"}
