"""Loading the UNet3D from every real layout.

Accepted:
* the original layout: `text2video_pytorch_model.pth` keys (plain state dict, no prefix), as .pth or .safetensors;
* the diffusers layout: `unet/diffusion_pytorch_model[.fp16].safetensors` (+ config.json), the folder or the bare file;
* either of them under a common prefix (`unet.`, `model.diffusion_model.`, ...), e.g. inside a single-file checkpoint.

The file is recognised by its key names; the architecture comes from tensor shapes (UNet3DConfig.from_state_dict).
Memory: the model is built on the meta device without initialisation and the loaded tensors are adopted in place
(`assign=True`), each cast to the target dtype as it is read, so loading needs about one copy of the weights.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Mapping

import torch

from . import fp8_storage
from .ops import skip_init_ops
from .safe_load import (ModelFileError, check_tensors, load_state_dict, naming, read_json, read_keys,
                        safetensors_metadata)
from .unet3d import HEAD_DIM, UNet3D, UNet3DConfig

WEIGHT_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
DIFFUSERS_FILES = (
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.fp16.safetensors",
    "diffusion_pytorch_model.bin",
    "diffusion_pytorch_model.fp16.bin",
)
_PREFIXES = ("", "unet.", "model.diffusion_model.", "diffusion_model.", "model.", "module.")
#: safetensors metadata naming the attention head size of a UNet3D whose heads are not the family's 64 (a small
#: model such as the demo model); the shapes cannot tell it
HEAD_DIM_METADATA = "cinematic_unet_head_dim"


def resolve_dtype(weight_dtype: str, device: torch.device | str | None) -> torch.dtype:
    """`default`: fp16 on CUDA and MPS (half the VRAM, the precision the published fp16 variants use; the UNet has
    no fp16 overflow problem, unlike the VAE), fp32 on the CPU (bf16 is only faster on CPUs with AVX-512 BF16 and
    much slower elsewhere, and fp32 reproduces the original numbers exactly)."""
    if weight_dtype in WEIGHT_DTYPES:
        return WEIGHT_DTYPES[weight_dtype]
    if fp8_storage.is_fp8(weight_dtype):
        return fp8_storage.FP8_DTYPES[weight_dtype]
    if weight_dtype not in ("default", None, ""):
        names = ", ".join(["default", *WEIGHT_DTYPES, *fp8_storage.FP8_DTYPES])
        raise ValueError(f"weight_dtype must be one of {names}; got {weight_dtype!r}")
    kind = torch.device(device).type if device is not None else "cpu"
    return torch.float16 if kind in ("cuda", "mps", "xpu") else torch.float32


# ------------------------------------------------------------------------------------------- recognising


def _find_prefix(keys, marker: str) -> str | None:
    for prefix in _PREFIXES:
        if prefix + marker in keys:
            return prefix
    return None


def describe_foreign(keys) -> str | None:
    """If the keys are some other model's, say which and which loader to use; None if it may be ours."""
    keys = set(keys)
    has = lambda pattern: any(re.search(pattern, k) for k in keys)  # noqa: E731
    if has(r"temopral_conv|temp_convs\."):
        return None
    if has(r"(^|\.)(encoder|decoder)\.conv_in\.weight$") or has(r"^first_stage_model\."):
        if not has(r"input_blocks\.|down_blocks\.\d+\.resnets\.\d+\.time_emb_proj"):
            return "a VAE (autoencoder) file: load it with 'Load Text-to-Video VAE' (CinematicVAELoader)"
    if has(r"token_embedding\.weight$|text_model\.embeddings\.|^embeddings\.token_embedding|transformer\.resblocks\.\d+"):
        if not has(r"input_blocks\.|down_blocks\."):
            return "a text encoder (CLIP) file: load it with 'Load Text-to-Video Text Encoder' (CinematicTextEncoderLoader)"
    if has(r"input_blocks\.\d+\.\d+\.in_layers|down_blocks\.\d+\.resnets\.\d+\.conv1"):
        kind = "an SDXL image UNet" if has(r"label_emb\.|add_embedding\.") else "a Stable Diffusion image UNet (2-D, no temporal layers)"
        return (f"{kind}, not the ModelScope text-to-video UNet3D: load it with core ComfyUI's "
                "'Load Checkpoint' / 'Load Diffusion Model' instead")
    return None


