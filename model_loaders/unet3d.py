"""The ModelScope text-to-video UNet3D, in pure torch.

Parameter names are the original ModelScope keys (`input_blocks.N...`, `middle_block...`, `output_blocks...`,
`time_embed...`, `out...`, the misspelt `temopral_conv`), so `text2video_pytorch_model.pth` loads as it is and the
diffusers layout is renamed into it (unet_loader.py).

Layout of the computation (frames folded into the batch for every spatial layer):
  x [B, C, F, H, W] -> [(B F), C, H, W]
  input_blocks.0  = conv_in, TemporalTransformer
  per level       = num_res_blocks x (ResBlock [+ SpatialTransformer + TemporalTransformer]) [+ Downsample]
  middle_block    = ResBlock, SpatialTransformer, TemporalTransformer, ResBlock
  output_blocks   = mirror, each (ResBlock [+ Spatial + Temporal] [+ Upsample]) on the concatenated skip
  out             = GroupNorm, SiLU, conv
Every ResBlock ends with a temporal convolution block (4 x GroupNorm/SiLU/Conv3d(3,1,1)) over the unfolded frames.
The temporal layers normalise over all frames of the 5-D tensor; the spatial ones per frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, asdict
from typing import Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from .ops import linear as fast_linear, ops as default_ops

HEAD_DIM = 64
NORM_GROUPS = 32
#: transformer_options key: FreeNoise's windowed temporal attention, (frames, [(frame indices, weights), ...])
TEMPORAL_WINDOWS = "cinematic_temporal_windows"


@dataclass
class UNet3DConfig:
    """Everything that differs between the full model, its fine-tunes and a tiny test model."""

    in_channels: int = 4
    out_channels: int = 4
    model_channels: int = 320
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    #: levels (0 = full resolution) whose blocks carry spatial + temporal transformers
    attention_levels: tuple[int, ...] = (0, 1, 2)
    context_dim: int = 1024
    #: heads of the temporal transformer right after conv_in (configuration.json `unet_num_heads`)
    input_temporal_heads: int = 8
    temporal_attention: bool = True
    transformer_depth: int = 1
    head_dim: int = HEAD_DIM
    norm_groups: int = NORM_GROUPS

    @property
    def time_embed_dim(self) -> int:
        return self.model_channels * 4

    def to_dict(self) -> dict:
        return asdict(self)

    # ------------------------------------------------------------------------------------------ inference

    @classmethod
    def from_state_dict(cls, shapes: Mapping[str, Sequence[int] | torch.Tensor]) -> "UNet3DConfig":
        """Infer the architecture from original-layout key names and tensor shapes (tensors or shape tuples)."""

        def shape(key: str) -> tuple[int, ...]:
            value = shapes[key]
            return tuple(value.shape) if isinstance(value, torch.Tensor) else tuple(value)

        keys = set(shapes)
        conv_in = shape("input_blocks.0.0.weight")
        model_channels, in_channels = conv_in[0], conv_in[1]
        out_channels = shape("out.2.weight")[0]

        n_input_blocks = 1 + max(int(k.split(".")[1]) for k in keys if k.startswith("input_blocks."))
        downsamplers = sorted(int(k.split(".")[1]) for k in keys if k.startswith("input_blocks.") and k.endswith(".op.weight"))
        levels = len(downsamplers) + 1
        num_res_blocks = (n_input_blocks - 1 - len(downsamplers)) // levels

        channel_mult, attention_levels = [], []
        index = 1
        for level in range(levels):
            out_ch = shape(f"input_blocks.{index}.0.in_layers.2.weight")[0]
            channel_mult.append(out_ch // model_channels)
            if f"input_blocks.{index}.1.proj_in.weight" in keys:
                attention_levels.append(level)
            index += num_res_blocks + (1 if level < levels - 1 else 0)

        temporal_attention = "input_blocks.0.1.proj_in.weight" in keys
        input_temporal_heads = shape("input_blocks.0.1.proj_in.weight")[0] // HEAD_DIM if temporal_attention else 8
        context_keys = [k for k in keys if k.endswith("attn2.to_k.weight") and k.startswith("middle_block.1.")]
        context_dim = shape(context_keys[0])[1] if context_keys else 1024
        depth = 1 + max(
            (int(k.split(".")[3]) for k in keys if k.startswith("middle_block.1.transformer_blocks.")), default=0
        )
        return cls(
            in_channels=in_channels,
            out_channels=out_channels,
            model_channels=model_channels,
            channel_mult=tuple(channel_mult),
            num_res_blocks=num_res_blocks,
            attention_levels=tuple(attention_levels),
            context_dim=context_dim,
            input_temporal_heads=input_temporal_heads,
            temporal_attention=temporal_attention,
            transformer_depth=depth,
        )

    @classmethod
    def from_modelscope_json(cls, model_cfg: Mapping) -> "UNet3DConfig":
        """From configuration.json's `model.model_cfg` (used as a cross-check; shapes remain the authority)."""
        scales = [float(s) for s in model_cfg.get("unet_attn_scales", [1, 0.5, 0.25])]
        mult = tuple(int(m) for m in model_cfg.get("unet_dim_mult", [1, 2, 4, 4]))
        return cls(
            in_channels=int(model_cfg.get("unet_in_dim", 4)),
            out_channels=int(model_cfg.get("unet_out_dim", 4)),
            model_channels=int(model_cfg.get("unet_dim", 320)),
            channel_mult=mult,
            num_res_blocks=int(model_cfg.get("unet_res_blocks", 2)),
            attention_levels=tuple(i for i in range(len(mult)) if 1.0 / (2**i) in scales),
            context_dim=int(model_cfg.get("unet_context_dim", 1024)),
            input_temporal_heads=int(model_cfg.get("unet_num_heads", 8)),
            temporal_attention=str(model_cfg.get("temporal_attention", "True")).lower() == "true",
        )


