"""open_clip CLIP models with random weights (a small one and the real ViT-H/14 text tower), as reference and file.

    model = reference_clip(size="small"|"full", seed)   # open_clip CLIP incl. a tiny visual tower
    write_open_clip_bin(model, path)                     # open_clip_pytorch_model.bin style (full CLIP state dict)
    reference_penultimate(model, ids)                    # what the original computes: blocks 0..N-2, then ln_final
"""

from __future__ import annotations

from pathlib import Path

import torch

from .openclip_ref import open_clip

TEXT_CFGS = {
    # small: 4 blocks, 1024 wide (the UNet's context width), short enough for fast tests
    "small": dict(context_length=77, vocab_size=49408, width=1024, heads=16, layers=4),
    # tiny: 2 blocks with a narrow MLP, for whole-model tests (the 49,408 x 1024 embedding dominates its size)
    "tiny": dict(context_length=77, vocab_size=49408, width=1024, heads=16, layers=2, mlp_ratio=1.0),
    # the real ViT-H/14 text tower
    "full": dict(context_length=77, vocab_size=49408, width=1024, heads=16, layers=24),
}
TINY_VISION = dict(layers=1, width=64, head_width=32, patch_size=16, image_size=32)


def reference_clip(size: str = "small", seed: int = 0):
    oc = open_clip()
    torch.manual_seed(seed)
    model = oc.model.CLIP(embed_dim=1024, vision_cfg=oc.model.CLIPVisionCfg(**TINY_VISION),
                          text_cfg=oc.model.CLIPTextCfg(**TEXT_CFGS[size])).eval()
    with torch.no_grad():  # open_clip initialises positional embeddings small; make every weight matter
        model.positional_embedding.normal_(0, 0.1)
    return model


def write_open_clip_bin(model, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path


@torch.no_grad()
def reference_penultimate(model, ids: torch.Tensor) -> torch.Tensor:
    x = model.token_embedding(ids) + model.positional_embedding
    blocks = model.transformer.resblocks
    if not getattr(model.transformer, "batch_first", True):
        x = x.transpose(0, 1)
    for block in blocks[:-1]:
        x = block(x, attn_mask=model.attn_mask)
    if not getattr(model.transformer, "batch_first", True):
        x = x.transpose(0, 1)
    return model.ln_final(x)
