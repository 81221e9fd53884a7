"""Graph nodes. This package is the only place that knows ComfyUI exists (see `comfy_env`).

Each module below exports its own NODE_CLASS_MAPPINGS / NODE_DISPLAY_NAME_MAPPINGS; they are merged here.
Each node module is owned by one part of the pack; see docs/DESIGN.md.
"""

from . import bridge, checkpoint, frames, loaders, long_clips, model_patches, sampling, text, vae, video, video_sag

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}

for _module in (loaders, checkpoint, model_patches, text, sampling, long_clips, frames, vae, video, bridge, video_sag):
    for _node_id in _module.NODE_CLASS_MAPPINGS:
        if _node_id in NODE_CLASS_MAPPINGS:
            raise RuntimeError(f"node id {_node_id} is defined twice")
    NODE_CLASS_MAPPINGS.update(_module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_module.NODE_DISPLAY_NAME_MAPPINGS)
