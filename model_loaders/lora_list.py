"""List-format LoRAs (cloneofsimo's `.pt`): MotionDirector's temporal/spatial LoRAs and T2V-Turbo's `unet_lora.pt`.

The file is `torch.save` of a plain list `[up0, down0, up1, down1, ...]` (tensors, or `nn.Parameter`s as the saver
writes them from a model on the CPU), fp32, without any names: pair i belongs to the i-th layer that the saver's walk
met. The walk is over diffusers' UNet3DConditionModel in `named_modules()` order (conv_in, time_embedding (linear_1,
cond_proj, linear_2), transformer_in, down_blocks, up_blocks, mid_block, conv_out: up_blocks are registered before
mid_block), keeping, per rule:

* `all` (T2V-Turbo, Text-To-Video-Finetuning's cloneofsimo files): every Linear / Conv2d / Conv3d (`cond_proj`
  included when the UNet the LoRA was trained on had one: T2V-Turbo's guidance embedding);
* `temporal` (MotionDirector): the Linears under each TransformerTemporalModel whose path holds attn1, attn2 or ff
  (to_q, to_k, to_v, to_out.0, ff.net.0.proj, ff.net.2; transformer_in included, proj_in/proj_out not);
* `spatial` (MotionDirector): the Linears under each Transformer2DModel whose path holds attn1 or ff.

The walk is rebuilt here from the UNet3D's config (the pack's own knowledge of the diffusers tree, the same that
maps diffusers names in unet_loader.DiffusersRenamer). Inside a transformer block diffusers registered
attn1, attn2, ff in its newer versions and attn1, ff, attn2 in older ones (MotionDirector's era): both orders are
tried. The rule is the one whose layer count is the list's length and whose every layer fits its pair's shapes; a
list that fits none is refused naming its length and what each rule expects for this UNet. Delta: `up.flatten(1) @
down.flatten(1)` reshaped to the weight (a Conv3d's down factor carries the (3, 1, 1) kernel), scale 1, no alpha.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .safe_load import ModelFileError, read_pickle_object
from .unet_loader import DiffusersRenamer

BLOCK_ORDERS = (("attn1", "attn2", "ff"), ("attn1", "ff", "attn2"))
_SUBLAYERS = {"attn1": ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0"),
              "attn2": ("attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0"),
              "ff": ("ff.net.0.proj", "ff.net.2")}
_RESNET = ("conv1", "time_emb_proj", "conv2", "conv_shortcut")
_TEMP_CONV = ("conv1.2", "conv2.3", "conv3.3", "conv4.3")
COND_PROJ_KEY = "time_cond_proj.weight"


@dataclass(frozen=True)
class Layer:
    diffusers: str  # diffusers module name
    key: str  # original-layout weight key
    spatial: bool = False  # a Linear in a Transformer2DModel's attn1/attn2/ff
    temporal: bool = False  # a Linear in a TransformerTemporalModel's attn1/attn2/ff
    attention: str | None = None  # "attn1" / "attn2" / "ff" for those


def _transformer(prefix: str, depth: int, order, temporal: bool) -> list[tuple[str, str | None]]:
    names = [(f"{prefix}.proj_in", None)]
    for i in range(depth):
        for part in order:
            names += [(f"{prefix}.transformer_blocks.{i}.{sub}", part) for sub in _SUBLAYERS[part]]
    names.append((f"{prefix}.proj_out", None))
    return [(n, p, temporal) for n, p in names]


def diffusers_walk(config, order=BLOCK_ORDERS[0], cond_proj: bool = False) -> list[tuple[str, str | None, bool | None]]:
    """(diffusers module name, attn1/attn2/ff or None, in a temporal transformer?) of every Linear / Conv2d / Conv3d of
    diffusers' UNet3DConditionModel for this config, in `named_modules()` order. Resnet shortcuts are listed always;
    the caller drops the ones this model does not have."""
    levels, res, depth = len(config.channel_mult), config.num_res_blocks, config.transformer_depth
    temporal = config.temporal_attention
    walk: list = [("conv_in", None, None), ("time_embedding.linear_1", None, None)]
    if cond_proj:
        walk.append(("time_embedding.cond_proj", None, None))
    walk.append(("time_embedding.linear_2", None, None))
    if temporal:
        walk += _transformer("transformer_in", depth, order, True)

    def block(prefix: str, resnets: int, attention: bool, sampler: str | None):
        out = [(f"{prefix}.resnets.{j}.{name}", None, None) for j in range(resnets) for name in _RESNET]
        out += [(f"{prefix}.temp_convs.{j}.{name}", None, None) for j in range(resnets) for name in _TEMP_CONV]
        if attention:
            for j in range(resnets):
                out += _transformer(f"{prefix}.attentions.{j}", depth, order, False)
            if temporal:
                for j in range(resnets):
                    out += _transformer(f"{prefix}.temp_attentions.{j}", depth, order, True)
        if sampler:
            out.append((f"{prefix}.{sampler}.0.conv", None, None))
        return out

    for level in range(levels):
        walk += block(f"down_blocks.{level}", res, level in config.attention_levels,
                      "downsamplers" if level < levels - 1 else None)
    for u in range(levels):
        level = levels - 1 - u
        walk += block(f"up_blocks.{u}", res + 1, level in config.attention_levels,
                      "upsamplers" if u < levels - 1 else None)
    # the mid block: two resnets, two temporal convs, one spatial and one temporal transformer
    walk += [(f"mid_block.resnets.{j}.{name}", None, None) for j in range(2) for name in _RESNET]
    walk += [(f"mid_block.temp_convs.{j}.{name}", None, None) for j in range(2) for name in _TEMP_CONV]
    walk += _transformer("mid_block.attentions.0", depth, order, False)
    if temporal:
        walk += _transformer("mid_block.temp_attentions.0", depth, order, True)
    walk.append(("conv_out", None, None))
    return walk


def layer_orders(config, shapes: dict, cond_proj_dim: int | None) -> dict[tuple[str, tuple, bool], list[Layer]]:
    """The candidate layer lists: (rule, block order, with cond_proj) -> layers, for a model with these weight shapes.
    `cond_proj_dim`: the model's own guidance embedding width, or None (then `all` is also offered with a cond_proj
    the LoRA loader would create)."""
    renamer = DiffusersRenamer.from_config(config)
    out = {}
    for order in BLOCK_ORDERS:
        for with_cond in (False, True):
            layers = []
            for name, part, temporal in diffusers_walk(config, order, with_cond):
                key = COND_PROJ_KEY if name == "time_embedding.cond_proj" else renamer(name + ".weight")
                if key != COND_PROJ_KEY and key not in shapes:
                    continue  # a resnet without a shortcut conv
                layers.append(Layer(name, key, spatial=temporal is False and part is not None,
                                    temporal=bool(temporal) and part is not None, attention=part))
            out[("all", order, with_cond)] = layers
            if not with_cond:
                out[("temporal", order, False)] = [l for l in layers if l.temporal]
                out[("spatial", order, False)] = [l for l in layers if l.spatial and l.attention in ("attn1", "ff")]
    if cond_proj_dim is not None:  # a model with its own embedding: an `all` list without it does not fit
        out = {k: v for k, v in out.items() if not (k[0] == "all" and not k[2])}
    return out


def read_tensor_list(path: Path) -> list[torch.Tensor] | None:
    """The list a cloneofsimo `.pt` holds (tensors owned by this process), None when the file holds something else
    (a state dict: another format). Anything in the list that is not a tensor is refused."""
    obj, _ = read_pickle_object(path)
    if not isinstance(obj, (list, tuple)):
        return None
    for i, item in enumerate(obj):
        if not isinstance(item, torch.Tensor) or not item.is_floating_point() or item.ndim < 2:
            what = type(item).__name__ if not isinstance(item, torch.Tensor) else f"a {item.ndim}-D {item.dtype} tensor"
            raise ModelFileError(
                f"{path.name} is a list, but entry {i} is {what}: a list-format LoRA (cloneofsimo, MotionDirector, "
                "T2V-Turbo) holds only weight matrices [up0, down0, up1, down1, ...]. The file is damaged or not a "
                "LoRA.")
    return [t.detach().clone() for t in obj]  # owned: nothing stays mapped from the file


def _fits(up: torch.Tensor, down: torch.Tensor, shape: tuple) -> bool:
    if up.shape[0] != shape[0] or up.flatten(1).shape[1] != down.shape[0]:
        return False
    if any(s != 1 for s in up.shape[2:]):
        return False
    kernel = tuple(shape[2:])
    if down.ndim == 2:  # a Linear (diffusers' temporal proj_in/out are Conv1d(k=1) here)
        return down.shape[1] == shape[1] and all(k == 1 for k in kernel) and up.ndim == 2
    return tuple(down.shape[1:]) == (shape[1], *kernel) and up.ndim == down.ndim


def match_list(tensors: list[torch.Tensor], config, shapes: dict, name: str = "the list"):
    """(rule, layers) for the list, or ModelFileError naming its length and what each rule expects."""
    cond_shape = shapes.get(COND_PROJ_KEY)
    candidates = layer_orders(config, shapes, cond_shape[1] if cond_shape else None)
    pairs = len(tensors) // 2
    first_misfit = None
    if len(tensors) % 2 == 0:
        for (rule, order, with_cond), layers in candidates.items():
            if len(layers) != pairs:
                continue
            for i, layer in enumerate(layers):
                up, down = tensors[2 * i], tensors[2 * i + 1]
                shape = shapes.get(layer.key)
                if layer.key == COND_PROJ_KEY and shape is None:
                    shape = (config.model_channels, down.flatten(1).shape[1])
                if not _fits(up, down, tuple(shape)):
                    first_misfit = first_misfit or (f"pair {i} (up {tuple(up.shape)}, down {tuple(down.shape)}) does "
                                                    f"not fit {layer.diffusers} (weight {tuple(shape)})")
                    break
            else:
                return rule, layers
    expected = {}
    for (rule, _, with_cond), layers in candidates.items():
        label = "all layers" + (" + guidance embedding (T2V-Turbo)" if with_cond else "") if rule == "all" else rule
        expected[label] = 2 * len(layers)
    listing = ", ".join(f"{label}: {n}" for label, n in expected.items())
    why = f"; {first_misfit}" if first_misfit else ""
    raise ModelFileError(
        f"{name} is a list-format LoRA of {len(tensors)} tensors that fits no layer order of this UNet3D "
        f"({config.model_channels} channels){why}. Expected lengths for this UNet: {listing}. The LoRA is for another "
        "model (e.g. an SD image model) or another size of UNet3D (zeroscope and text-to-video-ms-1.7b share one)."
    )