def detect_layout(keys) -> tuple[str, str]:
    """(`original` | `diffusers`, prefix) for a UNet3D state dict; ModelFileError for anything else."""
    keys = set(keys)
    foreign = describe_foreign(keys)
    if foreign:
        raise ModelFileError(f"This file is {foreign}.")
    prefix = _find_prefix(keys, "input_blocks.0.0.weight")
    if prefix is not None and any(k.startswith(prefix) and "temopral_conv" in k for k in keys):
        return "original", prefix
    prefix = _find_prefix(keys, "conv_in.weight")
    if prefix is not None and any(k.startswith(prefix) and ".temp_convs." in k for k in keys):
        return "diffusers", prefix
    sample = ", ".join(sorted(keys)[:4])
    raise ModelFileError(
        "This file is not a ModelScope text-to-video UNet3D (no temporal layers found; first keys: "
        f"{sample or 'none'}). Use text2video_pytorch_model.pth or a diffusers unet/ folder of "
        "text-to-video-ms-1.7b or a fine-tune (zeroscope_v2, animov, potat1)."
    )


# ------------------------------------------------------------------------------------------- diffusers -> original

_RESNET = [("norm1.", "in_layers.0."), ("conv1.", "in_layers.2."), ("time_emb_proj.", "emb_layers.1."),
           ("norm2.", "out_layers.0."), ("conv2.", "out_layers.3."), ("conv_shortcut.", "skip_connection.")]


def _resnet_rest(rest: str) -> str:
    for old, new in _RESNET:
        if rest.startswith(old):
            return new + rest[len(old):]
    raise KeyError(rest)


class DiffusersRenamer:
    """Maps diffusers UNet3DConditionModel keys to the original ones.

    Needs layers_per_block (R) and, per level, whether it has attention (which decides where an up block's upsampler
    sits in the original's block list). Both come from the key names.
    """

    def __init__(self, keys):
        keys = set(keys)
        self.levels = 1 + max(int(k.split(".")[1]) for k in keys if k.startswith("down_blocks."))
        self.res = 1 + max(int(k.split(".")[3]) for k in keys if re.match(r"down_blocks\.0\.resnets\.\d+\.", k))
        self.down_attn = {l for l in range(self.levels) if f"down_blocks.{l}.attentions.0.proj_in.weight" in keys}
        self.up_attn = {u for u in range(self.levels) if f"up_blocks.{u}.attentions.0.proj_in.weight" in keys}
        self.temporal = "transformer_in.proj_in.weight" in keys

    @classmethod
    def from_config(cls, config) -> "DiffusersRenamer":
        """The renamer for a model of this config, without a diffusers state dict (e.g. for LoRA module names)."""
        renamer = cls.__new__(cls)
        renamer.levels = len(config.channel_mult)
        renamer.res = config.num_res_blocks
        renamer.down_attn = set(config.attention_levels)
        renamer.up_attn = {renamer.levels - 1 - level for level in config.attention_levels}
        renamer.temporal = config.temporal_attention
        return renamer

    def __call__(self, key: str) -> str:
        R, L = self.res, self.levels
        simple = {"conv_in.": "input_blocks.0.0.", "transformer_in.": "input_blocks.0.1.",
                  "time_embedding.linear_1.": "time_embed.0.", "time_embedding.linear_2.": "time_embed.2.",
                  "time_embedding.cond_proj.": "time_cond_proj.",  # guidance embedding (T2V-Turbo, time_cond_proj_dim)
                  "conv_norm_out.": "out.0.", "conv_out.": "out.2."}
        for old, new in simple.items():
            if key.startswith(old):
                return new + key[len(old):]
        m = re.match(r"down_blocks\.(\d+)\.(resnets|temp_convs|attentions|temp_attentions|downsamplers)\.(\d+)\.(.*)", key)
        if m:
            level, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
            if kind == "downsamplers":
                return f"input_blocks.{1 + level * (R + 1) + R}.op.{rest.removeprefix('conv.')}"
            block = f"input_blocks.{1 + level * (R + 1) + j}"
            return self._inner(block, kind, rest)
        m = re.match(r"up_blocks\.(\d+)\.(resnets|temp_convs|attentions|temp_attentions|upsamplers)\.(\d+)\.(.*)", key)
        if m:
            u, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
            if kind == "upsamplers":
                # [res, upsample] without attention; [res, spatial, (temporal,) upsample] with it
                index = (3 if self.temporal else 2) if u in self.up_attn else 1
                return f"output_blocks.{u * (R + 1) + R}.{index}.{rest}"
            return self._inner(f"output_blocks.{u * (R + 1) + j}", kind, rest)
        m = re.match(r"mid_block\.(resnets|temp_convs|attentions|temp_attentions)\.(\d+)\.(.*)", key)
        if m:
            kind, j, rest = m[1], int(m[2]), m[3]
            if kind in ("resnets", "temp_convs"):
                index = 0 if j == 0 else (3 if self.temporal else 2)
                return self._inner(f"middle_block.{index}", kind, rest, slot=False)
            return f"middle_block.{1 if kind == 'attentions' else 2}.{rest}"
        raise KeyError(key)

    def _inner(self, block: str, kind: str, rest: str, slot: bool = True) -> str:
        prefix = f"{block}.0." if slot else f"{block}."
        if kind == "resnets":
            return prefix + _resnet_rest(rest)
        if kind == "temp_convs":
            return prefix + "temopral_conv." + rest
        if kind == "attentions":
            return f"{block}.1.{rest}"
        return f"{block}.2.{rest}"  # temp_attentions


