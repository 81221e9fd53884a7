"""The core ComfyUI nodes the example workflows use, with their inputs, widgets and outputs as in current ComfyUI
(checked against v0.3.6x's nodes.py). Workflows may only use these and the pack's own nodes."""

CORE_NODES = {
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
    "CLIPTextEncode": {
        "inputs": {"clip": "CLIP"},
        "widgets": ["text"],
        "defaults": {"text": ""},
        "outputs": ["CONDITIONING"],
    },
}