# ---------------------------------------------------------------------------------------------- layers


def timestep_embedding(timesteps: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding, cos first then sin, as the original."""
    half = dim // 2
    t = timesteps.float()
    freqs = torch.pow(10000, -torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=1)
    return emb


class Attention(nn.Module):
    """Multi-head attention with scaled_dot_product_attention; keys `to_q/to_k/to_v/to_out.0`."""

    def __init__(self, query_dim: int, heads: int, head_dim: int, context_dim: int | None, ops, dtype, device):
        super().__init__()
        inner = heads * head_dim
        kv_dim = context_dim if context_dim is not None else query_dim
        self.heads = heads
        self.to_q = ops.Linear(query_dim, inner, bias=False, dtype=dtype, device=device)
        self.to_k = ops.Linear(kv_dim, inner, bias=False, dtype=dtype, device=device)
        self.to_v = ops.Linear(kv_dim, inner, bias=False, dtype=dtype, device=device)
        self.to_out = nn.Sequential(ops.Linear(inner, query_dim, dtype=dtype, device=device), nn.Identity())

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, repeat_kv: int = 1) -> torch.Tensor:
        """`context` of batch B is shared by `repeat_kv` consecutive query rows (frames of one video): K/V are
        projected once per video and the frames' queries are folded into one sequence against them (every query
        sees the same keys either way), so nothing is repeated or copied."""
        rows, n, _ = x.shape
        q = self.to_q(x)
        source = x if context is None else context
        k, v = self.to_k(source), self.to_v(source)
        if repeat_kv > 1:
            q = q.reshape(rows // repeat_kv, repeat_kv * n, q.shape[-1])
        q, k, v = (rearrange(t, "b n (h d) -> b h n d", h=self.heads) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)
        out = rearrange(out, "b h n d -> b n (h d)")
        if repeat_kv > 1:
            out = out.reshape(rows, n, out.shape[-1])
        return self.to_out(out)


class GEGLU(nn.Module):
    def __init__(self, dim_in: int, dim_out: int, ops, dtype, device):
        super().__init__()
        self.proj = ops.Linear(dim_in, dim_out * 2, dtype=dtype, device=device)

    def forward(self, x):
        x, gate = self.proj(x).chunk(2, dim=-1)
        return F.gelu(gate).mul_(x)  # the gelu output is ours: multiplied in place (one transient less)


#: the feed-forward runs on at most this many tokens at once (its GEGLU intermediate is 8 x width per token, the
#: largest transient of the model); rows are independent, so chunking changes memory, not the result
FF_CHUNK_TOKENS = 16384
#: on the CPU the chunks are also kept under this many bytes of GEGLU output: glibc's malloc hands blocks over 32 MiB
#: straight from (and back to) the kernel, so each such transient costs a page fault per 4 KiB on every call
#: (measured: 25 ms per 84 MB block, about 5% of a bf16 UNet step); smaller blocks are reused from the heap
FF_CHUNK_BYTES_CPU = 8 << 20
#: ... but never fewer tokens than this (smaller matmuls run well below the CPU's peak)
FF_CHUNK_MIN_TOKENS_CPU = 2048


class FeedForward(nn.Module):
    def __init__(self, dim: int, ops, dtype, device, mult: int = 4):
        super().__init__()
        inner = dim * mult
        self.net = nn.Sequential(GEGLU(dim, inner, ops, dtype, device), nn.Identity(),
                                 ops.Linear(inner, dim, dtype=dtype, device=device))

    def forward(self, x):
        rows, n = x.shape[0], x.shape[1]
        tokens = FF_CHUNK_TOKENS
        if x.device.type == "cpu":
            fit = FF_CHUNK_BYTES_CPU // (self.net[0].proj.out_features * x.element_size())
            tokens = min(tokens, max(fit, FF_CHUNK_MIN_TOKENS_CPU))
        per_chunk = max(1, tokens // max(n, 1))
        if rows <= per_chunk:
            return self.net(x)
        out = torch.empty(x.shape[:-1] + (self.net[2].out_features,), dtype=x.dtype, device=x.device)
        for start in range(0, rows, per_chunk):
            out[start:start + per_chunk] = self.net(x[start:start + per_chunk])
        return out


class TransformerBlock(nn.Module):
    """norm1 -> self-attention, norm2 -> cross-attention (self-attention when context_dim is None), norm3 -> GEGLU."""

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int | None, ops, dtype, device):
        super().__init__()
        self.attn1 = Attention(dim, heads, head_dim, None, ops, dtype, device)
        self.ff = FeedForward(dim, ops, dtype, device)
        self.attn2 = Attention(dim, heads, head_dim, context_dim, ops, dtype, device)
        self.norm1 = ops.LayerNorm(dim, dtype=dtype, device=device)
        self.norm2 = ops.LayerNorm(dim, dtype=dtype, device=device)
        self.norm3 = ops.LayerNorm(dim, dtype=dtype, device=device)

    def forward(self, x, context=None, repeat_kv: int = 1):
        # each sublayer's output is a fresh tensor: the residual is added into it in place (the input x is never
        # written to)
        x = self.attn1(self.norm1(x)).add_(x)
        if context is None:
            x = self.attn2(self.norm2(x)).add_(x)
        else:
            x = self.attn2(self.norm2(x), context, repeat_kv).add_(x)
        return self.ff(self.norm3(x)).add_(x)


class SpatialTransformer(nn.Module):
    """Per-frame attention over H*W tokens with cross-attention to the text; linear proj_in/out."""

    def __init__(self, channels: int, heads: int, head_dim: int, depth: int, context_dim: int, ops, dtype, device):
        super().__init__()
        inner = heads * head_dim
        self.norm = ops.GroupNorm(NORM_GROUPS, channels, eps=1e-6, dtype=dtype, device=device)
        self.proj_in = ops.Linear(channels, inner, dtype=dtype, device=device)
        self.transformer_blocks = nn.ModuleList(
            TransformerBlock(inner, heads, head_dim, context_dim, ops, dtype, device) for _ in range(depth)
        )
        self.proj_out = ops.Linear(inner, channels, dtype=dtype, device=device)

    def forward(self, x, context, frames: int):
        """`context` holds one row per video (shared by its `frames` frames) or one row per frame."""
        _, _, h, w = x.shape
        residual = x
        repeat_kv = frames if context.shape[0] * frames == x.shape[0] else 1
        x = rearrange(self.norm(x), "n c h w -> n (h w) c")
        x = self.proj_in(x)
        for block in self.transformer_blocks:
            x = block(x, context, repeat_kv=repeat_kv)
        x = rearrange(self.proj_out(x), "n (h w) c -> n c h w", h=h, w=w)
        return _add_fresh(x, residual, other_first=True)


_POINTWISE: dict[type, type] = {}


def pointwise_conv1d(ops) -> type:
    """`ops.Conv1d` with kernel 1 applied to channel-last tokens [N, L, C] as a matmul.

    Same module, weight shape ([out, in, 1]) and key as the original's Conv1d, so files, LoRAs and ComfyUI's patching
    see the original layer; only `_conv_forward` differs, which torch's Conv1d and ComfyUI's cast-weight Conv1d both
    call with the (possibly cast) weight. A k=1 convolution costs 2-3x the matmul on the CPU."""
    base = ops.Conv1d
    if base not in _POINTWISE:
        class PointwiseConv1d(base):
            def _conv_forward(self, input, weight, bias):
                return fast_linear(input, weight.squeeze(-1), bias)

        _POINTWISE[base] = PointwiseConv1d
    return _POINTWISE[base]


def _add_fresh(fresh: torch.Tensor, other: torch.Tensor, other_first: bool = False) -> torch.Tensor:
    """`fresh + other`, written into `fresh` (a tensor the caller made and owns) when both have the same layout: one
    activation-sized allocation less per residual (on the CPU large allocations cost page faults on every call).
    Otherwise out of place; the result's layout then follows the first operand (`other` when `other_first`)."""
    if fresh.shape == other.shape and fresh.stride() == other.stride() and fresh.dtype == other.dtype:
        return fresh.add_(other)
    return other + fresh if other_first else fresh + other