def _fix_temporal_projections(sd: dict[str, torch.Tensor]) -> None:
    """diffusers stores the temporal proj_in/out as Linear [out, in]; the original as Conv1d [out, in, 1]."""
    for key, value in list(sd.items()):
        if value.ndim == 2 and re.search(r"(input_blocks\.0\.1|\.2|middle_block\.2)\.proj_(in|out)\.weight$", key):
            sd[key] = value.unsqueeze(-1)


# ------------------------------------------------------------------------------------------- building


def _renamer(keys, layout: str, prefix: str) -> Callable[[str], str | None]:
    try:
        convert = None
        if layout == "diffusers":
            convert = DiffusersRenamer(k[len(prefix):] for k in keys if k.startswith(prefix))
    except (ValueError, IndexError) as exc:
        raise ModelFileError(f"The diffusers UNet3D keys are malformed ({exc}); the file is damaged.") from None

    def rename(key: str) -> str | None:
        if not key.startswith(prefix):
            return None
        key = key[len(prefix):]
        if convert is None:
            return key
        try:
            return convert(key)
        except KeyError:
            return None

    return rename


def unet_from_state_dict(
    sd: Mapping[str, torch.Tensor],
    weight_dtype: str | torch.dtype = "default",
    config_json: Mapping | None = None,
    device: torch.device | str | None = None,
    operations=None,
    head_dim: int = HEAD_DIM,
) -> UNet3D:
    """Build a UNet3D from an in-memory state dict in any accepted layout (used by the checkpoint loader)."""
    dtype = weight_dtype if isinstance(weight_dtype, torch.dtype) else resolve_dtype(weight_dtype, device)
    storage, compute, operations = _storage(dtype, device, operations)
    layout, prefix = detect_layout(sd.keys())
    rename = _renamer(sd.keys(), layout, prefix)
    converted = {}
    for key, value in sd.items():
        new_key = rename(key)
        if new_key is not None:
            converted[new_key] = value.to(storage(value)) if value.is_floating_point() else value
    return _build(converted, config_json, operations, compute, head_dim)


def _storage(dtype: torch.dtype, device, operations):
    """(tensor -> stored dtype, compute dtype or None, operations) for a target dtype: fp8 stores weight matrices in
    fp8 and the rest in the compute dtype (the default dtype of `device`), and builds with cast-per-layer layers
    (the pack's own unless the caller gives ComfyUI's)."""
    if not fp8_storage.is_fp8_dtype(dtype):
        return (lambda tensor: dtype), None, operations
    compute = resolve_dtype("default", device)
    return fp8_storage.tensor_dtype(dtype, compute), compute, operations or fp8_storage.cast_ops


