"""CinematicSelfAttentionGuidance: self-attention guidance (SAG) on a MODEL holding 5-D video latents.

Core `SelfAttentionGuidance` records the middle block's attention through the UNet3D but builds its blurred
prediction for 4-D image latents only; this node does the same guidance per frame (samplers/sag_blur.py). On the
MODEL it sets, through ModelPatcher's documented API:

* an `attn1` replace on the middle block's first spatial transformer `("middle", 0, 0)` that computes the attention as
  usual and keeps, from the unconditional rows, how much attention each token receives (one row per frame);
* a post-CFG function that blurs the unconditional prediction where that attention concentrates, re-noises it to the
  step's noise level, runs the model on the negative prompt once more (`comfy_model.predict_uncond`) and returns
  `cfg_result + (degraded - model(degraded)) * scale`: one extra UNet pass per step.
"""

from __future__ import annotations

from ..model_loaders import attention_patches
from ..samplers.sag_blur import KERNEL_SIZE, adversarial_blur, received_attention
from . import comfy_model

THRESHOLD = 1.0  # a token "draws attention" when it receives more than 1 (the mean is exactly 1 per token)


class CinematicSelfAttentionGuidance:
    DESCRIPTION = ("Self-attention guidance for video: blurs the negative prediction where the UNet's middle-block "
                   "self-attention concentrates, frame by frame, and steers away from it, which sharpens detail. "
                   "Use between UNet3D to MODEL and KSampler (core Self-Attention Guidance only handles image "
                   "latents). Costs one extra UNet pass per step; needs CFG (a negative prompt is used).")
    CATEGORY = "Cinematic/sampling"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "The MODEL from UNet3D to MODEL (or any model node after it)."}),
            "scale": ("FLOAT", {"default": 0.5, "min": -2.0, "max": 5.0, "step": 0.01, "tooltip": (
                "How strongly to steer away from the blurred prediction: 0 changes nothing, 0.5 is SAG's usual "
                "value; higher sharpens more and can oversaturate.")}),
            "blur_sigma": ("FLOAT", {"default": 2.0, "min": 0.0, "max": 10.0, "step": 0.1, "tooltip": (
                "Width of the Gaussian blur in latent pixels (a 9x9 kernel); 0 blurs nothing, which turns the "
                "guidance off.")}),
        }}

    def patch(self, model, scale, blur_sigma):
        if not comfy_model.available():
            raise RuntimeError("Self-Attention Guidance (video) only works inside ComfyUI (it patches a MODEL for "
                               "KSampler). Outside ComfyUI use the Text-to-Video Sampler node.")
        if blur_sigma < 0:
            raise ValueError(f"blur_sigma must be 0 or more; got {blur_sigma}.")
        patched = model.clone()
        recorded = {}  # the last unconditional middle-block map: "received" [rows, tokens], "grid" (h, w)

        def attn1_and_record(q, k, v, extra_options):
            heads = extra_options["n_heads"]
            out = attention_patches.attention(q, k, v, heads, extra_options)
            cond_or_uncond = extra_options.get("cond_or_uncond") or []
            if 1 in cond_or_uncond:
                rows = q.shape[0] // len(cond_or_uncond)
                first = rows * cond_or_uncond.index(1)
                recorded["received"] = received_attention(q[first:first + rows], k[first:first + rows], heads)
                recorded["grid"] = tuple(extra_options["activations_shape"][-2:])
            return out

        def post_cfg(args):
            cfg_result, uncond_pred, uncond = args["denoised"], args["uncond_denoised"], args["uncond"]
            if uncond is None or min(cfg_result.shape[-2:]) <= KERNEL_SIZE // 2:
                return cfg_result  # no negative to guide with / too small for the blur's reflected edges
            if "received" not in recorded:
                raise RuntimeError("Self-Attention Guidance (video): the model's middle block never ran the "
                                   "attention replace, so there is no attention map; use it on the MODEL from "
                                   "UNet3D to MODEL.")
            frames = uncond_pred.shape[0] * (uncond_pred.shape[2] if uncond_pred.dim() == 5 else 1)
            if recorded["received"].shape[0] != frames:
                raise RuntimeError(f"Self-Attention Guidance (video) needs each step's whole clip in one model call, "
                                   f"but the last attention map holds {recorded['received'].shape[0]} frames of "
                                   f"{frames}: remove context windows (or other nodes that split the clip) from the "
                                   f"MODEL, or leave this node out.")
            degraded = adversarial_blur(uncond_pred, recorded["received"], recorded["grid"], blur_sigma, THRESHOLD)
            renoised = degraded + args["input"] - uncond_pred
            sag = comfy_model.predict_uncond(args["model"], uncond, renoised, args["sigma"], args["model_options"])
            return cfg_result + (degraded - sag) * scale

        patched.set_model_sampler_post_cfg_function(post_cfg, disable_cfg1_optimization=True)
        patched.set_model_attn1_replace(attn1_and_record, "middle", 0, 0)
        return (patched,)


NODE_CLASS_MAPPINGS = {"CinematicSelfAttentionGuidance": CinematicSelfAttentionGuidance}
NODE_DISPLAY_NAME_MAPPINGS = {"CinematicSelfAttentionGuidance": "Self-Attention Guidance (video)"}
