"""Cinematic: ModelScope text-to-video (UNet3D + OpenCLIP ViT-H/14 + SD VAE) as ComfyUI nodes.

ComfyUI imports this folder as a module named after its path; everything below uses
relative imports only, so the pack never shadows ComfyUI's own `nodes`, `utils` or `samplers`.
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WEB_DIRECTORY = "./web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
