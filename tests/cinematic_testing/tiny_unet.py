"""A tiny random-weight UNet3D, written in each real file layout.

The tiny model keeps every module type of the real one: conv_in + input temporal transformer, levels with and without
attention, skip convs, down/upsamplers, spatial + temporal transformers, temporal conv blocks, the middle block.

    ref = reference_unet(seed)            # the original modelscope UNetSD, tiny, random (nothing zero-initialised)
    sd = ref.state_dict()                 # original-layout keys
    write_original_pth(sd, path)          # text2video_pytorch_model.pth style
    write_original_safetensors(sd, path)
    diffusers_model(sd)                   # diffusers UNet3DConditionModel holding the same weights
    write_diffusers_folder(sd, folder)    # folder/unet/{config.json, diffusion_pytorch_model[.fp16].safetensors}

The diffusers copy is made by matching the two models' parameters *by value position* through diffusers' own
module order, not through our converter, so loading it through unet_loader checks our key mapping independently.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from . import refs

# Channels 64 -> 128 -> 128: two levels with attention (1, 1/2), one without (1/4).
TINY_REFERENCE_KWARGS = dict(
    in_dim=4, dim=64, y_dim=768, context_dim=1024, out_dim=4, dim_mult=[1, 2, 2], num_heads=8, head_dim=64,
    num_res_blocks=1, attn_scales=[1, 0.5], dropout=0.1, temporal_attention=True,
)
TINY_DIFFUSERS_CONFIG = dict(
    sample_size=8, in_channels=4, out_channels=4,
    down_block_types=("CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"),
    up_block_types=("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"),
    block_out_channels=(64, 128, 128), layers_per_block=1, cross_attention_dim=1024, attention_head_dim=64,
    norm_num_groups=32,
)
#: configuration.json `model.model_cfg` of the tiny model (original layout folder)
TINY_MODELSCOPE_CFG = dict(
    unet_in_dim=4, unet_dim=64, unet_y_dim=768, unet_context_dim=1024, unet_out_dim=4, unet_dim_mult=[1, 2, 2],
    unet_num_heads=8, unet_head_dim=64, unet_res_blocks=1, unet_attn_scales=[1, 0.5], unet_dropout=0.1,
    temporal_attention="True", num_timesteps=1000, mean_type="eps", var_type="fixed_small",
)
#: the real text-to-video-ms-1.7b values (configuration.json)
FULL_REFERENCE_KWARGS = dict(
    in_dim=4, dim=320, y_dim=768, context_dim=1024, out_dim=4, dim_mult=[1, 2, 4, 4], num_heads=8, head_dim=64,
    num_res_blocks=2, attn_scales=[1, 0.5, 0.25], dropout=0.1, temporal_attention=True,
)


def reference_unet(seed: int = 0, **overrides):
    """The original UNetSD, tiny, with every weight random (the original zero-initialises several output layers,
    which would hide mistakes in those paths)."""
    UNetSD = refs.modelscope_module("unet_sd").UNetSD
    torch.manual_seed(seed)
    model = UNetSD(**{**TINY_REFERENCE_KWARGS, **overrides}).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("weight") and p.ndim == 1:  # norms: around 1
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))
    return model


def tiny_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in reference_unet(seed).state_dict().items()}


def write_original_pth(sd, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(sd, path)
    return path


def write_original_safetensors(sd, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return path


def diffusers_model(sd):
    """A diffusers UNet3DConditionModel with the weights of an original-layout tiny state dict.

    Both models register their parameters in the same computational order except for known group swaps, so the
    mapping is built by pairing each diffusers parameter with the original one of the same role, found by walking
    both module trees block by block (see _pairs)."""
    from diffusers import UNet3DConditionModel

    model = UNet3DConditionModel(**TINY_DIFFUSERS_CONFIG).eval()
    target = model.state_dict()
    new = {}
    for d_key, o_key in _pairs(target.keys(), sd.keys()):
        value = sd[o_key]
        if value.shape != target[d_key].shape:
            value = value.reshape(target[d_key].shape)  # Conv1d [o, i, 1] -> Linear [o, i]
        new[d_key] = value
    missing = set(target) - set(new)
    assert not missing, f"unpaired diffusers keys: {sorted(missing)[:5]}"
    model.load_state_dict(new)
    return model


def _pairs(d_keys, o_keys):
    """Pair diffusers and original keys of the tiny model by role (written independently of unet_loader)."""
    o_keys = set(o_keys)
    res = TINY_REFERENCE_KWARGS["num_res_blocks"]
    resnet = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1", "norm2": "out_layers.0",
              "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
    for d in d_keys:
        parts = d.split(".")
        o = None
        if parts[0] == "conv_in":
            o = "input_blocks.0.0." + parts[1]
        elif parts[0] == "transformer_in":
            o = "input_blocks.0.1." + ".".join(parts[1:])
        elif parts[0] == "time_embedding":
            o = {"linear_1": "time_embed.0.", "linear_2": "time_embed.2."}[parts[1]] + parts[2]
        elif parts[0] == "conv_norm_out":
            o = "out.0." + parts[1]
        elif parts[0] == "conv_out":
            o = "out.2." + parts[1]
        elif parts[0] in ("down_blocks", "up_blocks"):
            level, kind, j, rest = int(parts[1]), parts[2], int(parts[3]), parts[4:]
            if parts[0] == "down_blocks":
                base = 1 + level * (res + 1)
                name = "input_blocks"
            else:
                base = level * (res + 1)
                name = "output_blocks"
            if kind in ("downsamplers", "upsamplers"):
                block = base + res
                if kind == "downsamplers":
                    o = f"{name}.{block}.op.{rest[-1]}"
                else:
                    has_attn = f"{name}.{block}.1.proj_in.weight" in o_keys
                    o = f"{name}.{block}.{3 if has_attn else 1}.conv.{rest[-1]}"
            else:
                block = base + j
                o = _inner(name, block, kind, rest, resnet)
        elif parts[0] == "mid_block":
            kind, j, rest = parts[1], int(parts[2]), parts[3:]
            if kind in ("resnets", "temp_convs"):
                idx = 0 if j == 0 else 3
                o = f"middle_block.{idx}." + ("temopral_conv." + ".".join(rest) if kind == "temp_convs"
                                              else resnet[rest[0]] + "." + ".".join(rest[1:]))
            else:
                o = f"middle_block.{1 if kind == 'attentions' else 2}." + ".".join(rest)
        assert o in o_keys, (d, o)
        yield d, o


def _inner(name, block, kind, rest, resnet):
    if kind == "resnets":
        return f"{name}.{block}.0.{resnet[rest[0]]}." + ".".join(rest[1:])
    if kind == "temp_convs":
        return f"{name}.{block}.0.temopral_conv." + ".".join(rest)
    if kind == "attentions":
        return f"{name}.{block}.1." + ".".join(rest)
    return f"{name}.{block}.2." + ".".join(rest)


def write_diffusers_folder(sd, folder, fp16_variant: bool = False) -> Path:
    """folder/unet/config.json + diffusion_pytorch_model[.fp16].safetensors, as diffusers' save_pretrained writes."""
    model = diffusers_model(sd)
    unet_dir = Path(folder) / "unet"
    unet_dir.mkdir(parents=True, exist_ok=True)
    weights = {k: v.contiguous() for k, v in model.state_dict().items()}
    name = "diffusion_pytorch_model.safetensors"
    if fp16_variant:
        weights = {k: v.half() for k, v in weights.items()}
        name = "diffusion_pytorch_model.fp16.safetensors"
    save_file(weights, str(unet_dir / name), metadata={"format": "pt"})
    (unet_dir / "config.json").write_text(json.dumps({"_class_name": "UNet3DConditionModel", **model.config}, default=list))
    return unet_dir


def write_modelscope_configuration(folder) -> Path:
    path = Path(folder) / "configuration.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"framework": "pytorch", "task": "text-to-video-synthesis",
                                "model": {"type": "latent-text-to-video-synthesis", "model_args": {},
                                          "model_cfg": TINY_MODELSCOPE_CFG}}))
    return path
