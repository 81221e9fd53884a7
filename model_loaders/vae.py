"""The SD AutoencoderKL (the ModelScope VAE), pure torch, with LDM key names.

Loads: the original Lightning checkpoint `VQGAN_autoencoder.pth` (keys under `state_dict`, prefix
`first_stage_model.`; read by safe_load without Lightning and without running its pickle), plain LDM keys
(`encoder.` / `decoder.` / `quant_conv` / `post_quant_conv`, e.g. vae-ft-mse-840000), any of those under a prefix
(`vae.` in our single-file checkpoint, `first_stage_model.` in SD checkpoints), and diffusers `vae/` keys.
The architecture (channels, multipliers, blocks, latent channels) is inferred from the shapes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from .ops import ops as default_ops, skip_init_ops
from .safe_load import ModelFileError, check_tensors, load_state_dict, naming, read_keys

SCALE_FACTOR = 0.18215


@dataclass
class VAEConfig:
    in_channels: int = 3
    out_channels: int = 3
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    z_channels: int = 4
    embed_dim: int = 4
    attn_levels: tuple[int, ...] = ()  # levels with attention besides the middle (none in the SD VAE)

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, torch.Tensor]) -> "VAEConfig":
        shape = lambda k: tuple(sd[k].shape)  # noqa: E731
        ch, in_channels = shape("encoder.conv_in.weight")[:2]
        levels = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("encoder.down."))
        ch_mult = tuple(shape(f"encoder.down.{i}.block.0.conv1.weight")[0] // ch for i in range(levels))
        blocks = 1 + max(int(k.split(".")[4]) for k in sd if k.startswith("encoder.down.0.block."))
        attn = tuple(i for i in range(levels) if f"encoder.down.{i}.attn.0.q.weight" in sd)
        return cls(
            in_channels=in_channels, out_channels=shape("decoder.conv_out.weight")[0], ch=ch, ch_mult=ch_mult,
            num_res_blocks=blocks, z_channels=shape("decoder.conv_in.weight")[1],
            embed_dim=shape("post_quant_conv.weight")[1], attn_levels=attn,
        )


class ResnetBlock(nn.Module):
    def __init__(self, cin: int, cout: int, ops, dtype, device):
        super().__init__()
        dd = dict(dtype=dtype, device=device)
        self.norm1 = ops.GroupNorm(32, cin, eps=1e-6, **dd)
        self.conv1 = ops.Conv2d(cin, cout, 3, padding=1, **dd)
        self.norm2 = ops.GroupNorm(32, cout, eps=1e-6, **dd)
        self.conv2 = ops.Conv2d(cout, cout, 3, padding=1, **dd)
        self.nin_shortcut = ops.Conv2d(cin, cout, 1, **dd) if cin != cout else None

    def forward(self, x):
        # SiLU and the residual add run in place on tensors this block just made: at 256x256 a decoder activation is
        # 32 MB a frame, and on the CPU every fresh allocation that large costs page faults on each call
        h = self.conv1(F.silu(self.norm1(x), inplace=True))
        h = self.conv2(F.silu(self.norm2(h), inplace=True))
        return h.add_(x if self.nin_shortcut is None else self.nin_shortcut(x))


class AttnBlock(nn.Module):
    """Single-head self-attention over all pixels (1x1 conv projections)."""

    def __init__(self, c: int, ops, dtype, device):
        super().__init__()
        dd = dict(dtype=dtype, device=device)
        self.norm = ops.GroupNorm(32, c, eps=1e-6, **dd)
        self.q = ops.Conv2d(c, c, 1, **dd)
        self.k = ops.Conv2d(c, c, 1, **dd)
        self.v = ops.Conv2d(c, c, 1, **dd)
        self.proj_out = ops.Conv2d(c, c, 1, **dd)

    def forward(self, x):
        b, c, h, w = x.shape
        y = self.norm(x)
        q, k, v = (m(y).reshape(b, 1, c, h * w).transpose(-1, -2) for m in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj_out(out.transpose(-1, -2).reshape(b, c, h, w)).add_(x)


class Downsample(nn.Module):
    def __init__(self, c, ops, dtype, device):
        super().__init__()
        self.conv = ops.Conv2d(c, c, 3, stride=2, padding=0, dtype=dtype, device=device)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, c, ops, dtype, device):
        super().__init__()
        self.conv = ops.Conv2d(c, c, 3, padding=1, dtype=dtype, device=device)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Mid(nn.Module):
    def __init__(self, c, ops, dtype, device):
        super().__init__()
        self.block_1 = ResnetBlock(c, c, ops, dtype, device)
        self.attn_1 = AttnBlock(c, ops, dtype, device)
        self.block_2 = ResnetBlock(c, c, ops, dtype, device)

    def forward(self, x):
        return self.block_2(self.attn_1(self.block_1(x)))


class _Level(nn.Module):
    def __init__(self, blocks, attns, resample):
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.attn = nn.ModuleList(attns)
        if resample is not None:
            self.resample_name = "downsample" if isinstance(resample, Downsample) else "upsample"
            setattr(self, self.resample_name, resample)
        else:
            self.resample_name = None

    def forward(self, x):
        for i, block in enumerate(self.block):
            x = block(x)
            if len(self.attn):
                x = self.attn[i](x)
        return x if self.resample_name is None else getattr(self, self.resample_name)(x)


class Encoder(nn.Module):
    def __init__(self, c: VAEConfig, ops, dtype, device):
        super().__init__()
        dd = dict(ops=ops, dtype=dtype, device=device)
        self.conv_in = ops.Conv2d(c.in_channels, c.ch, 3, padding=1, dtype=dtype, device=device)
        self.down = nn.ModuleList()
        cin = c.ch
        for i, mult in enumerate(c.ch_mult):
            cout = c.ch * mult
            blocks = [ResnetBlock(cin if j == 0 else cout, cout, **dd) for j in range(c.num_res_blocks)]
            attns = [AttnBlock(cout, **dd) for _ in range(c.num_res_blocks)] if i in c.attn_levels else []
            last = i == len(c.ch_mult) - 1
            self.down.append(_Level(blocks, attns, None if last else Downsample(cout, **dd)))
            cin = cout
        self.mid = _Mid(cin, **dd)
        self.norm_out = ops.GroupNorm(32, cin, eps=1e-6, dtype=dtype, device=device)
        self.conv_out = ops.Conv2d(cin, 2 * c.z_channels, 3, padding=1, dtype=dtype, device=device)

    def forward(self, x):
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h), inplace=True))


class Decoder(nn.Module):
    def __init__(self, c: VAEConfig, ops, dtype, device):
        super().__init__()
        dd = dict(ops=ops, dtype=dtype, device=device)
        cin = c.ch * c.ch_mult[-1]
        self.conv_in = ops.Conv2d(c.z_channels, cin, 3, padding=1, dtype=dtype, device=device)
        self.mid = _Mid(cin, **dd)
        levels = [None] * len(c.ch_mult)
        for i in reversed(range(len(c.ch_mult))):
            cout = c.ch * c.ch_mult[i]
            blocks = [ResnetBlock(cin if j == 0 else cout, cout, **dd) for j in range(c.num_res_blocks + 1)]
            attns = [AttnBlock(cout, **dd) for _ in range(c.num_res_blocks + 1)] if i in c.attn_levels else []
            levels[i] = _Level(blocks, attns, Upsample(cout, **dd) if i != 0 else None)
            cin = cout
        self.up = nn.ModuleList(levels)
        self.norm_out = ops.GroupNorm(32, cin, eps=1e-6, dtype=dtype, device=device)
        self.conv_out = ops.Conv2d(cin, c.out_channels, 3, padding=1, dtype=dtype, device=device)

    def forward(self, z):
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h), inplace=True))


class AutoencoderKL(nn.Module):
    def __init__(self, config: VAEConfig, operations=default_ops, dtype=None, device=None):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config, operations, dtype, device)
        self.decoder = Decoder(config, operations, dtype, device)
        self.quant_conv = operations.Conv2d(2 * config.z_channels, 2 * config.embed_dim, 1, dtype=dtype, device=device)
        self.post_quant_conv = operations.Conv2d(config.embed_dim, config.z_channels, 1, dtype=dtype, device=device)


class VAE:
    """T2V_VAE: raw (unscaled) latents in and out; images in -1..1, [N, 3, H, W]."""

    scale_factor = SCALE_FACTOR
    downscale = 8

    #: convolutions in N H W C order: None = automatic (on the CPU, where oneDNN's float32 3x3 convolutions at the
    #: VAE's 128/256 channels run about 2x faster channels-last; elsewhere the plain layout), or True/False.
    #: Changes memory layout only: values equal up to float rounding
    channels_last: bool | None = None

    def __init__(self, model: AutoencoderKL):
        self.model = model

    @property
    def dtype(self) -> torch.dtype:
        return self.model.quant_conv.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.model.quant_conv.weight.device

    def to(self, device=None, dtype=None) -> "VAE":
        self.model.to(device=device, dtype=dtype)
        return self

    def _use_channels_last(self) -> bool:
        return self.device.type == "cpu" if self.channels_last is None else self.channels_last

    def _prepare(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        x = x.to(self.device, dtype)
        return x.contiguous(memory_format=torch.channels_last) if self._use_channels_last() else x

    def _safe_run(self, fn, x: torch.Tensor) -> torch.Tensor:
        """fp16 can overflow inside the SD VAE (black or NaN frames): redo such a chunk in fp32."""
        with torch.inference_mode():
            out = fn(self._prepare(x, self.dtype))
            if self.dtype == torch.float16 and not torch.isfinite(out).all():
                out = self._in_fp32(fn, x)
        return out.float()

    def _in_fp32(self, fn, x):
        original = self.dtype
        self.model.to(torch.float32)
        try:
            return fn(self._prepare(x, torch.float32))
        finally:
            self.model.to(original)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self._safe_run(lambda t: self.model.decoder(self.model.post_quant_conv(t)), z)

    def decode_tiled(self, z: torch.Tensor, tile: int, overlap: int) -> torch.Tensor:
        """Decode in overlapping spatial tiles of `tile` latent pixels, blended linearly across `overlap`, so large
        frames fit in memory. Each tile sees only itself (the VAE's mid-block attention is global), so the result
        differs slightly from an untiled decode; a tile that covers the whole latent gives exactly the untiled one."""
        n, _, h, w = z.shape
        if tile >= h and tile >= w:
            return self.decode(z)
        overlap = max(0, min(overlap, tile // 2))
        stride = tile - overlap
        out = weight = None
        for top in range(0, max(h - overlap, 1), stride):
            for left in range(0, max(w - overlap, 1), stride):
                t0, l0 = min(top, max(h - tile, 0)), min(left, max(w - tile, 0))
                part = self.decode(z[:, :, t0:t0 + tile, l0:l0 + tile])
                scale = part.shape[-1] // min(tile, w - l0)
                if out is None:
                    out = torch.zeros(n, part.shape[1], h * scale, w * scale)
                    weight = torch.zeros(1, 1, h * scale, w * scale)
                ph, pw = part.shape[-2:]
                mask = torch.ones(1, 1, ph, pw)
                ramp = overlap * scale
                if ramp:
                    r = torch.linspace(0, 1, ramp + 2)[1:-1]
                    if t0 > 0:
                        mask[:, :, :ramp] *= r.view(1, 1, -1, 1)
                    if t0 + tile < h:
                        mask[:, :, -ramp:] *= r.flip(0).view(1, 1, -1, 1)
                    if l0 > 0:
                        mask[:, :, :, :ramp] *= r.view(1, 1, 1, -1)
                    if l0 + tile < w:
                        mask[:, :, :, -ramp:] *= r.flip(0).view(1, 1, 1, -1)
                y, x = t0 * scale, l0 * scale
                out[:, :, y:y + ph, x:x + pw] += part.cpu() * mask
                weight[:, :, y:y + ph, x:x + pw] += mask
        return out / weight

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The posterior mean (deterministic)."""

        def run(t):
            moments = self.model.quant_conv(self.model.encoder(t))
            return moments[:, : self.model.config.embed_dim]

        return self._safe_run(run, x)


# -------------------------------------------------------------------------------------------------- loading

_PREFIXES = ("", "first_stage_model.", "vae.", "model.")


def _diffusers_to_ldm(key: str, levels: int) -> str | None:
    """diffusers AutoencoderKL key -> LDM key."""
    rules = [
        (r"^(encoder|decoder)\.conv_norm_out\.", r"\1.norm_out."),
        (r"^(encoder|decoder)\.mid_block\.resnets\.0\.", r"\1.mid.block_1."),
        (r"^(encoder|decoder)\.mid_block\.resnets\.1\.", r"\1.mid.block_2."),
        (r"^(encoder|decoder)\.mid_block\.attentions\.0\.(group_norm)\.", r"\1.mid.attn_1.norm."),
        (r"^(encoder|decoder)\.mid_block\.attentions\.0\.(to_q|query)\.", r"\1.mid.attn_1.q."),
        (r"^(encoder|decoder)\.mid_block\.attentions\.0\.(to_k|key)\.", r"\1.mid.attn_1.k."),
        (r"^(encoder|decoder)\.mid_block\.attentions\.0\.(to_v|value)\.", r"\1.mid.attn_1.v."),
        (r"^(encoder|decoder)\.mid_block\.attentions\.0\.(to_out\.0|proj_attn)\.", r"\1.mid.attn_1.proj_out."),
        (r"^encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.", r"encoder.down.\1.block.\2."),
        (r"^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.", r"encoder.down.\1.downsample.conv."),
    ]
    for pattern, repl in rules:
        if re.match(pattern, key):
            key = re.sub(pattern, repl, key)
            break
    else:
        m = re.match(r"^decoder\.up_blocks\.(\d+)\.(resnets\.(\d+)|upsamplers\.0)\.(.*)$", key)
        if m:
            level = levels - 1 - int(m[1])
            key = (f"decoder.up.{level}.block.{m[3]}.{m[4]}" if m[3] is not None
                   else f"decoder.up.{level}.upsample.{m[4]}")
    return key.replace(".conv_shortcut.", ".nin_shortcut.")


def _detect(keys) -> tuple[str, str]:
    keys = set(keys)
    for prefix in _PREFIXES:
        if prefix + "decoder.conv_in.weight" in keys and prefix + "post_quant_conv.weight" in keys:
            if prefix + "decoder.mid.block_1.conv1.weight" in keys:
                return "ldm", prefix
            if prefix + "decoder.mid_block.resnets.0.conv1.weight" in keys:
                return "diffusers", prefix
    if any("temopral_conv" in k or "temp_convs" in k for k in keys):
        raise ModelFileError("This file is the text-to-video UNet3D, not a VAE: load it with 'Load Text-to-Video UNet3D'.")
    if any(re.search(r"token_embedding|text_model\.|transformer\.resblocks", k) for k in keys):
        raise ModelFileError("This file is a text encoder, not a VAE: load it with 'Load Text-to-Video Text Encoder'.")
    if any(re.search(r"input_blocks\.|down_blocks\.\d+\.resnets\.\d+\.time_emb_proj", k) for k in keys):
        raise ModelFileError("This file is an image UNet, not a VAE. Use VQGAN_autoencoder.pth, a diffusers vae/ "
                             "folder or an SD VAE file (e.g. vae-ft-mse-840000).")
    raise ModelFileError("This file is not an SD AutoencoderKL (VAE): no decoder.conv_in / post_quant_conv keys. "
                         "Use VQGAN_autoencoder.pth, a diffusers vae/ folder or an SD VAE file.")


def vae_from_state_dict(sd: Mapping[str, torch.Tensor], dtype: torch.dtype = torch.float32) -> VAE:
    layout, prefix = _detect(sd.keys())
    ldm = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    try:
        if layout == "diffusers":
            levels = 1 + max(int(k.split(".")[2]) for k in ldm if k.startswith("encoder.down_blocks."))
            ldm = {_diffusers_to_ldm(k, levels): v for k, v in ldm.items()}
        parts = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")
        ldm = {k: v for k, v in ldm.items() if k.startswith(parts)}
        config = VAEConfig.from_state_dict(ldm)
    except (KeyError, ValueError, IndexError, TypeError) as exc:
        raise ModelFileError(f"The VAE weights are incomplete (missing {exc}); the file may be damaged.") from None
    try:
        with torch.device("meta"):
            model = AutoencoderKL(config, operations=skip_init_ops)
    except (ValueError, RuntimeError, ZeroDivisionError) as exc:
        raise ModelFileError(f"The VAE weights describe an impossible autoencoder ({config}: {exc}); the file is "
                             "damaged.") from None
    converted = {}
    for key, value in ldm.items():
        target = model.state_dict().get(key)
        if target is not None and value.ndim == 2 and target.ndim == 4:  # diffusers attention Linear -> 1x1 conv
            value = value[:, :, None, None]
        converted[key] = value.to(dtype) if value.is_floating_point() else value
    check_tensors(model, converted, "The VAE weights")
    result = model.load_state_dict(converted, strict=False, assign=True)
    if result.missing_keys or result.unexpected_keys:
        raise ModelFileError(
            f"The VAE weights do not fit an AutoencoderKL (missing: {result.missing_keys[:4]}, unexpected: "
            f"{result.unexpected_keys[:4]}); the file is damaged or another model."
        )
    return VAE(model.eval().requires_grad_(False))


def load_vae(path, dtype: torch.dtype = torch.float32) -> VAE:
    """From a weights file (any accepted layout) or a diffusers folder (the model root or its vae/). Every problem
    with the file is a ModelFileError naming it."""
    path = Path(path)
    if path.is_dir():
        for sub in (path / "vae", path):
            for name in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors",
                         "diffusion_pytorch_model.bin"):
                if (sub / name).is_file():
                    path = sub / name
                    break
            else:
                continue
            break
        else:
            if (path / "VQGAN_autoencoder.pth").is_file():
                path = path / "VQGAN_autoencoder.pth"
            else:
                raise ModelFileError(f"{path} holds no VAE: expected vae/diffusion_pytorch_model.safetensors or "
                                     "VQGAN_autoencoder.pth.")
    with naming(path):
        keys = read_keys(path)
        layout, prefix = _detect(keys)
        sd = load_state_dict(path, dtype=dtype, keep=lambda k: k.startswith(prefix))
        return vae_from_state_dict(sd, dtype)
