"""Long clips and motion control: CinematicContextOptions, CinematicPromptSchedule, CinematicFreeInit.

Thin nodes over samplers/context.py, samplers/prompt_schedule.py and samplers/freeinit.py; the sampler
(nodes/sampling.py) takes the options through its optional inputs.
"""

from __future__ import annotations

import torch

from ..samplers.context import FREENOISE_MODES, FUSE_METHODS, SCHEDULES, ContextOptions
from ..samplers.freeinit import FILTERS, FreeInitOptions
from ..samplers.prompt_schedule import compose, interpolate_rows, parse_schedule
from . import comfy_env


class CinematicContextOptions:
    DESCRIPTION = ("Context windows for clips longer than the model's 16 frames: the sampler runs the UNet3D on "
                   "overlapping windows of frames and blends them, so memory follows the window, not the clip. "
                   "Optionally FreeNoise for smoother, more consistent windows.")
    CATEGORY = "Cinematic/sampling"
    RETURN_TYPES = ("T2V_CONTEXT_OPTIONS",)
    RETURN_NAMES = ("context_options",)
    FUNCTION = "build"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "context_length": ("INT", {"default": 16, "min": 1, "max": 1024, "tooltip": (
                "Frames per window. 16 is what text-to-video-ms-1.7b was trained on (zeroscope: 24). A window at "
                "least as long as the clip runs the whole clip at once, exactly as without this node. The "
                "UNet's memory follows this number, not the clip length.")}),
            "context_overlap": ("INT", {"default": 4, "min": 0, "max": 1023, "tooltip": (
                "Frames shared by neighbouring windows. More overlap blends seams better but makes more windows: "
                "time per step grows about as clip frames / (length - overlap) windows.")}),
            "context_schedule": (list(SCHEDULES), {"default": "standard_static", "tooltip": (
                "standard_static: the same windows every step, from frame 0 every (length - overlap) frames. "
                "standard_uniform: the windows shift every step so the seams move and blur out. looped_uniform: "
                "shifting windows that wrap from the last frame to the first, for clips meant to loop. batched: "
                "back-to-back windows without overlap (fewest windows, visible seams).")}),
            "fuse_method": (list(FUSE_METHODS), {"default": "pyramid", "tooltip": (
                "How overlapping windows are blended per frame. pyramid: the middle of a window counts most "
                "(FreeNoise's weighting). relative: the same idea, linear from the window's centre. flat: a plain "
                "average. overlap-linear: a linear cross-fade over the overlapping frames only.")}),
        }, "optional": {
            "context_stride": ("INT", {"default": 1, "min": 1, "max": 8, "tooltip": (
                "Uniform schedules only: besides windows of consecutive frames, also windows of every 2nd, 4th, "
                "... frame (this many levels), which tie distant frames together. Each level adds about as many "
                "windows again (and as much time).")}),
            "closed_loop": ("BOOLEAN", {"default": False, "tooltip": (
                "looped_uniform only: also run the window across the end -> start seam, so the clip loops.")}),
            "freenoise": ("BOOLEAN", {"default": False, "tooltip": (
                "FreeNoise (arXiv 2310.15169): frames past the first window start from shuffled copies of earlier "
                "frames' noise (drawn from the seed), so the windows agree on content and the background shifts "
                "less from window to window. Costs no time or memory.")}),
            "freenoise_mode": (list(FREENOISE_MODES), {"default": FREENOISE_MODES[0], "tooltip": (
                "With freenoise on. noise: only the noise is rescheduled; each window stays a whole UNet call "
                "(memory follows the window). noise + temporal attention windows: FreeNoise's own method: the "
                "whole UNet runs on every frame at once and only temporal attention is split into the windows and "
                "blended, so spatial layers and temporal convolutions have no seams; memory grows with the clip "
                "as without windows, and each step is one pass over all frames.")}),
        }}

    def build(self, context_length=16, context_overlap=4, context_schedule="standard_static", fuse_method="pyramid",
              context_stride=1, closed_loop=False, freenoise=False, freenoise_mode=FREENOISE_MODES[0]):
        return (ContextOptions(context_length=int(context_length), context_overlap=int(context_overlap),
                               context_schedule=context_schedule, fuse_method=fuse_method,
                               context_stride=int(context_stride), closed_loop=bool(closed_loop),
                               freenoise=bool(freenoise), freenoise_mode=freenoise_mode),)


