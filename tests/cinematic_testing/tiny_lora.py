"""Small random LoRA files in each real format, for the tiny UNet3D, with the deltas they mean computed here
independently of the pack (each format's own formula, written from the format's definition).

    file_sd, metadata, deltas = stable_lora(model_sd, seed)   # deltas: {original weight key: delta tensor}
    write(path, file_sd, metadata)

Formats: stable_lora (Text-To-Video-Finetuning), peft (diffusers/PEFT `unet.` + diffusers names), kohya
(`lora_unet_` + diffusers names with `_`), an SD1.5 kohya LoRA (for refusal tests), and cloneofsimo's list `.pt`
(MotionDirector, T2V-Turbo: `write_list(saver_walk(diffusers_unet, rule), path, seed)`).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import save_file

from . import tiny_unet

RANK = 4


def layers(sd) -> list[str]:
    """Original-layout weight keys of every kind of layer a LoRA can touch in the tiny model."""
    keys = list(sd)

    def first(pred):
        return next(k for k in keys if pred(k))

    picked = [
        "input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight",       # spatial attention (Linear)
        "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight",       # cross-attention k (Linear, 1024 in)
        "input_blocks.1.1.transformer_blocks.0.attn2.to_out.0.weight",   # to_out.0
        "input_blocks.1.1.transformer_blocks.0.ff.net.0.proj.weight",    # GEGLU
        "input_blocks.1.1.proj_in.weight",                               # spatial proj (Linear)
        "input_blocks.1.2.proj_in.weight",                               # temporal proj (Conv1d k=1)
        "input_blocks.0.1.transformer_blocks.0.attn2.to_v.weight",       # input temporal transformer
        "input_blocks.1.0.in_layers.2.weight",                           # ResBlock conv 3x3
        first(lambda k: k.endswith("skip_connection.weight")),           # 1x1 conv
        "input_blocks.1.0.temopral_conv.conv1.2.weight",                 # temporal Conv3d (3,1,1)
        "middle_block.3.temopral_conv.conv4.3.weight",                   # temporal Conv3d in the middle
        "input_blocks.0.0.weight",                                       # conv_in
        "time_embed.0.weight",                                           # time embedding (Linear)
        "out.2.weight",                                                  # conv_out
        first(lambda k: k.startswith("output_blocks") and k.endswith(".conv.weight")),  # upsampler
        "middle_block.0.emb_layers.1.weight",                            # ResBlock time projection
    ]
    assert all(k in sd for k in picked), [k for k in picked if k not in sd]
    return picked


def original_to_diffusers(sd) -> dict[str, str]:
    """Original weight key -> diffusers weight key, through the test helpers' independent pairing."""
    from diffusers import UNet3DConditionModel

    model = UNet3DConditionModel(**tiny_unet.TINY_DIFFUSERS_CONFIG)
    return {o: d for d, o in tiny_unet._pairs(model.state_dict().keys(), sd.keys())}


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _rand(gen, *shape):
    return 0.05 * torch.randn(*shape, generator=gen)


# stable_lora keeps these under their diffusers names (its converter only renames whole weights)
_STABLE_DIFFUSERS_NAMES = {"input_blocks.0.0": "conv_in", "time_embed.0": "time_embedding.linear_1",
                           "time_embed.2": "time_embedding.linear_2", "out.2": "conv_out"}


