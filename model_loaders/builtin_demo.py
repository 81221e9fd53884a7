"""The built-in demo model: a tiny text-to-video model of the pack's own architectures (UNet3D, AutoencoderKL,
an OpenCLIP-structured text tower) trained from scratch on synthetic clips by scripts/train_demo_model.py, shipped
as one single-file safetensors (data/cinematic-demo.safetensors, its card data/cinematic-demo.md).

It knows one small world: a red, green, blue or yellow circle or square moving left, right, up or down on a dark
grey background, 64x64, 16 frames ("a red circle moving right"). It is what the headless main job runs when no real
weights are installed, and the checkpoint loader lists it as a built-in entry, so the pack makes a recognisable
video on any CPU without the 5 GB download. It is no substitute for text-to-video-ms-1.7b: any other prompt gives
a blob of some colour.
"""

from __future__ import annotations

import json
from pathlib import Path

PATH = Path(__file__).resolve().parent / "data" / "cinematic-demo.safetensors"
#: the checkpoint loader's dropdown entry (never a file name: model files end in .safetensors/.pth/...)
NAME = "cinematic-demo (built-in, 64x64)"
#: the safetensors metadata key that holds the training card (config, seconds, scores)
CARD_KEY = "cinematic_demo_model"
#: what it was trained on: its native size and clip length, and prompts it knows
WIDTH = HEIGHT = 64
FRAMES = 16
EXAMPLE_PROMPTS = ("a red circle moving right", "a blue square moving up", "a yellow circle moving down",
                   "a green square moving left")


def available() -> bool:
    """Whether the file is there (a trimmed install may drop it; nothing else needs it)."""
    return PATH.is_file()


def card() -> dict:
    """The training card the file carries (empty when the file has none)."""
    from .safe_load import safetensors_metadata

    return json.loads(safetensors_metadata(PATH).get(CARD_KEY, "{}"))


def native_size() -> tuple[int, int, int]:
    """(width, height, frames) it was trained at."""
    config = card().get("config", {})
    size = int(config.get("size", WIDTH))
    return size, size, int(config.get("frames", FRAMES))


def require_path() -> Path:
    """PATH, or a clear error when the file is missing."""
    from .safe_load import ModelFileError

    if not available():
        raise ModelFileError(f"The built-in demo model {PATH} is missing: reinstall the pack (git checkout "
                             "model_loaders/data/cinematic-demo.safetensors) or pick a real model.")
    return PATH


def load(weight_dtype: str = "default", device=None, operations=None):
    """(unet, text_encoder, vae) through the pack's own single-file loader, as for any checkpoint."""
    from .checkpoint import load_checkpoint

    return load_checkpoint(require_path(), weight_dtype, device=device, operations=operations)
