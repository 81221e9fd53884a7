"""Nodes that return a patched view of the UNet3D: CinematicLoraLoader, CinematicTemporalStrength.

Each returns a new T2V_UNET3D sharing the loaded weights with its input; the input (and every other branch of the
graph using it) is unchanged, and views stack in the order they are chained (model_loaders/video_unet.py).
"""

from __future__ import annotations

import logging

from ..model_loaders.guidance_embedding import (BASE_INITS, DEFAULT_GUIDANCE, GUIDANCE_SCALE, TORCH_DEFAULT_SEED,
                                                authors_init_weight)
from ..model_loaders.lora import read_lora
from ..model_loaders.lora_list import COND_PROJ_KEY
from ..model_loaders.lora_peft import CONFIG_NAME
from ..model_loaders.video_unet import VideoUNet, WeightDelta
from . import comfy_env

LORA_FOLDER = "loras"
log = logging.getLogger("Cinematic")


def lora_choices() -> list[str]:
    """LoRA files, and PEFT adapter folders (adapter_config.json + adapter_model.safetensors: MCM)."""
    folders = comfy_env.list_folders_holding(LORA_FOLDER, CONFIG_NAME)
    return sorted(set(comfy_env.list_models(LORA_FOLDER)) | set(folders))


def _view(unet) -> VideoUNet:
    return unet if isinstance(unet, VideoUNet) else VideoUNet(unet)


class CinematicLoraLoader:
    DESCRIPTION = ("Applies a LoRA to the text-to-video UNet3D: Text-To-Video-Finetuning stable_lora, diffusers/PEFT "
                   "(MCM folders included), kohya, and list-format .pt files (MotionDirector, T2V-Turbo) are "
                   "recognised. Chain several to stack them.")
    CATEGORY = "Cinematic/loaders"
    RETURN_TYPES = ("T2V_UNET3D",)
    RETURN_NAMES = ("unet",)
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "unet": ("T2V_UNET3D", {"tooltip": "The UNet3D to patch; it stays unchanged for other branches."}),
            "lora_name": (lora_choices(), {"tooltip": (
                "A LoRA trained on text-to-video-ms-1.7b or zeroscope, from models/loras: a file (.safetensors, "
                ".pt lists from MotionDirector / T2V-Turbo) or a PEFT folder (MCM). Its text-encoder part, if any, "
                "is reported in the console and not applied.")}),
            "strength": ("FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.01, "tooltip": (
                "How much of the LoRA to add: 1 as trained, 0 none, negative to subtract it.")}),
        }, "optional": {
            "guidance_embedding_init": (list(BASE_INITS), {"default": BASE_INITS[0], "tooltip": (
                "Only for LoRAs that add a guidance embedding (T2V-Turbo): the base weight of that layer, which the "
                "authors never saved (their code draws it at random at every launch). authors_init: torch's default "
                "init drawn as a fresh launch of their demo draws it (the default); zero: only the LoRA's own "
                "delta.")}),
        }}

    def apply(self, unet, lora_name, strength=1.0, guidance_embedding_init=BASE_INITS[0]):
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
        if guidance_embedding_init not in BASE_INITS:
            raise ValueError(f"guidance_embedding_init must be one of {', '.join(BASE_INITS)}; got "
                             f"{guidance_embedding_init!r}.")
        label = f"lora:{path.name}@{strength:g}"
        rule = f" ({lora.rule} layers)" if lora.rule else ""
        print(f"[Cinematic] {path.name}: {lora.format} LoRA{rule}, {len(lora.patches)} UNet3D layers, "
              f"strength {strength:g}")
        if lora.guidance_embedding_dim:
            unet = with_guidance_embedding(unet, lora.guidance_embedding_dim, guidance_embedding_init)
        out = unet.with_weight_patches(lora.patches, strength, label)
        if COND_PROJ_KEY in lora.patches and GUIDANCE_SCALE not in out.transformer_options:
            out = out.with_options(**{GUIDANCE_SCALE: DEFAULT_GUIDANCE})
        return (out,)


def with_guidance_embedding(unet: VideoUNet, dim: int, init: str) -> VideoUNet:
    """A view whose UNet3D has a guidance embedding of width `dim` (T2V-Turbo's LoRA patches one the model lacks).

    The shared module gets a zero projection (harmless to every other view: zero, and only used when a guidance
    scale is given); this view adds the base weight as a patch (`authors_init`: see guidance_embedding.py; `zero`:
    none) and the default guidance scale, so the sampler makes one UNet pass per step with `cfg` as w."""
    module = unet.module
    module.add_guidance_embedding(dim)
    view = unet
    if not module.config.time_cond_proj_dim:  # not the model's own: this view brings the base weight
        if init == "authors_init":
            base = authors_init_weight(module.config.model_channels, module.config.in_channels, dim)
            view = view.with_weight_patches({COND_PROJ_KEY: WeightDelta(diff=base, layout="diff")}, 1.0,
                                            f"guidance embedding: authors' init (seed {TORCH_DEFAULT_SEED})")
        print(f"[Cinematic] the LoRA adds a {dim}-wide guidance embedding (base: {init}): the sampler's cfg is now "
              "the guidance scale w given to the UNet, one UNet pass per step.")
    return view.with_options(**{GUIDANCE_SCALE: view.transformer_options.get(GUIDANCE_SCALE, DEFAULT_GUIDANCE)})


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