def stable_lora(sd, seed=0, with_text=True):
    gen = _gen(seed)
    out, deltas = {}, {}
    for key in layers(sd):
        w = sd[key]
        module = key[: -len(".weight")]
        name = _STABLE_DIFFUSERS_NAMES.get(module, module)
        o, i = w.shape[0], w.shape[1]
        if w.ndim == 2 or (w.ndim == 3 and w.shape[2] == 1):  # Linear / Conv1d(k=1): A [r, in], B [out, r]
            a, b = _rand(gen, RANK, i), _rand(gen, o, RANK)
            if ".proj_" in name:  # its converter unsqueezes every proj_ tensor
                a, b = a.unsqueeze(-1), b.unsqueeze(-1)
        else:  # Conv2d k x k and Conv3d (3,1,1): A [r*k, in*k], B [out*k, r*k]
            k = w.shape[2]
            a, b = _rand(gen, RANK * k, i * k), _rand(gen, o * k, RANK * k)
        # stored in fp16 as the trainer does; the delta is that of the stored factors
        out[f"{name}.lora_A"], out[f"{name}.lora_B"] = a.half().float(), b.half().float()
        deltas[key] = _stable_lora_delta(out[f"{name}.lora_A"], out[f"{name}.lora_B"], w)
    if with_text:
        out["transformer.resblocks.0.attn.q_proj.lora_A"] = _rand(gen, RANK, 1024)
        out["transformer.resblocks.0.attn.q_proj.lora_B"] = _rand(gen, 1024, RANK)
    return out, {"stable_lora_text_to_video": "v1", "lora_name": "tiny"}, deltas


def _stable_lora_delta(a, b, w):
    """stable_lora's rules: Linear B @ A (proj factors squeezed); Conv2d (B @ A) viewed as the weight; Conv3d (B @ A)
    viewed [out, in, k, k, 1] and averaged over the 4th axis."""
    o, i = w.shape[0], w.shape[1]
    a2, b2 = (a.squeeze(-1), b.squeeze(-1)) if a.ndim == 3 else (a, b)
    if w.ndim == 5:
        k = w.shape[2]
        return torch.mean((b2 @ a2).view(o, i, k, k, 1), dim=-2, keepdim=True)
    return (b2 @ a2).reshape(w.shape)


def peft(sd, seed=0, alpha_every=2, dot_down_up_every=3):
    """diffusers/PEFT: `unet.<diffusers module>.lora_A.weight` / `lora_B.weight` (or `.lora.down/up.weight`);
    conv factors as PEFT makes them (A: the layer's kernel, B: 1x1); `<module>.alpha` on some layers."""
    gen = _gen(seed)
    names = original_to_diffusers(sd)
    out, deltas = {}, {}
    for n, key in enumerate(layers(sd)):
        w = sd[key]
        module = names[key][: -len(".weight")]
        o, i = w.shape[0], w.shape[1]
        if w.ndim == 3:  # temporal proj: a Linear in diffusers
            a, b = _rand(gen, RANK, i), _rand(gen, o, RANK)
        elif w.ndim >= 4:
            a = _rand(gen, RANK, i, *w.shape[2:])
            b = _rand(gen, o, RANK, *([1] * (w.ndim - 2)))
        else:
            a, b = _rand(gen, RANK, i), _rand(gen, o, RANK)
        scale = 1.0
        if n % alpha_every == 0:
            out[f"unet.{module}.alpha"] = torch.tensor(2.0 * RANK)
            scale = 2.0
        if n % dot_down_up_every == 1:
            out[f"unet.{module}.lora.down.weight"], out[f"unet.{module}.lora.up.weight"] = a, b
        else:
            out[f"unet.{module}.lora_A.weight"], out[f"unet.{module}.lora_B.weight"] = a, b
        deltas[key] = scale * (b.flatten(1) @ a.flatten(1)).reshape(w.shape)
    out["text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight"] = _rand(gen, RANK, 1024)
    out["text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_B.weight"] = _rand(gen, 1024, RANK)
    return out, {}, deltas


def kohya(sd, seed=0):
    """kohya: `lora_unet_<diffusers module, . -> _>.lora_down.weight` / `lora_up.weight` / `.alpha`."""
    gen = _gen(seed)
    names = original_to_diffusers(sd)
    out, deltas = {}, {}
    for key in layers(sd):
        w = sd[key]
        module = names[key][: -len(".weight")].replace(".", "_")
        o, i = w.shape[0], w.shape[1]
        if w.ndim >= 4:
            a = _rand(gen, RANK, i, *w.shape[2:])
            b = _rand(gen, o, RANK, *([1] * (w.ndim - 2)))
        else:
            a, b = _rand(gen, RANK, i), _rand(gen, o, RANK)
        out[f"lora_unet_{module}.lora_down.weight"], out[f"lora_unet_{module}.lora_up.weight"] = a, b
        out[f"lora_unet_{module}.alpha"] = torch.tensor(RANK / 2)
        deltas[key] = 0.5 * (b.flatten(1) @ a.flatten(1)).reshape(w.shape)
    out["lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight"] = _rand(gen, RANK, 1024)
    out["lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight"] = _rand(gen, 1024, RANK)
    return out, {}, deltas


