"""CinematicEmptyVideoLatent and CinematicSampler."""

from __future__ import annotations

import contextlib

import torch

from ..samplers.conditioning import match_layouts
from ..samplers.context import ContextOptions, describe, freenoise_noise
from ..samplers.freeinit import FreeInitOptions, sample_freeinit
from ..samplers.noise_mask import prepare_mask
from ..samplers.registry import SAMPLERS, SCHEDULES
from ..samplers.sampling import get_sigmas, make_noise, sample
from ..model_loaders.video_unet import VideoUNet
from . import comfy_env, comfy_model
from .vae import check_video_latent


class CinematicEmptyVideoLatent:
    DESCRIPTION = "An empty (all-zero) video latent to start text-to-video sampling from."
    CATEGORY = "Cinematic/latent"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "generate"

    @classmethod
    def INPUT_TYPES(cls):
        size = {"min": 64, "max": 4096, "step": 8}
        return {"required": {
            "width": ("INT", {"default": 256, **size, "tooltip": (
                "Frame width in pixels, a multiple of 8. text-to-video-ms-1.7b was trained at 256x256, "
                "zeroscope_v2 576w at 576x320, zeroscope XL at 1024x576.")}),
            "height": ("INT", {"default": 256, **size, "tooltip": "Frame height in pixels, a multiple of 8."}),
            "frames": ("INT", {"default": 16, "min": 1, "max": 1024, "tooltip": (
                "Number of frames. The models were trained on 16 (zeroscope: 24); quality falls apart beyond "
                "about 24-45 frames.")}),
            "batch_size": ("INT", {"default": 1, "min": 1, "max": 64, "tooltip": "How many videos at once."}),
        }}

    def generate(self, width, height, frames, batch_size=1):
        if width % 8 or height % 8:
            raise ValueError(f"Width and height must be multiples of 8 (got {width}x{height}); use e.g. "
                             f"{width // 8 * 8}x{height // 8 * 8}.")
        return ({"samples": torch.zeros(batch_size, 4, frames, height // 8, width // 8)},)


# Linear map from the SD latent (scaled) to RGB, for live previews (the factors ComfyUI uses for SD1.x/2.x latents).
_LATENT_RGB = torch.tensor([[0.3512, 0.2297, 0.3227], [0.3250, 0.4974, 0.2350], [-0.2829, 0.1762, 0.2721],
                            [-0.2120, -0.2616, -0.7177]])


def latent_preview(denoised: torch.Tensor):
    """The middle frame of the first video as a small RGB image, in the form ComfyUI's ProgressBar shows."""
    from PIL import Image

    frame = denoised[0, :, denoised.shape[2] // 2].float().cpu()  # [4, h, w]
    rgb = torch.einsum("chw,cr->hwr", frame, _LATENT_RGB)
    image = ((rgb + 1) / 2).clamp(0, 1).mul(255).to(torch.uint8).numpy()
    return ("JPEG", Image.fromarray(image), 512)


def _context(conditioning, which: str, width: int = 1024) -> torch.Tensor:
    """The CONDITIONING's tensor, checked against the UNet3D's context width (1024 for the real model; a small
    model such as the demo model takes its own text tower's width)."""
    if not isinstance(conditioning, (list, tuple)) or not conditioning:
        raise ValueError(f"The {which} input is not a CONDITIONING; connect a text encode node to it.")
    if len(conditioning) > 1:
        print(f"[Cinematic] {which} conditioning has {len(conditioning)} entries; only the first is used.")
    cond = conditioning[0][0]
    if cond.ndim != 3:
        raise ValueError(f"The {which} conditioning has shape {tuple(cond.shape)}; expected [batch, tokens, {width}].")
    if cond.shape[-1] != width:
        hint = (" That is an SD1.5 CLIP (768 wide): encode with the model's own text encoder (Text-to-Video Text "
                "Encode) or an SD2 / OpenCLIP ViT-H/14 CLIP." if cond.shape[-1] == 768 else
                " Encode the prompt with the text encoder that came with this UNet3D (the same checkpoint).")
        needs = ("OpenCLIP ViT-H/14 conditioning, 1024 wide" if width == 1024 else
                 f"{width}-wide conditioning from its own text encoder")
        raise ValueError(f"The {which} conditioning is {cond.shape[-1]} wide; this text-to-video UNet3D needs "
                         f"{needs}.{hint}")
    return cond


class CinematicSampler:
    DESCRIPTION = ("Samples a video latent with the UNet3D: classifier-free guidance, any registered sampler and "
                   "schedule. ddim + modelscope reproduces the original ModelScope pipeline.")
    CATEGORY = "Cinematic/sampling"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        samplers = list(SAMPLERS)
        schedules = list(SCHEDULES)
        return {"required": {
            "unet": ("T2V_UNET3D",),
            "positive": ("CONDITIONING", {"tooltip": "What the video should show."}),
            "negative": ("CONDITIONING", {"tooltip": "What to steer away from (the original uses an empty prompt)."}),
            "latent": ("LATENT", {"tooltip": "An empty video latent, or an encoded video for video-to-video."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                             "tooltip": "The noise seed: the same seed gives the same video, on any device."}),
            "steps": ("INT", {"default": 50, "min": 1, "max": 1000, "tooltip": "Denoising steps (the original: 50)."}),
            "cfg": ("FLOAT", {"default": 9.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01, "tooltip": (
                "Classifier-free guidance scale (the original: 9). At 1.0 the negative prompt is ignored and each "
                "step costs one UNet pass instead of two. With a guidance-embedding UNet (T2V-Turbo LoRA or "
                "model) cfg is the guidance scale w given to the UNet itself (T2V-Turbo: 7.5): one UNet pass per "
                "step, the negative prompt unused.")}),
            "sampler_name": (samplers, {"default": "ddim", "tooltip": (
                "The sampling method. lcm: the consistency step of distilled models (T2V-Turbo, MCM), 1-8 steps.")}),
            "scheduler": (schedules, {"default": "modelscope", "tooltip": (
                "The noise schedule. modelscope: the original's DDIM timesteps (981, 961, ..., 1 for 50 steps). "
                "t2v_turbo: T2V-Turbo's timesteps (999, 759, 519, 279 for 4 steps); lcm: diffusers' LCM timesteps "
                "(999, 759, 499, 259), for MCM.")}),
            "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": (
                "1.0: start from pure noise. Below 1 (video-to-video): keep that much of the input latent's "
                "structure away; runs only the last steps x denoise steps of the schedule.")}),
        }, "optional": {
            "eta": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": (
                "DDIM's eta: 0 is deterministic (the original), 1 adds fresh noise each step. Only ddim uses it.")}),
            "context_options": ("T2V_CONTEXT_OPTIONS", {"tooltip": (
                "From Text-to-Video Context Windows: sample long clips in overlapping windows of frames (memory "
                "follows the window). Not connected: the whole clip at once.")}),
            "freeinit": ("T2V_FREEINIT", {"tooltip": (
                "From Text-to-Video FreeInit: sample several times, re-initialising the noise from the previous "
                "result's low frequencies. Not connected: one run.")}),
            "resample": ("INT", {"default": 0, "min": 0, "max": 20, "tooltip": (
                "For latents with held frames (Image to Video Latent, Extend Video, a noise mask): re-noise and "
                "redo each step this many times more (RePaint), so the generated frames agree with the held ones "
                "instead of jumping next to them. Each costs one more pass per step; 0 is off.")}),
        }}

    def sample(self, unet, positive, negative, latent, seed=0, steps=50, cfg=9.0, sampler_name="ddim",
               scheduler="modelscope", denoise=1.0, eta=0.0, context_options=None, freeinit=None, resample=0):
        samples = latent["samples"]
        check_video_latent(samples, "Text-to-Video Sampler")
        noise_mask = latent.get("noise_mask")
        if noise_mask is not None:
            noise_mask = prepare_mask(noise_mask, samples.shape)  # a mask that fits nothing fails here, early
        b, frames = samples.shape[0], samples.shape[2]
        # Rows per video (repeated as core does) or per frame (a prompt schedule); see samplers/conditioning.py.
        width = getattr(getattr(unet, "config", None), "context_dim", 1024)
        cond, uncond = match_layouts(_context(positive, "positive", width), _context(negative, "negative", width),
                                     b, frames)
        if sampler_name not in SAMPLERS:
            raise ValueError(f"Unknown sampler {sampler_name!r}; available: {', '.join(SAMPLERS)}.")
        if scheduler not in SCHEDULES:
            raise ValueError(f"Unknown scheduler {scheduler!r}; available: {', '.join(SCHEDULES)}.")
        if context_options is not None and not isinstance(context_options, ContextOptions):
            raise ValueError("context_options must come from a Text-to-Video Context Windows node.")
        if freeinit is not None and not isinstance(freeinit, FreeInitOptions):
            raise ValueError("freeinit must come from a Text-to-Video FreeInit node.")

        noise = make_noise(samples.shape, seed)
        reschedule = None
        if context_options is not None:
            print(f"[Cinematic] {describe(context_options, frames)}")
            if context_options.freenoise:
                def reschedule(n):
                    return freenoise_noise(n, context_options, seed)

                noise = reschedule(noise)
        unet = unet if isinstance(unet, VideoUNet) else VideoUNet(unet)
        device = comfy_model.load(unet)
        steps_per_run = len(get_sigmas(scheduler, steps, denoise)) - 1
        if resample < 0:
            raise ValueError(f"resample must be 0 or more (got {resample}).")
        runs = freeinit.iterations if freeinit is not None else 1
        progress = comfy_env.Progress(steps_per_run * runs, "sampling")
        # Inside ComfyUI its memory manager has patched the weights (LoRA) while loading; outside, do it here.
        weights = contextlib.nullcontext() if comfy_model.available() else unet.weights_applied()

        def callback(i, x, denoised):
            comfy_env.throw_if_interrupted()
            progress.update(i + 1, latent_preview(denoised) if progress.wants_preview else None)

        def run(start_latent, start_noise, step_callback):
            return sample(unet, start_latent, cond, uncond, seed=seed, steps=steps, cfg=cfg, sampler=sampler_name,
                          schedule=scheduler, denoise=denoise, eta=eta if sampler_name == "ddim" else None,
                          callback=step_callback, device=device, dtype=unet.dtype, noise=start_noise,
                          context=context_options, between_windows=comfy_env.throw_if_interrupted,
                          noise_mask=noise_mask, mask_source=samples, resample=resample)

        try:
            with weights:
                comfy_env.throw_if_interrupted()
                out = sample_freeinit(run, samples, noise, freeinit, seed, steps_per_run, callback, reschedule)
        finally:
            progress.close()
            comfy_model.release(unet)
        return ({**latent, "samples": out},)


NODE_CLASS_MAPPINGS = {
    "CinematicEmptyVideoLatent": CinematicEmptyVideoLatent,
    "CinematicSampler": CinematicSampler,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "CinematicEmptyVideoLatent": "Empty Text-to-Video Latent",
    "CinematicSampler": "Text-to-Video Sampler",
}