def _channels_last(x: torch.Tensor) -> bool:
    """[(B F), C, H, W] stored as (B F) H W C (the layout the UNet uses in half precision)."""
    return x.shape[1] > 1 and x.stride(1) == 1


class TemporalTransformer(nn.Module):
    """Self-attention across frames at every pixel (both attention layers are self-attention); Conv1d(k=1) projections.

    No positional encoding and no mask, as the original. The GroupNorm sees all frames of a video together.
    """

    def __init__(self, channels: int, heads: int, head_dim: int, depth: int, ops, dtype, device):
        super().__init__()
        inner = heads * head_dim
        self.norm = ops.GroupNorm(NORM_GROUPS, channels, eps=1e-6, dtype=dtype, device=device)
        self.proj_in = pointwise_conv1d(ops)(channels, inner, 1, dtype=dtype, device=device)
        self.transformer_blocks = nn.ModuleList(
            TransformerBlock(inner, heads, head_dim, None, ops, dtype, device) for _ in range(depth)
        )
        self.proj_out = pointwise_conv1d(ops)(inner, channels, 1, dtype=dtype, device=device)

    def forward(self, x, frames: int, windows=None):
        """`windows` (FreeNoise's windowed temporal attention): [(frame indices, fuse weights), ...]; the attention
        blocks then run on each window's frames and are fused per frame (weighted average); the norm and the
        projections still see every frame."""
        # x: [(B F), C, H, W]; viewed as [B, C, F, H, W] for the norm over all frames (no copy when channels-last:
        # that view is then exactly channels_last_3d)
        bf, c, h, w = x.shape
        b = bf // frames
        residual = x
        x = self.norm(x.view(b, frames, c, h, w).transpose(1, 2))
        # tokens: one sequence of F frames per pixel, [(B H W), F, C]
        x = x.permute(0, 3, 4, 2, 1).reshape(b * h * w, frames, c)
        x = self.proj_in(x)
        if windows:
            x = _fuse_windows(x, windows, self._blocks)
        else:
            x = self._blocks(x)
        x = self.proj_out(x).view(b, h, w, frames, c)
        if _channels_last(residual):
            x = x.permute(0, 3, 1, 2, 4).reshape(bf, h, w, c).permute(0, 3, 1, 2)
        else:
            x = x.permute(0, 3, 4, 1, 2).reshape(bf, c, h, w)
        return _add_fresh(x, residual)

    def _blocks(self, x):
        for block in self.transformer_blocks:
            x = block(x)
        return x