def sd15_kohya(seed=0):
    """An SD1.5 LoRA (cross-attention reads 768-wide text), as kohya's sd-scripts write it."""
    gen = _gen(seed)
    out = {}
    for blk in ("down_blocks_0_attentions_0", "up_blocks_3_attentions_2"):
        base = f"lora_unet_{blk}_transformer_blocks_0"
        out[f"{base}_attn1_to_q.lora_down.weight"] = _rand(gen, RANK, 320)
        out[f"{base}_attn1_to_q.lora_up.weight"] = _rand(gen, 320, RANK)
        out[f"{base}_attn2_to_k.lora_down.weight"] = _rand(gen, RANK, 768)
        out[f"{base}_attn2_to_k.lora_up.weight"] = _rand(gen, 320, RANK)
        out[f"{base}_attn2_to_k.alpha"] = torch.tensor(float(RANK))
    return out


def write(path, tensors, metadata=None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata or None)
    return path


def merged(model, deltas: dict, strength: float = 1.0):
    """A deep copy of `model` with `strength * delta` added to each weight by hand."""
    import copy

    merged_model = copy.deepcopy(model)
    params = dict(merged_model.named_parameters())
    with torch.no_grad():
        for key, delta in deltas.items():
            params[key] += strength * delta.to(params[key].dtype)
    return merged_model


# ---------------------------------------------------------------------------------------------- list-format .pt


def saver_walk(unet, rule):
    """(name, module) as cloneofsimo's saver meets them: `all` every Linear/Conv2d/Conv3d of the UNet; `temporal` /
    `spatial` the Linears under each TransformerTemporalModel / Transformer2DModel whose path holds attn1, attn2
    (temporal only) or ff (MotionDirector's filter)."""
    kinds = (nn.Linear, nn.Conv2d, nn.Conv3d)
    if rule == "all":
        return [(n, m) for n, m in unet.named_modules() if isinstance(m, kinds)]
    ancestor = {"temporal": "TransformerTemporalModel", "spatial": "Transformer2DModel"}[rule]
    words = ("attn1", "attn2", "ff") if rule == "temporal" else ("attn1", "ff")
    out = []
    for prefix, parent in unet.named_modules():
        if type(parent).__name__ != ancestor:
            continue
        for name, m in parent.named_modules():
            if isinstance(m, kinds) and any(w in name for w in words):
                out.append((f"{prefix}.{name}", m))
    return out


def write_list(walk, path, seed):
    """[up0, down0, ...] as nn.Parameters (what the saver's `.to("cpu").to(float32)` of CPU fp32 weights keeps) for
    the (name, module) pairs of `walk`, each module's delta up.flatten(1) @ down.flatten(1); returns {name: delta}."""
    gen = torch.Generator().manual_seed(seed)
    tensors, deltas = [], {}
    for name, m in walk:
        w = m.weight
        r = min(RANK, w.shape[0], w.shape[1])
        if isinstance(m, nn.Linear):
            down, up = torch.randn(r, w.shape[1], generator=gen), torch.randn(w.shape[0], r, generator=gen)
        else:  # conv: down carries the kernel, up is 1x1(x1)
            down = torch.randn(r, *w.shape[1:], generator=gen)
            up = torch.randn(w.shape[0], r, *([1] * (w.ndim - 2)), generator=gen)
        down, up = 0.05 * down, 0.05 * up
        tensors += [nn.Parameter(up), nn.Parameter(down)]
        deltas[name] = (up.flatten(1) @ down.flatten(1)).reshape(w.shape)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save(tensors, path)
    return deltas
