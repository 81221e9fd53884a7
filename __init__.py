"""Cinematic: ModelScope text-to-video (UNet3D + OpenCLIP ViT-H/14 + SD VAE) as ComfyUI nodes.

ComfyUI imports this folder as a module named after its path; everything below uses
relative imports only, so the pack never shadows ComfyUI's own `nodes`, `utils` or `samplers`.
"""

if __package__:  # imported as a package: by ComfyUI (under the folder's name), or scripts/pack_loader.py
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
else:  # pytest collecting a checkout whose folder name is no Python identifier (ComfyUI-Cinematic): nothing to load
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}

WEB_DIRECTORY = "./web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
