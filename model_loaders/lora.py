"""Reading LoRA files for the UNet3D, in every format this model family's tools write, detected by key names.

* **stable_lora** (ExponentialML/Text-To-Video-Finetuning, what sd-webui-text2video loads): original ModelScope
  module names + `.lora_A` / `.lora_B` (no `.weight`), alpha = rank (scale 1). Linear: A [r, in], B [out, r]; the
  `proj_in`/`proj_out` factors carry a trailing 1 ([r, in, 1], [out, r, 1]); Conv2d: A [r*k, in*k], B [out*k, r*k]
  viewed as the weight; Conv3d (the temporal convolutions): the same factors with k = 3, viewed as [out, in, 3, 3, 1]
  and averaged over the kernel-split axis. A few modules keep diffusers names (`conv_in`, `conv_out`,
  `time_embedding.linear_1/2`): their converter only renames whole weights.
* **diffusers / PEFT**: `unet.` + diffusers module names, `lora_A.weight`/`lora_B.weight`, `lora.down`/`lora.up`,
  or attention-processor names (`attn1.processor.to_q_lora.down.weight`); `<module>.alpha` when present.
* **kohya**: `lora_unet_<module with _ for .>.lora_down.weight` / `lora_up.weight` / `.alpha`, the module named
  either way (original or diffusers).
* **list-format `.pt`** (cloneofsimo's `[up0, down0, ...]`: MotionDirector, T2V-Turbo): lora_list.py;
* **PEFT adapter folders** (MCM: adapter_config.json + adapter_model.safetensors, alpha / r from the config):
  lora_peft.py;
* **ComfyUI's generic naming** (what `scripts/convert_lora.py` writes, what core `LoraLoaderModelOnly` reads):
  `diffusion_model.<original module>.lora_up.weight` / `lora_down.weight` / `.alpha`, or `.diff` (a full delta).

Text-encoder parts (`text_encoder.`, `lora_te_`, stable_lora's `transformer.` / `resblocks.` keys) are not applied
to the UNet; they are returned in `LoraFile.text_encoder_keys` so the node reports them. A LoRA made for another model
(SD1.5, SDXL, ...) is refused with a ModelFileError that says what it is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .lora_list import COND_PROJ_KEY, match_list, read_tensor_list
from .lora_peft import peft_scale, peft_source
from .safe_load import PICKLE_SUFFIXES, ModelFileError, load_state_dict, safetensors_metadata
from .unet3d import UNet3D
from .unet_loader import DiffusersRenamer
from .video_unet import WeightDelta

_TEXT_PREFIXES = ("text_encoder.", "lora_te_", "lora_te1_", "lora_te2_", "te.", "transformer.", "resblocks.",
                  "cond_stage_model.", "text_model.", "lora_te.")
_UNET_PREFIXES = ("base_model.model.", "model.diffusion_model.", "diffusion_model.", "unet.", "lora_unet_", "lycoris_")

# (suffix of the "up" factor, suffix of the "down" factor); order matters: longer first
_FACTOR_SUFFIXES = [
    (".lora_B.default.weight", ".lora_A.default.weight"),
    (".lora_B.weight", ".lora_A.weight"),
    (".lora_up.weight", ".lora_down.weight"),
    (".lora.up.weight", ".lora.down.weight"),
    ("_lora.up.weight", "_lora.down.weight"),
    (".lora_B", ".lora_A"),
]


@dataclass
class LoraFile:
    path: Path
    format: str
    #: original-layout weight key -> delta (strength not applied)
    patches: dict[str, WeightDelta] = field(default_factory=dict)
    #: keys of the text-encoder part (not applied to the UNet)
    text_encoder_keys: list[str] = field(default_factory=list)
    #: list-format files: which layers the list covers (all / temporal / spatial)
    rule: str | None = None
    #: the width of a guidance embedding the LoRA patches but the model lacks (T2V-Turbo): the loader creates it
    guidance_embedding_dim: int | None = None

    @property
    def rank(self) -> int | None:
        ranks = {p.down.flatten(1).shape[0] for p in self.patches.values() if p.down is not None}
        return max(ranks) if ranks else None


def _detect_format(keys, metadata: dict) -> str:
    if "stable_lora_text_to_video" in metadata:
        return "stable_lora"
    if any(k.endswith((".lora_A", ".lora_B")) for k in keys):
        return "stable_lora"
    if any(k.startswith("lora_unet_") or k.startswith("lora_te") for k in keys):
        return "kohya"
    if any(k.startswith("diffusion_model.") for k in keys):
        return "comfyui"
    return "diffusers"


class _Names:
    """Maps a module name from any format onto the original module names of one model."""

    def __init__(self, model: UNet3D):
        self.params = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        self.modules = {k[: -len(".weight")] for k in self.params if k.endswith(".weight")}
        self.diffusers = DiffusersRenamer.from_config(model.config)
        self.underscored = {m.replace(".", "_"): m for m in self.modules}
        self.modules.add(COND_PROJ_KEY[: -len(".weight")])  # a guidance embedding: the model's, or one to create

    def _from_diffusers(self, name: str) -> str | None:
        try:
            key = self.diffusers(name + ".weight")
        except (KeyError, ValueError, IndexError):
            return None
        module = key[: -len(".weight")]
        return module if module in self.modules else None

    def resolve(self, name: str) -> str | None:
        for prefix in _UNET_PREFIXES:
            if name.startswith(prefix):
                name = name[len(prefix):]
                break
        # attention-processor LoRAs: attn1.processor.to_q_lora -> attn1.to_q; to_out_lora -> to_out.0
        name = re.sub(r"\.processor\.(to_[qkv])_lora$", r".\1", name)
        name = re.sub(r"\.processor\.to_out_lora$", ".to_out.0", name)
        if name in self.modules:
            return name
        if name in self.underscored:
            return self.underscored[name]
        if "." not in name:  # kohya naming of a diffusers module: put the dots back around the known words
            name = _dotted(name)
        return self._from_diffusers(name)


# words of diffusers module names that contain "_", longest first (kohya joins every part with "_")
_DIFFUSERS_WORDS = sorted(["down_blocks", "up_blocks", "mid_block", "temp_convs", "temp_attentions",
                           "transformer_blocks", "transformer_in", "to_q", "to_k", "to_v", "to_out", "proj_in",
                           "proj_out", "time_emb_proj", "conv_shortcut", "time_embedding", "linear_1", "linear_2",
                           "conv_in", "conv_out", "conv_norm_out"], key=len, reverse=True)


def _dotted(underscored: str) -> str:
    name = underscored.replace("_", ".")
    for word in _DIFFUSERS_WORDS:
        name = name.replace(word.replace("_", "."), word)
    return name


def _is_text_key(key: str) -> bool:
    return key.startswith(_TEXT_PREFIXES)


def _foreign_description(sd: dict[str, torch.Tensor]) -> str:
    """What the file seems to be for, from its cross-attention widths and key names."""
    widths = set()
    for key, value in sd.items():
        if re.search(r"attn2[._]to_[kv]", key) and re.search(r"(lora_A|lora_down|lora\.down|_lora\.down)", key):
            widths.add(value.flatten(1).shape[1] if value.ndim >= 2 else None)
    keys = " ".join(list(sd)[:400])
    if 768 in widths:
        return "an SD1.x LoRA (its cross-attention reads 768-wide CLIP-L text)"
    if 2048 in widths or "add_embedding" in keys or "label_emb" in keys:
        return "an SDXL LoRA"
    if "double_blocks" in keys or "single_blocks" in keys or "single_transformer_blocks" in keys:
        return "a Flux/DiT LoRA"
    if "motion_modules" in keys:
        return "an AnimateDiff motion LoRA (for SD1.5 models)"
    return "a LoRA for another model"


def read_lora(path, model: UNet3D) -> LoraFile:
    """Read `path` and map it onto `model`'s weights. Raises ModelFileError naming the file and the fix when the file
    is not a LoRA for this model."""
    path, peft_config = peft_source(Path(path))
    if path.suffix.lower() in PICKLE_SUFFIXES:
        tensors = read_tensor_list(path)
        if tensors is not None:
            return _read_list(path, tensors, model)
    sd = load_state_dict(path)
    metadata = safetensors_metadata(path) if path.suffix.lower() in (".safetensors", ".sft") else {}
    fmt = _detect_format(sd.keys(), metadata) if peft_config is None else "peft"
    names = _Names(model)
    result = LoraFile(path=path, format=fmt)

    groups: dict[str, dict[str, torch.Tensor]] = {}  # module name as written -> {"up", "down", "alpha", "diff"}
    leftovers = []
    for key, value in sd.items():
        if _is_text_key(key) and not key.startswith(("transformer_in.", "transformer_blocks.")):
            result.text_encoder_keys.append(key)
            continue
        for up_suffix, down_suffix in _FACTOR_SUFFIXES:
            if key.endswith(up_suffix):
                groups.setdefault(key[: -len(up_suffix)], {})["up"] = value
                break
            if key.endswith(down_suffix):
                groups.setdefault(key[: -len(down_suffix)], {})["down"] = value
                break
        else:
            if key.endswith(".alpha"):
                groups.setdefault(key[: -len(".alpha")], {})["alpha"] = value
            elif key.endswith(".diff"):
                groups.setdefault(key[: -len(".diff")], {})["diff"] = value
            elif key.endswith(".diff_b"):
                groups.setdefault(key[: -len(".diff_b")], {})["diff_b"] = value
            else:
                leftovers.append(key)

    unmatched, mismatched = [], []
    for written, parts in groups.items():
        module = names.resolve(written)
        weight_key = f"{module}.weight" if module else None
        if weight_key == COND_PROJ_KEY and weight_key not in names.params and {"up", "down"} <= parts.keys():
            # a T2V-Turbo guidance embedding this model lacks: the loader creates it (its width from the factor)
            result.guidance_embedding_dim = parts["down"].flatten(1).shape[1]
            names.params[weight_key] = (model.config.model_channels, result.guidance_embedding_dim)
        if weight_key is None or weight_key not in names.params:
            if {"up", "down"} <= parts.keys() or "diff" in parts:
                unmatched.append(written)
            continue
        shape = torch.Size(names.params[weight_key])
        if "diff" in parts:
            if parts["diff"].numel() != shape.numel():
                mismatched.append(f"{written} {tuple(parts['diff'].shape)} vs {tuple(shape)}")
                continue
            result.patches[weight_key] = WeightDelta(diff=parts["diff"], layout="diff")
        elif {"up", "down"} <= parts.keys():
            up, down = parts["up"], parts["down"]
            rank = down.flatten(1).shape[0]
            if up.flatten(1).shape[1] != rank:
                mismatched.append(f"{written} (factors {tuple(up.shape)} and {tuple(down.shape)} do not chain)")
                continue
            numel = up.flatten(1).shape[0] * down.flatten(1).shape[1]
            layout = "reshape"
            if numel != shape.numel():
                k = shape[2] if len(shape) == 5 else 0
                if fmt == "stable_lora" and len(shape) == 5 and numel == shape.numel() * k:
                    layout = "conv3d_mean"
                else:
                    mismatched.append(f"{written} ({tuple(up.shape)} x {tuple(down.shape)} vs weight {tuple(shape)})")
                    continue
            scale = 1.0
            if "alpha" in parts and fmt != "stable_lora":
                scale = float(parts["alpha"].float().reshape(-1)[0]) / rank
            elif peft_config is not None:
                scale = peft_scale(peft_config, written, rank)
            result.patches[weight_key] = WeightDelta(up=up, down=down, scale=scale, layout=layout)
        if "diff_b" in parts:
            bias_key = f"{module}.bias"
            if bias_key in names.params and parts["diff_b"].numel() == torch.Size(names.params[bias_key]).numel():
                result.patches[bias_key] = WeightDelta(diff=parts["diff_b"], layout="diff")

    if mismatched or (unmatched and not result.patches):
        what = _foreign_description(sd)
        detail = "; ".join((mismatched + unmatched)[:3])
        raise ModelFileError(
            f"{path.name} is not a LoRA for this text-to-video UNet3D: it looks like {what} "
            f"({len(mismatched) + len(unmatched)} of its layers do not fit, e.g. {detail}). Use a LoRA trained on "
            "text-to-video-ms-1.7b / zeroscope (Text-To-Video-Finetuning, MotionDirector, diffusers/PEFT)."
        )
    if not result.patches and not result.text_encoder_keys:
        raise ModelFileError(
            f"{path.name} holds no LoRA weights this loader knows (keys such as {list(sd)[:3]}). Expected "
            "stable_lora (.lora_A/.lora_B), diffusers/PEFT (lora_A.weight/lora_B.weight), kohya (lora_unet_*) or "
            "ComfyUI (diffusion_model.*) keys."
        )
    if unmatched:
        # some layers name modules this model does not have, the rest fit: report, do not drop silently
        result.text_encoder_keys.extend(f"(unmatched) {name}" for name in unmatched)
    return result


def _read_list(path: Path, tensors: list[torch.Tensor], model: UNet3D) -> LoraFile:
    """A cloneofsimo list LoRA (lora_list.py): its layer order matched against this model's."""
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    rule, layers = match_list(tensors, model.config, shapes, path.name)
    result = LoraFile(path=path, format="cloneofsimo list", rule=rule)
    for i, layer in enumerate(layers):
        result.patches[layer.key] = WeightDelta(up=tensors[2 * i], down=tensors[2 * i + 1], scale=1.0,
                                                layout="reshape")
        if layer.key == COND_PROJ_KEY and COND_PROJ_KEY not in shapes:
            result.guidance_embedding_dim = tensors[2 * i + 1].flatten(1).shape[1]
    return result