def _fuse_windows(x: torch.Tensor, windows, run) -> torch.Tensor:
    """`run` on the frames (dim 1) of each window; outputs averaged per frame with the windows' weights."""
    total = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
    weight = torch.zeros(x.shape[1], dtype=torch.float32, device=x.device)
    for index, weights in windows:
        index = torch.as_tensor(index, dtype=torch.long, device=x.device)
        weights = torch.as_tensor(weights, dtype=torch.float32, device=x.device)
        total.index_add_(1, index, run(x.index_select(1, index)).float() * weights[None, :, None])
        weight.index_add_(0, index, weights)
    return (total / weight[None, :, None]).to(x.dtype)


class TemporalConvBlock(nn.Module):
    """Four GroupNorm/SiLU/Conv3d(3,1,1) stages over the frames, residual (`temopral_conv` in the keys)."""

    def __init__(self, channels: int, ops, dtype, device):
        super().__init__()

        def stage(with_dropout: bool):
            layers = [ops.GroupNorm(NORM_GROUPS, channels, dtype=dtype, device=device), nn.SiLU(inplace=True)]
            if with_dropout:
                layers.append(nn.Identity())  # dropout slot: keeps the original key indices (conv2.3, ...)
            layers.append(ops.Conv3d(channels, channels, (3, 1, 1), padding=(1, 0, 0), dtype=dtype, device=device))
            return nn.Sequential(*layers)

        self.conv1 = stage(False)
        self.conv2 = stage(True)
        self.conv3 = stage(True)
        self.conv4 = stage(True)

    def forward(self, x, frames: int):
        # [(B F), C, H, W] viewed as [B, C, F, H, W], run in channels_last_3d: there the (3,1,1) convolutions are
        # 1.5x (fp32) to 3x (bf16) faster on the CPU. Channels-last input already is that layout (a view, both ways);
        # plain input is copied once, as the norm would copy it anyway.
        bf, c, h, w = x.shape
        residual = x
        x = x.view(bf // frames, frames, c, h, w).transpose(1, 2).contiguous(memory_format=torch.channels_last_3d)
        x = self.conv4(self.conv3(self.conv2(self.conv1(x))))
        return _add_fresh(x.transpose(1, 2).reshape(bf, c, h, w), residual, other_first=True)


class ResBlock(nn.Module):
    def __init__(self, channels: int, emb_dim: int, out_channels: int, ops, dtype, device):
        super().__init__()
        self.in_layers = nn.Sequential(
            ops.GroupNorm(NORM_GROUPS, channels, dtype=dtype, device=device),
            nn.SiLU(inplace=True),  # on the norm's fresh output
            ops.Conv2d(channels, out_channels, 3, padding=1, dtype=dtype, device=device),
        )
        self.emb_layers = nn.Sequential(nn.SiLU(), ops.Linear(emb_dim, out_channels, dtype=dtype, device=device))
        self.out_layers = nn.Sequential(
            ops.GroupNorm(NORM_GROUPS, out_channels, dtype=dtype, device=device),
            nn.SiLU(inplace=True),
            nn.Identity(),  # dropout slot (out_layers.3 is the conv, as in the original keys)
            ops.Conv2d(out_channels, out_channels, 3, padding=1, dtype=dtype, device=device),
        )
        self.skip_connection = (
            nn.Identity() if out_channels == channels
            else ops.Conv2d(channels, out_channels, 1, dtype=dtype, device=device)
        )
        self.temopral_conv = TemporalConvBlock(out_channels, ops, dtype, device)

    def forward(self, x, emb, frames: int, temporal_strength: float = 1.0):
        h = self.in_layers(x)
        h = h.add_(self.emb_layers(emb).to(h.dtype)[:, :, None, None])  # h is the conv's fresh output
        h = _add_fresh(self.out_layers(h), self.skip_connection(x), other_first=True)
        return _blend(h, self.temopral_conv, temporal_strength, frames)


class Downsample(nn.Module):
    """A whole entry of input_blocks on its own (key `input_blocks.N.op`), hence the block-style signature."""

    def __init__(self, channels: int, ops, dtype, device):
        super().__init__()
        self.op = ops.Conv2d(channels, channels, 3, stride=2, padding=1, dtype=dtype, device=device)

    def forward(self, x, emb=None, context=None, frames: int = 1, upsample_size=None, temporal=None,
                temporal_windows=None):
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, channels: int, ops, dtype, device):
        super().__init__()
        self.conv = ops.Conv2d(channels, channels, 3, padding=1, dtype=dtype, device=device)

    def forward(self, x, size=None):
        # To the size of the skip connection it meets next, so any latent size works (an odd size halves down,
        # then comes back to the odd size); for even sizes this is exactly 2x.
        if size is None:
            return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))
        return self.conv(F.interpolate(x, size=size, mode="nearest"))


