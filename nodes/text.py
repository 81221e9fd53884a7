"""CinematicTextEncoderLoader and CinematicTextEncode."""

from __future__ import annotations

import torch

from ..model_loaders.text_encoder import CONTEXT_LENGTH, load_text_encoder
from . import comfy_env


def default_aux_dtype(device) -> torch.dtype:
    """Text encoder and VAE: fp32 on the CPU (exact, and CPUs gain little from fp16), fp16 on a GPU."""
    return torch.float32 if torch.device(device).type == "cpu" else torch.float16


class CinematicTextEncoderLoader:
    DESCRIPTION = ("Loads the OpenCLIP ViT-H/14 text encoder of the ModelScope text-to-video model (from "
                   "open_clip_pytorch_model.bin, a diffusers text_encoder/ folder or a CLIP file).")
    CATEGORY = "Cinematic/loaders"
    RETURN_TYPES = ("T2V_TEXT_ENCODER",)
    RETURN_NAMES = ("text_encoder",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        names = comfy_env.list_models(comfy_env.TEXT2VIDEO, "text_encoders", include_folders=True)
        return {"required": {"text_encoder_name": (names, {
            "tooltip": "The text encoder weights, from models/text2video or models/text_encoders: "
                       "open_clip_pytorch_model.bin, a model folder, or a .safetensors CLIP file."})}}

    def load(self, text_encoder_name):
        path = comfy_env.resolve_model(text_encoder_name, comfy_env.TEXT2VIDEO, "text_encoders")
        return (load_text_encoder(path, default_aux_dtype(comfy_env.torch_device())),)


class CinematicTextEncode:
    DESCRIPTION = "Turns a prompt into the conditioning the text-to-video sampler follows."
    CATEGORY = "Cinematic/conditioning"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "text_encoder": ("T2V_TEXT_ENCODER", {"tooltip": "From Load Text-to-Video Text Encoder or Checkpoint."}),
            "text": ("STRING", {"multiline": True, "dynamicPrompts": True, "tooltip": (
                "The prompt, in English. Like the original model, only the first 75 tokens (roughly 50-60 words) "
                "are used; anything after that is cut off. Leave empty for the unconditional (negative) prompt.")}),
        }}

    def encode(self, text_encoder, text):
        device = comfy_env.torch_device()
        text_encoder.to(device)
        try:
            cond, pooled = text_encoder.encode([text])
        finally:
            text_encoder.to(comfy_env.offload_device())
        count = text_encoder.tokenizer.count(text)
        if count > CONTEXT_LENGTH - 2:
            print(f"[Cinematic] prompt has {count} tokens; only the first {CONTEXT_LENGTH - 2} are used.")
        return ([[cond.cpu(), {"pooled_output": pooled.cpu()}]],)


NODE_CLASS_MAPPINGS = {
    "CinematicTextEncoderLoader": CinematicTextEncoderLoader,
    "CinematicTextEncode": CinematicTextEncode,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "CinematicTextEncoderLoader": "Load Text-to-Video Text Encoder",
    "CinematicTextEncode": "Text-to-Video Text Encode",
}