class CinematicPromptSchedule:
    DESCRIPTION = ("Prompt travel: keyframed prompts become one conditioning row per frame, blended linearly "
                   "between keyframes, so the video changes what it shows over time.")
    CATEGORY = "Cinematic/conditioning"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "text_encoder": ("T2V_TEXT_ENCODER", {"tooltip": "From Load Text-to-Video Text Encoder or Checkpoint."}),
            "text": ("STRING", {"multiline": True, "default": "0: a cat walking in a garden\n24: a dog running "
                                "in a garden", "tooltip": (
                "One keyframe per line, `N: prompt`, N the frame counted from 0. Frames between two keyframes "
                "blend linearly from one prompt to the next; frames before the first keyframe use the first "
                "prompt, after the last the last. Keyframes closer than about 15 frames change little.")}),
            "frames": ("INT", {"default": 16, "min": 1, "max": 1024, "tooltip": (
                "How many frames the schedule covers: the latent's frame count (the sampler refuses a schedule "
                "of another length).")}),
        }, "optional": {
            "pre_text": ("STRING", {"multiline": True, "default": "", "tooltip": (
                "Put before every prompt (e.g. a style shared by all keyframes).")}),
            "app_text": ("STRING", {"multiline": True, "default": "", "tooltip": (
                "Put after every prompt (e.g. quality words).")}),
        }}

    def encode(self, text_encoder, text, frames=16, pre_text="", app_text=""):
        keyframes = parse_schedule(text)
        prompts = [compose(prompt, pre_text, app_text) for _, prompt in keyframes]
        unique = list(dict.fromkeys(prompts))
        device = comfy_env.torch_device()
        text_encoder.to(device)
        try:
            cond, pooled = text_encoder.encode(unique)
        finally:
            text_encoder.to(comfy_env.offload_device())
        order = torch.tensor([unique.index(p) for p in prompts])
        frame_numbers = [frame for frame, _ in keyframes]
        rows = interpolate_rows(cond.cpu()[order], frame_numbers, int(frames))
        pooled_rows = interpolate_rows(pooled.cpu()[order], frame_numbers, int(frames))
        past = [f for f in frame_numbers if f >= frames]
        if past:
            print(f"[Cinematic] prompt schedule: keyframes {past} lie past the last frame ({frames - 1}); frames "
                  "before them blend towards them.")
        return ([[rows, {"pooled_output": pooled_rows}]],)


class CinematicFreeInit:
    DESCRIPTION = ("FreeInit (arXiv 2312.07537): samples several times, each time starting from the low "
                   "frequencies of the previous result plus fresh fine noise, for more consistent motion. Costs "
                   "that many times the sampling time.")
    CATEGORY = "Cinematic/sampling"
    RETURN_TYPES = ("T2V_FREEINIT",)
    RETURN_NAMES = ("freeinit",)
    FUNCTION = "build"

    @classmethod
    def INPUT_TYPES(cls):
        cutoff = {"min": 0.01, "max": 1.0, "step": 0.01}
        return {"required": {
            "iterations": ("INT", {"default": 3, "min": 1, "max": 10, "tooltip": (
                "Whole sampling runs. 1 is plain sampling; each more costs one more full run (the paper uses 3-5).")}),
            "filter": (list(FILTERS), {"default": "butterworth", "tooltip": (
                "The low-pass filter over frames, height and width. butterworth: a sharp cut-off (the paper's "
                "choice); gaussian: a softer one.")}),
            "d_s": ("FLOAT", {"default": 0.25, **cutoff, "tooltip": (
                "Spatial cut-off, as a fraction of the highest frequency: lower keeps only the coarsest layout "
                "of the previous result.")}),
            "d_t": ("FLOAT", {"default": 0.25, **cutoff, "tooltip": (
                "Temporal cut-off over the frames: lower keeps only the slowest changes of the previous result.")}),
        }, "optional": {
            "order": ("INT", {"default": 4, "min": 1, "max": 16, "tooltip": (
                "Butterworth order: higher is a sharper cut-off (the paper: 4). Not used by gaussian.")}),
        }}

    def build(self, iterations=3, filter="butterworth", d_s=0.25, d_t=0.25, order=4):
        return (FreeInitOptions(iterations=int(iterations), filter=filter, d_s=float(d_s), d_t=float(d_t),
                                order=int(order)),)


NODE_CLASS_MAPPINGS = {
    "CinematicContextOptions": CinematicContextOptions,
    "CinematicPromptSchedule": CinematicPromptSchedule,
    "CinematicFreeInit": CinematicFreeInit,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "CinematicContextOptions": "Text-to-Video Context Windows (long clips)",
    "CinematicPromptSchedule": "Text-to-Video Prompt Schedule (prompt travel)",
    "CinematicFreeInit": "Text-to-Video FreeInit",
}