def _blend(x: torch.Tensor, layer, strength: float, *args) -> torch.Tensor:
    """`x + s * (layer(x) - x)`: s = 1 is the layer as trained, s = 0 skips it (the original's image mode)."""
    if strength == 1.0:
        return layer(x, *args)
    if strength == 0.0:
        return x
    return x + strength * (layer(x, *args) - x)


class Block(nn.ModuleList):
    """One entry of input_blocks / middle_block / output_blocks: its layers run in order.

    `temporal` = (attention strength, convolution strength) of the temporal layers (see UNet3D.forward);
    `temporal_windows`: FreeNoise's windows for the temporal attention (TemporalTransformer.forward)."""

    def forward(self, x, emb, context, frames: int, upsample_size=None, temporal=(1.0, 1.0), temporal_windows=None):
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb, frames, temporal[1])
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context, frames)
            elif isinstance(layer, TemporalTransformer):
                x = _blend(x, layer, temporal[0], frames, temporal_windows)
            elif isinstance(layer, Upsample):
                x = layer(x, upsample_size)
            else:
                x = layer(x)
        return x


def _window_rows(context: torch.Tensor, batch: int, frames: int, window) -> torch.Tensor:
    """Per-frame rows of the whole clip [B*F_total] -> the rows of one context window's frames [B*frames].

    ComfyUI's context windows (`Context Windows (Manual)`, dim 2) hand the model one window of the latent but may
    leave per-frame conditioning whole; the window's frames are in `index_list` (0.33+ may put an extra leading
    frame first, `causal_anchor_index`)."""
    rows = context.shape[0]
    index = list(getattr(window, "index_list", None) or [])
    anchor = getattr(window, "causal_anchor_index", None)
    if index and anchor is not None and anchor >= 0:
        index = [anchor] + index
    if index and len(index) == frames and rows % batch == 0 and max(index) < rows // batch:
        total = rows // batch
        picked = torch.as_tensor(index, dtype=torch.long, device=context.device)
        per_video = context.reshape(batch, total, *context.shape[1:])
        return per_video.index_select(1, picked).reshape(batch * frames, *context.shape[1:])
    raise ValueError(f"context batch {rows} fits neither the latent batch {batch} nor its {batch * frames} frames "
                     f"(one conditioning row per video, or one per frame)")