def _build(sd: dict[str, torch.Tensor], config_json: Mapping | None = None, operations=None,
           compute_dtype: torch.dtype | None = None, head_dim: int = HEAD_DIM) -> UNet3D:
    """`operations`: the layer family to build with (default: torch's layers without initialisation; inside ComfyUI
    its cast-weight family). Either way the model is made on the meta device and adopts the loaded tensors.
    `compute_dtype`: the activations' dtype when the weights are stored in fp8."""
    _fix_temporal_projections(sd)
    what = "The UNet3D weights"
    try:
        config = UNet3DConfig.from_state_dict(sd, head_dim)
    except (KeyError, ValueError, IndexError, TypeError) as exc:
        raise ModelFileError(f"{what} are incomplete (missing {exc}); the file may be damaged.") from None
    if config_json and "model_cfg" in config_json:
        expected = _modelscope_config(config_json)
        if expected != config:
            raise ModelFileError(
                f"configuration.json describes a different UNet3D than the weights ({expected} vs {config}): "
                "the folder mixes files of two models."
            )
    try:
        with torch.device("meta"):
            model = UNet3D(config, operations=operations or skip_init_ops)
    except (ValueError, RuntimeError, ZeroDivisionError) as exc:
        raise ModelFileError(f"{what} describe an impossible UNet3D ({config}: {exc}); the file is damaged.") from None
    check_tensors(model, sd, what)
    result = model.load_state_dict(sd, strict=False, assign=True)
    if result.missing_keys or result.unexpected_keys:
        raise ModelFileError(
            f"{what} do not match the architecture their shapes describe "
            f"(missing: {result.missing_keys[:5]}, unexpected: {result.unexpected_keys[:5]}). "
            "The file is damaged or a different model."
        )
    model.compute_dtype = compute_dtype
    return model.eval().requires_grad_(False).match_weight_layout()


def _modelscope_config(config_json: Mapping) -> UNet3DConfig:
    try:
        return UNet3DConfig.from_modelscope_json(config_json["model_cfg"])
    except (AttributeError, KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
        raise ModelFileError(f"configuration.json has an unreadable model_cfg ({type(exc).__name__}: {exc}): "
                             "restore it from the model's download.") from None


def _diffusers_weights_file(folder: Path) -> Path | None:
    for sub in (folder / "unet", folder):
        for name in DIFFUSERS_FILES:
            if (sub / name).is_file():
                return sub / name
    return None


def load_unet(path, weight_dtype: str = "default", device: torch.device | str | None = None,
              operations=None) -> UNet3D:
    """Load from a weights file or a diffusers folder (the model root or its unet/). The model stays on the CPU;
    `device` only picks the default dtype (see resolve_dtype). Every problem with the files is a ModelFileError
    naming the file."""
    path = Path(path)
    storage, compute, operations = _storage(resolve_dtype(weight_dtype, device), device, operations)
    config_json = None
    if path.is_dir():
        weights = _diffusers_weights_file(path)
        if weights is None:
            if (path / "text2video_pytorch_model.pth").is_file():
                weights = path / "text2video_pytorch_model.pth"
                if (path / "configuration.json").is_file():
                    config_file = path / "configuration.json"
                    with naming(config_file):
                        config_json = read_json(config_file).get("model")
                        if config_json is not None and not isinstance(config_json, dict):
                            raise ModelFileError("its \"model\" entry is not an object: restore the file from the "
                                                 "model's download.")
                        if config_json and "model_cfg" in config_json:
                            _modelscope_config(config_json)  # readable (compared with the weights' shapes later)
            else:
                raise ModelFileError(
                    f"{path} holds no UNet3D weights: expected unet/diffusion_pytorch_model[.fp16].safetensors "
                    "(diffusers layout) or text2video_pytorch_model.pth (original layout)."
                )
        path = weights
    with naming(path):
        keys = read_keys(path)
        layout, prefix = detect_layout(keys)
        head_dim = file_head_dim(path)
        sd = load_state_dict(path, dtype=storage, rename=_renamer(keys, layout, prefix))
        return _build(sd, config_json, operations, compute, head_dim)


def file_head_dim(path: Path) -> int:
    """The head size a safetensors file's metadata names (HEAD_DIM_METADATA), else the family's 64."""
    if path.suffix.lower() not in (".safetensors", ".sft"):
        return HEAD_DIM
    value = safetensors_metadata(path).get(HEAD_DIM_METADATA)
    if value is None:
        return HEAD_DIM
    if not str(value).isdigit() or int(value) < 1:
        raise ModelFileError(f"its metadata {HEAD_DIM_METADATA}={value!r} is not a positive whole number: the file is "
                             "damaged; download it again.")
    return int(value)
