"""The core ComfyUI nodes the example workflows use, with their inputs, widgets and outputs as in current ComfyUI
(checked against v0.3.6x's nodes.py). Workflows may only use these and the pack's own nodes."""

CORE_NODES = {
    "LoadImage": {
        "inputs": {},
        "widgets": ["image", "upload"],
        "defaults": {"image": "example.png", "upload": "image"},
        "outputs": ["IMAGE", "MASK"],
    },
    "DifferentialDiffusion": {  # v0.3.64 and 0.33 (V3 schema): an optional strength widget
        "inputs": {"model": "MODEL"},
        "widgets": ["strength"],
        "defaults": {"strength": 1.0},
        "outputs": ["MODEL"],
    },
    "ImageScale": {
        "inputs": {"image": "IMAGE"},
        "widgets": ["upscale_method", "width", "height", "crop"],
        "defaults": {"upscale_method": "nearest-exact", "width": 512, "height": 512, "crop": "disabled"},
        "outputs": ["IMAGE"],
    },
    "CLIPLoader": {
        "inputs": {},
        "widgets": ["clip_name", "type", "device"],
        "defaults": {"type": "stable_diffusion", "device": "default"},
        "outputs": ["CLIP"],
    },
    "FreeU": {
        "inputs": {"model": "MODEL"},
        "widgets": ["b1", "b2", "s1", "s2"],
        "defaults": {"b1": 1.1, "b2": 1.2, "s1": 0.9, "s2": 0.2},
        "outputs": ["MODEL"],
    },
    "KSampler": {
        "inputs": {"model": "MODEL", "positive": "CONDITIONING", "negative": "CONDITIONING", "latent_image": "LATENT"},
        "widgets": ["seed", "control_after_generate", "steps", "cfg", "sampler_name", "scheduler", "denoise"],
        "defaults": {"seed": 0, "control_after_generate": "fixed", "steps": 20, "cfg": 8.0, "sampler_name": "euler",
                     "scheduler": "normal", "denoise": 1.0},
        "outputs": ["LATENT"],
    },
    "CLIPTextEncode": {
        "inputs": {"clip": "CLIP"},
        "widgets": ["text"],
        "defaults": {"text": ""},
        "outputs": ["CONDITIONING"],
    },
}