# ---------------------------------------------------------------------------------------------- model


class UNet3D(nn.Module):
    """forward(x [B, C, F, H, W], timesteps [B], context [B, L, context_dim]) -> eps [B, C, F, H, W]."""

    def __init__(self, config: UNet3DConfig, operations=default_ops, dtype=None, device=None):
        super().__init__()
        self.config = config
        c, ops = config, operations
        dd = dict(ops=ops, dtype=dtype, device=device)
        emb_dim = c.time_embed_dim
        hd, depth = c.head_dim, c.transformer_depth

        def attention_layers(ch: int) -> list[nn.Module]:
            layers = [SpatialTransformer(ch, ch // hd, hd, depth, c.context_dim, **dd)]
            if c.temporal_attention:
                layers.append(TemporalTransformer(ch, ch // hd, hd, depth, **dd))
            return layers

        self.time_embed = nn.Sequential(
            ops.Linear(c.model_channels, emb_dim, dtype=dtype, device=device),
            nn.SiLU(),
            ops.Linear(emb_dim, emb_dim, dtype=dtype, device=device),
        )

        first = [ops.Conv2d(c.in_channels, c.model_channels, 3, padding=1, dtype=dtype, device=device)]
        if c.temporal_attention:
            first.append(TemporalTransformer(c.model_channels, c.input_temporal_heads, hd, depth, **dd))
        self.input_blocks = nn.ModuleList([Block(first)])
        skip_channels = [c.model_channels]
        ch = c.model_channels
        levels = len(c.channel_mult)
        for level, mult in enumerate(c.channel_mult):
            out_ch = c.model_channels * mult
            for _ in range(c.num_res_blocks):
                layers: list[nn.Module] = [ResBlock(ch, emb_dim, out_ch, **dd)]
                ch = out_ch
                if level in c.attention_levels:
                    layers += attention_layers(ch)
                self.input_blocks.append(Block(layers))
                skip_channels.append(ch)
            if level != levels - 1:
                self.input_blocks.append(Downsample(ch, **dd))
                skip_channels.append(ch)

        middle: list[nn.Module] = [ResBlock(ch, emb_dim, ch, **dd), SpatialTransformer(ch, ch // hd, hd, depth, c.context_dim, **dd)]
        if c.temporal_attention:
            middle.append(TemporalTransformer(ch, ch // hd, hd, depth, **dd))
        middle.append(ResBlock(ch, emb_dim, ch, **dd))
        self.middle_block = Block(middle)

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(c.channel_mult))):
            out_ch = c.model_channels * mult
            for j in range(c.num_res_blocks + 1):
                layers = [ResBlock(ch + skip_channels.pop(), emb_dim, out_ch, **dd)]
                ch = out_ch
                if level in c.attention_levels:
                    layers += attention_layers(ch)
                if level != 0 and j == c.num_res_blocks:
                    layers.append(Upsample(ch, **dd))
                self.output_blocks.append(Block(layers))

        self.out = nn.Sequential(
            ops.GroupNorm(NORM_GROUPS, ch, dtype=dtype, device=device),
            nn.SiLU(inplace=True),
            ops.Conv2d(ch, c.out_channels, 3, padding=1, dtype=dtype, device=device),
        )

    #: activations in (B F) H W C order: None = automatic (half precision or CUDA: faster convolutions, fewer
    #: copies; float32 on the CPU keeps the plain layout, where oneDNN's 3x3 convolutions are faster), or True/False
    channels_last: bool | None = None

    @property
    def dtype(self) -> torch.dtype:
        return self.time_embed[0].weight.dtype

    def _use_channels_last(self, x: torch.Tensor) -> bool:
        if self.channels_last is not None:
            return self.channels_last
        return x.device.type == "cuda" or self.dtype in (torch.float16, torch.bfloat16)

    def match_weight_layout(self) -> "UNet3D":
        """Store the convolution weights in the layout the activations will have (channels-last in half precision),
        once, instead of oneDNN/cuDNN reordering them on every call. Changes strides only, never values."""
        nhwc = self.channels_last if self.channels_last is not None else self.dtype in (torch.float16, torch.bfloat16)
        with torch.no_grad():
            for module in self.modules():
                weight = getattr(module, "weight", None)
                if isinstance(module, nn.Conv2d) and weight is not None and weight.ndim == 4:
                    fmt = torch.channels_last if nhwc else torch.contiguous_format
                elif isinstance(module, nn.Conv3d) and weight is not None and weight.ndim == 5:
                    fmt = torch.channels_last_3d  # the temporal convolutions always run channels-last
                else:
                    continue
                if not weight.is_meta and not weight.is_contiguous(memory_format=fmt):
                    module.weight = nn.Parameter(weight.contiguous(memory_format=fmt), requires_grad=False)
        return self

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor, control=None,
                transformer_options: dict | None = None, **kwargs) -> torch.Tensor:
        """eps for a 5-D latent. The signature is also ComfyUI's diffusion-model call, so ComfyUI's BaseModel can
        drive this module directly.

        `context`: [B, L, D] (one prompt per video, shared by its frames) or [B*F, L, D] (one row per frame,
        batch-major). `transformer_options` (ComfyUI's dict; optional):
          * `patches`: `input_block_patch` / `input_block_patch_after_skip` (h, options) -> h, `middle_block_patch`
            (h, options) -> h, `output_block_patch` (h, skip, options) -> (h, skip); core FreeU uses the last;
          * `block` is set to ("input" | "middle" | "output", index) before each block, as ComfyUI's UNet does;
          * `cinematic_temporal_strength`: (attention, convolution) blend of the temporal layers, 1 = as trained;
          * `cinematic_temporal_windows`: (frames, [(frame indices, weights), ...]): FreeNoise's windowed temporal
            attention (samplers/context.py), used when `frames` is this call's frame count;
          * `context_window` (set by ComfyUI's context windows): when `context` holds one row per frame of the
            *whole* clip and `x` is one window of it, the window's rows are taken by its `index_list`.
        """
        if x.ndim != 5:
            raise ValueError(f"UNet3D expects a 5-D latent [B, C, F, H, W], got shape {tuple(x.shape)}")
        b, _, frames, _, _ = x.shape
        if timesteps.ndim == 0:
            timesteps = timesteps.expand(b)
        options = dict(transformer_options or {})
        if context.shape[0] not in (b, b * frames):
            context = _window_rows(context, b, frames, options.get("context_window"))
        patches = options.get("patches", {}) or {}
        temporal = tuple(float(s) for s in options.get("cinematic_temporal_strength", (1.0, 1.0)))
        windows = options.get(TEMPORAL_WINDOWS)
        windows = windows[1] if windows and windows[0] == frames else None
        dtype = self.dtype
        emb = self.time_embed(timestep_embedding(timesteps, self.config.model_channels).to(dtype))
        emb = emb.repeat_interleave(frames, dim=0)
        context = context.to(dtype)

        if self._use_channels_last(x):
            _, c, _, height, width = x.shape
            h = x.to(dtype).permute(0, 2, 3, 4, 1).reshape(b * frames, height, width, c).permute(0, 3, 1, 2)
        else:
            h = rearrange(x.to(dtype), "b c f h w -> (b f) c h w")
        skips = []
        for index, block in enumerate(self.input_blocks):
            options["block"] = ("input", index)
            h = block(h, emb, context, frames, temporal=temporal, temporal_windows=windows)
            for patch in patches.get("input_block_patch", ()):
                h = patch(h, options)
            skips.append(h)
            for patch in patches.get("input_block_patch_after_skip", ()):
                h = patch(h, options)
        options["block"] = ("middle", 0)
        h = self.middle_block(h, emb, context, frames, temporal=temporal, temporal_windows=windows)
        for patch in patches.get("middle_block_patch", ()):
            h = patch(h, options)
        for index, block in enumerate(self.output_blocks):
            options["block"] = ("output", index)
            skip = skips.pop()
            for patch in patches.get("output_block_patch", ()):
                h, skip = patch(h, skip, options)
            h = torch.cat([h, skip], dim=1)
            h = block(h, emb, context, frames, upsample_size=skips[-1].shape[-2:] if skips else None,
                      temporal=temporal, temporal_windows=windows)
        h = self.out(h)
        return rearrange(h, "(b f) c h w -> b c f h w", b=b).to(x.dtype).contiguous()
