"""Frames you give it: images placed on chosen frames (image-to-video, loops, keyframes), continuing a clip, joining.

Each node returns a LATENT whose `noise_mask` (1 = generate, 0 = keep) tells the sampler which frames to hold; the
Text-to-Video Sampler and core KSampler (through UNet3D to MODEL) both honour it (samplers/noise_mask.py).
"""

from __future__ import annotations

import torch

from ..samplers.keyframes import keyframe_mask, nearest_keyframe, parse_keyframes
from .vae import CinematicVAEEncode, check_video_latent


def _video_latent(latent, node: str, which: str = "latent") -> torch.Tensor:
    if not isinstance(latent, dict) or "samples" not in latent:
        raise ValueError(f"{node}: the {which} input is not a LATENT.")
    samples = latent["samples"]
    check_video_latent(samples, node)
    return samples


class CinematicImageToVideoLatent:
    DESCRIPTION = ("Places one or more images on chosen frames of a new clip and holds them while the sampler "
                   "animates the rest: image-to-video, first-and-last-frame loops, keyframes.")
    CATEGORY = "Cinematic/latent"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "place"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae": ("T2V_VAE",),
            "images": ("IMAGE", {"tooltip": (
                "The image(s) to hold, all of one size (a multiple of 8, e.g. 256x256). One image per keyframe, or "
                "one image for every keyframe.")}),
            "frames": ("INT", {"default": 16, "min": 1, "max": 1024, "tooltip": "Length of the new clip in frames."}),
            "keyframes": ("STRING", {"default": "0", "tooltip": (
                'The frame of each image, comma-separated, 0-based, negative from the end: "0" first frame (image '
                'to video), "-1" last frame, "0,-1" a loop (one image at both ends, or two images).')}),
            "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": (
                "How long the keyframes are held: 1 through the whole schedule (the frame comes out as the image), "
                "lower releases them earlier so the model may move them, 0 not at all.")}),
        }, "optional": {
            "falloff": ("INT", {"default": 0, "min": 0, "max": 64, "tooltip": (
                "Also hold the n frames on each side of a keyframe, more weakly with distance "
                "(strength x (n + 1 - d) / (n + 1) at distance d): smoother motion out of the image.")}),
            "batch_size": ("INT", {"default": 1, "min": 1, "max": 64, "tooltip": "How many videos at once."}),
        }}

    def place(self, vae, images, frames, keyframes, strength, falloff=0, batch_size=1):
        if not isinstance(images, torch.Tensor) or images.ndim != 4:
            raise ValueError("Image to Video Latent: the images input is not an IMAGE batch [N, height, width, 3].")
        count = images.shape[0]
        where = parse_keyframes(keyframes, frames, count)
        mask = keyframe_mask(where, frames, strength, falloff)  # checks strength and falloff before any work
        encoded = CinematicVAEEncode().encode(vae, images)[0]["samples"]  # [1, 4, K, h, w]
        owner = nearest_keyframe(where, frames)
        image_of = [k if count > 1 else 0 for k in owner]
        samples = encoded[:, :, image_of].repeat(batch_size, 1, 1, 1, 1)
        h, w = samples.shape[-2:]
        noise_mask = mask.reshape(1, 1, frames, 1, 1).expand(batch_size, 1, frames, h, w).contiguous()
        return ({"samples": samples.contiguous(), "noise_mask": noise_mask},)


class CinematicExtendVideo:
    DESCRIPTION = ("Continues a clip: its last frames become the held first frames of a new clip, the rest is "
                   "generated. Join the two afterwards with Join Videos.")
    CATEGORY = "Cinematic/latent"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "extend"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "latent": ("LATENT", {"tooltip": "The clip to continue (a sampled or encoded video latent)."}),
            "frames": ("INT", {"default": 16, "min": 2, "max": 1024, "tooltip": (
                "Length of the new clip, the held frames included.")}),
            "overlap": ("INT", {"default": 4, "min": 1, "max": 1024, "tooltip": (
                "How many of the clip's last frames start the new clip (held as given). More frames carry more of "
                "the motion over.")}),
        }}

    def extend(self, latent, frames, overlap):
        samples = _video_latent(latent, "Extend Video")
        have = samples.shape[2]
        if overlap < 1 or overlap > have:
            raise ValueError(f"Extend Video: overlap {overlap} must be between 1 and the clip's {have} frames.")
        if overlap >= frames:
            raise ValueError(f"Extend Video: overlap {overlap} must be smaller than the new clip's {frames} frames, "
                             f"or nothing is left to generate.")
        held = samples[:, :, have - overlap:]
        rest = held[:, :, -1:].expand(-1, -1, frames - overlap, -1, -1)  # the last frame repeated (as image-to-video)
        new = torch.cat([held, rest], dim=2).contiguous()
        mask = torch.ones(new.shape[0], 1, frames, new.shape[3], new.shape[4])
        mask[:, :, :overlap] = 0
        return ({"samples": new, "noise_mask": mask},)


class CinematicJoinVideos:
    DESCRIPTION = ("Joins two clips into one: the first, then the second without its first `overlap` frames (the "
                   "frames it shares with the first, e.g. after Extend Video).")
    CATEGORY = "Cinematic/latent"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "join"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "first": ("LATENT", {"tooltip": "The earlier clip."}),
            "second": ("LATENT", {"tooltip": "The later clip (e.g. sampled from Extend Video's latent)."}),
            "overlap": ("INT", {"default": 4, "min": 0, "max": 1024, "tooltip": (
                "Frames at the start of the second clip that repeat the end of the first: counted once. Use "
                "Extend Video's overlap.")}),
        }}

    def join(self, first, second, overlap):
        a = _video_latent(first, "Join Videos", "first")
        b = _video_latent(second, "Join Videos", "second")
        if a.shape[0] != b.shape[0] or a.shape[-2:] != b.shape[-2:]:
            raise ValueError(f"Join Videos: the clips differ in batch or size ({tuple(a.shape)} vs "
                             f"{tuple(b.shape)}); join clips made at the same size and batch.")
        if overlap < 0 or overlap >= b.shape[2] or overlap > a.shape[2]:
            raise ValueError(f"Join Videos: overlap {overlap} must be below the second clip's {b.shape[2]} frames "
                             f"and at most the first clip's {a.shape[2]}.")
        return ({"samples": torch.cat([a, b[:, :, overlap:].to(a.dtype)], dim=2).contiguous()},)


NODE_CLASS_MAPPINGS = {
    "CinematicImageToVideoLatent": CinematicImageToVideoLatent,
    "CinematicExtendVideo": CinematicExtendVideo,
    "CinematicJoinVideos": CinematicJoinVideos,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "CinematicImageToVideoLatent": "Image to Video Latent",
    "CinematicExtendVideo": "Extend Video",
    "CinematicJoinVideos": "Join Videos",
}
