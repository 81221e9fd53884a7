"""Writes example_workflows/*.json (ComfyUI's UI format) and their .jpg thumbnails.

    python scripts/make_example_workflows.py

Widget values are laid out from the nodes' own INPUT_TYPES, so the files stay in step with the node definitions
(tests/test_workflows.py checks them against NODE_CLASS_MAPPINGS and the core nodes they use).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "example_workflows"
sys.path.insert(0, str(ROOT / "tests"))

from cinematic_testing.comfy_core_nodes import CORE_NODES  # noqa: E402

PRIMITIVES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


def node_spec(pack, node_type):
    """(inputs [(name, type)], widgets [name], outputs [type]) of a pack or core node."""
    if node_type in pack.NODE_CLASS_MAPPINGS:
        cls = pack.NODE_CLASS_MAPPINGS[node_type]
        spec = cls.INPUT_TYPES()
        inputs, widgets = [], []
        for section in ("required", "optional"):
            for name, value in spec.get(section, {}).items():
                kind = value[0]
                if isinstance(kind, list) or kind in PRIMITIVES:
                    widgets.append(name)
                    if len(value) > 1 and isinstance(value[1], dict) and value[1].get("control_after_generate"):
                        widgets.append("control_after_generate")
                else:
                    inputs.append((name, kind))
        return inputs, widgets, list(cls.RETURN_TYPES)
    core = CORE_NODES[node_type]
    return list(core["inputs"].items()), list(core["widgets"]), list(core["outputs"])


def build(pack, title, nodes, links):
    """nodes: [(id, type, {widget: value}, (x, y))]; links: [(from_id, from_slot, to_id, input_name)]."""
    out_nodes, out_links = [], []
    specs = {nid: node_spec(pack, ntype) for nid, ntype, _, _ in nodes}
    for link_id, (src, slot, dst, name) in enumerate(links, start=1):
        inputs = dict(specs[dst][0])
        ltype = specs[src][2][slot]
        assert inputs[name] == ltype, (src, dst, name, ltype)
        out_links.append([link_id, src, slot, dst, [n for n, _ in specs[dst][0]].index(name), ltype])
    for order, (nid, ntype, values, pos) in enumerate(nodes):
        inputs, widgets, outputs = specs[nid]
        defaults = widget_defaults(pack, ntype)
        missing = set(values) - set(widgets)
        assert not missing, (ntype, missing)
        node = {
            "id": nid, "type": ntype, "pos": list(pos), "size": [320, 60 + 26 * (len(inputs) + len(widgets))],
            "flags": {}, "order": order, "mode": 0,
            "inputs": [{"name": n, "type": t, "link": next((l[0] for l in out_links if l[3] == nid and l[4] == i), None)}
                       for i, (n, t) in enumerate(inputs)],
            "outputs": [{"name": t, "type": t, "slot_index": s,
                         "links": [l[0] for l in out_links if l[1] == nid and l[2] == s]} for s, t in enumerate(outputs)],
            "properties": {"Node name for S&R": ntype},
            "widgets_values": [values.get(w, defaults.get(w)) for w in widgets],
        }
        out_nodes.append(node)
    return {"last_node_id": max(n["id"] for n in out_nodes), "last_link_id": len(out_links), "nodes": out_nodes,
            "links": out_links, "groups": [], "config": {}, "extra": {"title": title}, "version": 0.4}


def widget_defaults(pack, node_type):
    if node_type not in pack.NODE_CLASS_MAPPINGS:
        return dict(CORE_NODES[node_type]["defaults"])
    spec = pack.NODE_CLASS_MAPPINGS[node_type].INPUT_TYPES()
    out = {"control_after_generate": "fixed"}
    for section in ("required", "optional"):
        for name, value in spec.get(section, {}).items():
            opts = value[1] if len(value) > 1 and isinstance(value[1], dict) else {}
            out[name] = opts.get("default", value[0][0] if isinstance(value[0], list) and value[0] else None)
    return out


def workflows(pack):
    t2v = build(pack, "Text to video (the original's defaults)", [
        (1, "CinematicCheckpointLoader", {"model_name": "text-to-video-ms-1.7b"}, (40, 200)),
        (2, "CinematicTextEncode", {"text": "a panda playing guitar on times square"}, (420, 80)),
        (3, "CinematicTextEncode", {"text": ""}, (420, 330)),
        (4, "CinematicEmptyVideoLatent", {}, (420, 560)),
        (5, "CinematicSampler", {}, (820, 200)),
        (6, "CinematicVAEDecode", {}, (1200, 200)),
        (7, "CinematicSaveVideo", {"filename_prefix": "Cinematic/text_to_video"}, (1540, 200)),
    ], [(1, 1, 2, "text_encoder"), (1, 1, 3, "text_encoder"), (1, 0, 5, "unet"), (2, 0, 5, "positive"),
        (3, 0, 5, "negative"), (4, 0, 5, "latent"), (1, 2, 6, "vae"), (5, 0, 6, "latent"), (6, 0, 7, "images")])

    upscale = build(pack, "zeroscope: 576x320, then XL at 1024x576", [
        (1, "CinematicCheckpointLoader", {"model_name": "zeroscope_v2_576w"}, (40, 200)),
        (2, "CinematicTextEncode", {"text": "a spaceship flying over a desert at sunset, cinematic"}, (420, 60)),
        (3, "CinematicTextEncode", {"text": "watermark, text, blurry"}, (420, 300)),
        (4, "CinematicEmptyVideoLatent", {"width": 576, "height": 320, "frames": 24}, (420, 540)),
        (5, "CinematicSampler", {"steps": 40, "cfg": 12.0, "sampler_name": "dpmpp_2m", "scheduler": "karras"},
         (820, 200)),
        (6, "CinematicVAEDecode", {}, (1200, 200)),
        (7, "ImageScale", {"upscale_method": "lanczos", "width": 1024, "height": 576, "crop": "disabled"},
         (1540, 200)),
        (8, "CinematicCheckpointLoader", {"model_name": "zeroscope_v2_XL"}, (40, 800)),
        (9, "CinematicVAEEncode", {}, (1880, 200)),
        (10, "CinematicTextEncode", {"text": "a spaceship flying over a desert at sunset, cinematic"}, (420, 800)),
        (11, "CinematicTextEncode", {"text": "watermark, text, blurry"}, (420, 1040)),
        (12, "CinematicSampler", {"steps": 40, "cfg": 12.0, "sampler_name": "dpmpp_2m", "scheduler": "karras",
                                  "denoise": 0.7}, (2220, 500)),
        (13, "CinematicVAEDecode", {"frames_per_batch": 4}, (2600, 500)),
        (14, "CinematicSaveVideo", {"fps": 12.0, "filename_prefix": "Cinematic/zeroscope_xl"}, (2940, 500)),
    ], [(1, 1, 2, "text_encoder"), (1, 1, 3, "text_encoder"), (1, 0, 5, "unet"), (2, 0, 5, "positive"),
        (3, 0, 5, "negative"), (4, 0, 5, "latent"), (1, 2, 6, "vae"), (5, 0, 6, "latent"), (6, 0, 7, "image"),
        (8, 2, 9, "vae"), (7, 0, 9, "images"), (8, 1, 10, "text_encoder"), (8, 1, 11, "text_encoder"),
        (8, 0, 12, "unet"), (10, 0, 12, "positive"), (11, 0, 12, "negative"), (9, 0, 12, "latent"),
        (8, 2, 13, "vae"), (12, 0, 13, "latent"), (13, 0, 14, "images")])

    core_mix = build(pack, "Core nodes in the mix: SD2 CLIP text encoding, core image scale", [
        (1, "CinematicUNet3DLoader", {"unet_name": "text-to-video-ms-1.7b/text2video_pytorch_model.pth"}, (40, 60)),
        (2, "CLIPLoader", {"clip_name": "open_clip_vit_h14.safetensors", "type": "stable_diffusion"}, (40, 260)),
        (3, "CLIPTextEncode", {"text": "a lighthouse in a storm, waves crashing, dramatic light"}, (420, 200)),
        (4, "CLIPTextEncode", {"text": ""}, (420, 420)),
        (5, "CinematicEmptyVideoLatent", {}, (420, 620)),
        (6, "CinematicSampler", {}, (820, 200)),
        (7, "CinematicVAELoader", {"vae_name": "text-to-video-ms-1.7b/VQGAN_autoencoder.pth"}, (820, 620)),
        (8, "CinematicVAEDecode", {}, (1200, 200)),
        (9, "ImageScale", {"upscale_method": "bicubic", "width": 512, "height": 512, "crop": "disabled"},
         (1540, 200)),
        (10, "CinematicSaveVideo", {"format": "webm", "filename_prefix": "Cinematic/core_mix"}, (1880, 200)),
    ], [(2, 0, 3, "clip"), (2, 0, 4, "clip"), (1, 0, 6, "unet"), (3, 0, 6, "positive"), (4, 0, 6, "negative"),
        (5, 0, 6, "latent"), (7, 0, 8, "vae"), (6, 0, 8, "latent"), (8, 0, 9, "image"), (9, 0, 10, "images")])

    # LoRA (Cinematic's loader) + core FreeU with ModelScope's published values + the stock KSampler on the UNet3D
    lora_freeu = build(pack, "LoRA + FreeU + core KSampler on the UNet3D", [
        (1, "CinematicCheckpointLoader", {"model_name": "text-to-video-ms-1.7b"}, (40, 200)),
        (2, "CinematicLoraLoader", {"lora_name": "text2video_lora.safetensors", "strength": 0.8}, (420, 40)),
        (3, "CinematicUNet3DToModel", {}, (800, 40)),
        (4, "FreeU", {"b1": 1.2, "b2": 1.4, "s1": 0.9, "s2": 0.2}, (1120, 40)),
        (5, "CinematicTextEncode", {"text": "a corgi running on a beach at sunset, slow motion"}, (420, 260)),
        (6, "CinematicTextEncode", {"text": "watermark, text, blurry"}, (420, 480)),
        (7, "CinematicEmptyVideoLatent", {}, (800, 600)),
        (8, "KSampler", {"seed": 42, "steps": 30, "cfg": 9.0, "sampler_name": "dpmpp_2m", "scheduler": "karras"},
         (1460, 200)),
        (9, "CinematicVAEDecode", {}, (1800, 200)),
        (10, "CinematicSaveVideo", {"filename_prefix": "Cinematic/lora_freeu"}, (2140, 200)),
    ], [(1, 0, 2, "unet"), (2, 0, 3, "unet"), (3, 0, 4, "model"), (1, 1, 5, "text_encoder"),
        (1, 1, 6, "text_encoder"), (4, 0, 8, "model"), (5, 0, 8, "positive"), (6, 0, 8, "negative"),
        (7, 0, 8, "latent_image"), (1, 2, 9, "vae"), (8, 0, 9, "latent"), (9, 0, 10, "images")])
    # a motion LoRA trained inside ComfyUI (core TrainLoraNode, 0.33's widgets) on a short clip, saved, applied
    train = build(pack, "Train a motion LoRA on a short clip (core TrainLoraNode), save it, sample with it", [
        (1, "CinematicCheckpointLoader", {"model_name": "text-to-video-ms-1.7b"}, (40, 200)),
        (2, "CinematicUNet3DToModel", {}, (420, 40)),
        (3, "LoadImage", {"image": "motion_clip.gif"}, (40, 560)),
        (4, "CinematicVAEEncode", {}, (420, 560)),
        (5, "CinematicTextEncode", {"text": "a dog running across a meadow, camera panning left"}, (420, 260)),
        (6, "TrainLoraNode", {"steps": 300, "learning_rate": 0.0005, "rank": 16, "training_dtype": "bf16",
                              "lora_dtype": "bf16", "gradient_checkpointing": True}, (820, 200)),
        (7, "SaveLoRA", {"prefix": "loras/cinematic_motion_lora"}, (1200, 560)),
        (8, "LoraModelLoader", {"strength_model": 1.0}, (1200, 40)),
        (9, "CinematicTextEncode", {"text": "a cat running across a meadow, camera panning left"}, (1200, 260)),
        (10, "CinematicTextEncode", {"text": "watermark, text, blurry"}, (1200, 420)),
        (11, "CinematicEmptyVideoLatent", {}, (1200, 760)),
        (12, "KSampler", {"seed": 7, "steps": 30, "cfg": 9.0, "sampler_name": "ddim", "scheduler": "ddim_uniform"},
         (1560, 200)),
        (13, "CinematicVAEDecode", {}, (1900, 200)),
        (14, "CinematicSaveVideo", {"filename_prefix": "Cinematic/motion_lora"}, (2240, 200)),
    ], [(1, 0, 2, "unet"), (3, 0, 4, "images"), (1, 2, 4, "vae"), (1, 1, 5, "text_encoder"),
        (2, 0, 6, "model"), (4, 0, 6, "latents"), (5, 0, 6, "positive"), (6, 0, 7, "lora"),
        (2, 0, 8, "model"), (6, 0, 8, "lora"), (1, 1, 9, "text_encoder"), (1, 1, 10, "text_encoder"),
        (8, 0, 12, "model"), (9, 0, 12, "positive"), (10, 0, 12, "negative"), (11, 0, 12, "latent_image"),
        (1, 2, 13, "vae"), (12, 0, 13, "latent"), (13, 0, 14, "images")])
    return {"text_to_video": t2v, "zeroscope_upscale": upscale, "core_nodes_mix": core_mix,
            "lora_freeu_ksampler": lora_freeu, "train_motion_lora": train}


def thumbnail(path: Path, title: str, subtitle: str):
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (512, 288), (18, 20, 28))
    draw = ImageDraw.Draw(img)
    for i in range(6):  # film-strip holes
        for y in (8, 262):
            draw.rectangle([12 + i * 84, y, 60 + i * 84, y + 18], fill=(60, 64, 80))
    draw.text((28, 110), title, fill=(240, 200, 90))
    draw.text((28, 140), subtitle, fill=(200, 205, 220))
    img.save(path, quality=90)


def long_clip_workflows(pack):
    """Long clips: context windows, FreeNoise and a prompt schedule (issue 10)."""
    long_video = build(pack, "Long clip: 64 frames in context windows, with a prompt schedule", [
        (1, "CinematicCheckpointLoader", {"model_name": "text-to-video-ms-1.7b"}, (40, 200)),
        (2, "CinematicPromptSchedule", {
            "text": "0: a sailing boat on a calm sea at sunrise\n"
                    "24: a sailing boat on a rough sea in a storm, lightning\n"
                    "48: a sailing boat on a calm sea under the stars at night",
            "frames": 64, "app_text": "cinematic, highly detailed"}, (420, 40)),
        (3, "CinematicTextEncode", {"text": "text, watermark, blurry"}, (420, 360)),
        (4, "CinematicEmptyVideoLatent", {"frames": 64}, (420, 600)),
        (5, "CinematicContextOptions", {"context_length": 16, "context_overlap": 4,
                                        "context_schedule": "standard_uniform", "fuse_method": "pyramid",
                                        "freenoise": True}, (420, 820)),
        (6, "CinematicSampler", {}, (820, 200)),
        (7, "CinematicVAEDecode", {}, (1200, 200)),
        (8, "CinematicSaveVideo", {"fps": 8.0, "filename_prefix": "Cinematic/long_video"}, (1540, 200)),
    ], [(1, 1, 2, "text_encoder"), (1, 1, 3, "text_encoder"), (1, 0, 6, "unet"), (2, 0, 6, "positive"),
        (3, 0, 6, "negative"), (4, 0, 6, "latent"), (5, 0, 6, "context_options"), (1, 2, 7, "vae"),
        (6, 0, 7, "latent"), (7, 0, 8, "images")])
    return {"long_video": long_video}


def frame_workflows(pack):
    """Frames you give it: image-to-video, continuing a clip, a loop through core KSampler (issue 18)."""
    negative = "text, watermark, blurry"
    image_to_video = build(pack, "Image to video: one image held on frame 0, 16 frames", [
        (1, "CinematicCheckpointLoader", {"model_name": "text-to-video-ms-1.7b"}, (40, 200)),
        (2, "LoadImage", {"image": "example.png"}, (40, 480)),
        (3, "ImageScale", {"upscale_method": "lanczos", "width": 256, "height": 256, "crop": "center"}, (380, 480)),
        (4, "CinematicImageToVideoLatent", {"frames": 16, "keyframes": "0", "strength": 1.0, "falloff": 1},
         (720, 480)),
        (5, "CinematicTextEncode", {"text": "the scene comes alive, gentle camera pan, wind in the trees"},
         (420, 40)),
        (6, "CinematicTextEncode", {"text": negative}, (420, 260)),
        (7, "CinematicSampler", {"resample": 1}, (1080, 200)),
        (8, "CinematicVAEDecode", {}, (1440, 200)),
        (9, "CinematicSaveVideo", {"filename_prefix": "Cinematic/image_to_video"}, (1780, 200)),
    ], [(2, 0, 3, "image"), (1, 2, 4, "vae"), (3, 0, 4, "images"), (1, 1, 5, "text_encoder"),
        (1, 1, 6, "text_encoder"), (1, 0, 7, "unet"), (5, 0, 7, "positive"), (6, 0, 7, "negative"),
        (4, 0, 7, "latent"), (1, 2, 8, "vae"), (7, 0, 8, "latent"), (8, 0, 9, "images")])

    extend_video = build(pack, "Extend a clip: 16 frames, continued from its last 4 to 28", [
        (1, "CinematicCheckpointLoader", {"model_name": "text-to-video-ms-1.7b"}, (40, 200)),
        (2, "CinematicTextEncode", {"text": "a red kite flying over green hills, blue sky"}, (420, 40)),
        (3, "CinematicTextEncode", {"text": negative}, (420, 260)),
        (4, "CinematicEmptyVideoLatent", {}, (420, 480)),
        (5, "CinematicSampler", {}, (800, 200)),
        (6, "CinematicExtendVideo", {"frames": 16, "overlap": 4}, (1160, 420)),
        (7, "CinematicSampler", {"seed": 1, "resample": 1}, (1500, 200)),
        (8, "CinematicJoinVideos", {"overlap": 4}, (1860, 200)),
        (9, "CinematicVAEDecode", {}, (2200, 200)),
        (10, "CinematicSaveVideo", {"filename_prefix": "Cinematic/extend_video"}, (2540, 200)),
    ], [(1, 1, 2, "text_encoder"), (1, 1, 3, "text_encoder"), (1, 0, 5, "unet"), (2, 0, 5, "positive"),
        (3, 0, 5, "negative"), (4, 0, 5, "latent"), (5, 0, 6, "latent"), (1, 0, 7, "unet"), (2, 0, 7, "positive"),
        (3, 0, 7, "negative"), (6, 0, 7, "latent"), (5, 0, 8, "first"), (7, 0, 8, "second"), (1, 2, 9, "vae"),
        (8, 0, 9, "latent"), (9, 0, 10, "images")])

    loop = build(pack, "Loop: the same image first and last, core KSampler + Differential Diffusion", [
        (1, "CinematicCheckpointLoader", {"model_name": "text-to-video-ms-1.7b"}, (40, 200)),
        (2, "LoadImage", {"image": "example.png"}, (40, 480)),
        (3, "ImageScale", {"upscale_method": "lanczos", "width": 256, "height": 256, "crop": "center"}, (380, 480)),
        (4, "CinematicImageToVideoLatent", {"frames": 16, "keyframes": "0,-1", "strength": 1.0, "falloff": 2},
         (720, 480)),
        (5, "CinematicUNet3DToModel", {}, (420, 40)),
        (6, "DifferentialDiffusion", {}, (760, 40)),
        (7, "CinematicTextEncode", {"text": "waves rolling onto a beach, seamless loop"}, (420, 200)),
        (8, "CinematicTextEncode", {"text": negative}, (420, 330)),
        # "simple": its last step stays above the lowest noise level, where core DifferentialDiffusion would
        # release even fully held frames (README: Frames you give it)
        (9, "KSampler", {"seed": 7, "steps": 30, "cfg": 9.0, "sampler_name": "euler", "scheduler": "simple"},
         (1100, 200)),
        (10, "CinematicVAEDecode", {}, (1460, 200)),
        (11, "CinematicSaveVideo", {"filename_prefix": "Cinematic/loop"}, (1800, 200)),
    ], [(2, 0, 3, "image"), (1, 2, 4, "vae"), (3, 0, 4, "images"), (1, 0, 5, "unet"), (5, 0, 6, "model"),
        (1, 1, 7, "text_encoder"), (1, 1, 8, "text_encoder"), (6, 0, 9, "model"), (7, 0, 9, "positive"),
        (8, 0, 9, "negative"), (4, 0, 9, "latent_image"), (1, 2, 10, "vae"), (9, 0, 10, "latent"),
        (10, 0, 11, "images")])
    return {"image_to_video": image_to_video, "extend_video": extend_video, "loop": loop}


def distilled_workflows(pack):
    """Few steps (T2V-Turbo, issue 19) and a MotionDirector motion LoRA."""
    turbo = build(pack, "T2V-Turbo: 4 steps, one UNet pass each (cfg is the guidance scale w)", [
        (1, "CinematicCheckpointLoader", {"model_name": "text-to-video-ms-1.7b"}, (40, 200)),
        (2, "CinematicLoraLoader", {"lora_name": "T2V-Turbo-MS/unet_lora.pt", "strength": 1.0,
                                    "guidance_embedding_init": "authors_init"}, (420, 40)),
        (3, "CinematicTextEncode", {"text": "a dog wearing vr goggles on a boat"}, (420, 300)),
        (4, "CinematicTextEncode", {"text": ""}, (420, 520)),
        (5, "CinematicEmptyVideoLatent", {}, (420, 740)),
        (6, "CinematicSampler", {"steps": 4, "cfg": 7.5, "sampler_name": "lcm", "scheduler": "t2v_turbo"},
         (820, 200)),
        (7, "CinematicVAEDecode", {}, (1200, 200)),
        (8, "CinematicSaveVideo", {"filename_prefix": "Cinematic/turbo_4_steps"}, (1540, 200)),
    ], [(1, 0, 2, "unet"), (1, 1, 3, "text_encoder"), (1, 1, 4, "text_encoder"), (2, 0, 6, "unet"),
        (3, 0, 6, "positive"), (4, 0, 6, "negative"), (5, 0, 6, "latent"), (1, 2, 7, "vae"), (6, 0, 7, "latent"),
        (7, 0, 8, "images")])

    motion = build(pack, "MotionDirector: a temporal (motion) LoRA on zeroscope", [
        (1, "CinematicCheckpointLoader", {"model_name": "zeroscope_v2_576w"}, (40, 200)),
        (2, "CinematicLoraLoader", {"lora_name": "MotionDirector/riding_bicycle/checkpoint-300/temporal/lora/"
                                                 "300_unet.pt", "strength": 1.0}, (420, 40)),
        (3, "CinematicTextEncode", {"text": "A panda is riding a bicycle in a garden"}, (420, 300)),
        (4, "CinematicTextEncode", {"text": ""}, (420, 520)),
        (5, "CinematicEmptyVideoLatent", {"width": 384, "height": 384, "frames": 16}, (420, 740)),
        (6, "CinematicSampler", {"steps": 30, "cfg": 12.0, "sampler_name": "dpmpp_2m", "scheduler": "karras"},
         (820, 200)),
        (7, "CinematicVAEDecode", {}, (1200, 200)),
        (8, "CinematicSaveVideo", {"filename_prefix": "Cinematic/motion_lora"}, (1540, 200)),
    ], [(1, 0, 2, "unet"), (1, 1, 3, "text_encoder"), (1, 1, 4, "text_encoder"), (2, 0, 6, "unet"),
        (3, 0, 6, "positive"), (4, 0, 6, "negative"), (5, 0, 6, "latent"), (1, 2, 7, "vae"), (6, 0, 7, "latent"),
        (7, 0, 8, "images")])
    return {"turbo_4_steps": turbo, "motion_lora": motion}


def demo_workflows(pack):
    """The built-in demo model (model_loaders/builtin_demo.py): runs anywhere, no download, at its native 64x64."""
    from importlib import import_module

    name = import_module(f"{pack.__name__}.model_loaders.builtin_demo").NAME
    demo = build(pack, "Built-in demo model: a red circle moving right (64x64, no download, any CPU)", [
        (1, "CinematicCheckpointLoader", {"model_name": name}, (40, 200)),
        (2, "CinematicTextEncode", {"text": "a red circle moving right"}, (420, 80)),
        (3, "CinematicTextEncode", {"text": ""}, (420, 330)),
        (4, "CinematicEmptyVideoLatent", {"width": 64, "height": 64, "frames": 16}, (420, 560)),
        (5, "CinematicSampler", {"steps": 25}, (820, 200)),
        (6, "CinematicVAEDecode", {}, (1200, 200)),
        (7, "ImageScale", {"upscale_method": "nearest-exact", "width": 256, "height": 256, "crop": "disabled"},
         (1540, 200)),
        (8, "CinematicSaveVideo", {"filename_prefix": "Cinematic/demo_model"}, (1880, 200)),
    ], [(1, 1, 2, "text_encoder"), (1, 1, 3, "text_encoder"), (1, 0, 5, "unet"), (2, 0, 5, "positive"),
        (3, 0, 5, "negative"), (4, 0, 5, "latent"), (1, 2, 6, "vae"), (5, 0, 6, "latent"), (6, 0, 7, "image"),
        (7, 0, 8, "images")])
    return {"demo_model": demo}


def main():
    from pack_loader import load_pack

    pack = load_pack()
    OUT.mkdir(exist_ok=True)
    builders = (workflows, long_clip_workflows, frame_workflows, distilled_workflows, demo_workflows)
    for name, wf in {k: v for builder in builders for k, v in builder(pack).items()}.items():
        (OUT / f"{name}.json").write_text(json.dumps(wf, indent=1) + "\n")
        thumbnail(OUT / f"{name}.jpg", "CINEMATIC  " + name.replace("_", " "), wf["extra"]["title"])
        print("wrote", OUT / f"{name}.json")


if __name__ == "__main__":
    main()
