"""CinematicUNet3DLoader: the denoiser on its own (from text2video/ or diffusion_models/)."""

from __future__ import annotations

import functools

from ..model_loaders.unet_loader import load_unet
from ..model_loaders.video_unet import VideoUNet
from . import comfy_env, comfy_model

WEIGHT_DTYPE_TOOLTIP = (
    "Precision the weights are kept in. default: fp16 on a GPU (half the memory, the precision of the published "
    "fp16 files), fp32 on the CPU (exact, and fast on every CPU). bf16 saves memory on recent GPUs and CPUs with "
    "AVX-512 BF16. fp8_e4m3fn / fp8_e5m2: the UNet3D's weights stored in 8 bits (half of fp16's memory), each layer "
    "computed in fp16 on a GPU / fp32 on the CPU; slightly different output (README). fp8_e4m3fn_fast also uses fp8 "
    "matrix multiplication on GPUs that have it (inside ComfyUI)."
)
#: existing values first, in place (workflows store the choice by name); fp8 appended, named as core UNETLoader names them
WEIGHT_DTYPES = ["default", "fp32", "fp16", "bf16", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"]


class CinematicUNet3DLoader:
    DESCRIPTION = (
        "Loads the ModelScope text-to-video UNet3D (text-to-video-ms-1.7b, zeroscope_v2, animov, potat1...) from "
        "the original text2video_pytorch_model.pth, its .safetensors, or a diffusers unet/ file or folder."
    )
    CATEGORY = "Cinematic/loaders"
    RETURN_TYPES = ("T2V_UNET3D",)
    RETURN_NAMES = ("unet",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        names = comfy_env.list_models(comfy_env.TEXT2VIDEO, "diffusion_models", include_folders=True)
        return {
            "required": {
                "unet_name": (names, {"tooltip": "The UNet3D weights: a file or diffusers folder from "
                                                 "models/text2video or models/diffusion_models."}),
                "weight_dtype": (WEIGHT_DTYPES, {"default": "default", "tooltip": WEIGHT_DTYPE_TOOLTIP}),
            }
        }

    def load(self, unet_name, weight_dtype="default"):
        path = comfy_env.resolve_model(unet_name, comfy_env.TEXT2VIDEO, "diffusion_models")
        reload = functools.partial(load_unet, path, weight_dtype, device=comfy_env.torch_device(),
                                   operations=comfy_model.unet_operations(weight_dtype))
        module = reload()
        comfy_model.remember_source(module, reload)
        return (VideoUNet(module),)


NODE_CLASS_MAPPINGS = {"CinematicUNet3DLoader": CinematicUNet3DLoader}
NODE_DISPLAY_NAME_MAPPINGS = {"CinematicUNet3DLoader": "Load Text-to-Video UNet3D"}
