"""The UNet3D's attention layers: the spatial transformer (per frame, cross-attention to the text) and the temporal
transformer (self-attention across frames at every pixel), and the tensor helpers the blocks share.

Keys and module structure are the original ModelScope ones (see unet3d.py)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from . import attention_patches
from .ops import linear as fast_linear

HEAD_DIM = 64
NORM_GROUPS = 32
#: transformer_options key: FreeNoise's windowed temporal attention, (frames, [(frame indices, weights), ...])
TEMPORAL_WINDOWS = "cinematic_temporal_windows"


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

    def forward(self, x, context=None, repeat_kv: int = 1, transformer_options=None):
        if transformer_options is not None:  # ComfyUI's attention patches (attention_patches.py)
            return attention_patches.block_forward(self, x, context, repeat_kv, transformer_options)
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

    def forward(self, x, context, frames: int, transformer_options=None):
        """`context` holds one row per video (shared by its `frames` frames) or one row per frame.
        `transformer_options`: ComfyUI's attention patches reach the blocks when it holds any
        (attention_patches.py); `block_index` and `activations_shape` are set in it as core's UNet does."""
        _, _, h, w = x.shape
        residual = x
        repeat_kv = frames if context.shape[0] * frames == x.shape[0] else 1
        options = transformer_options if attention_patches.active(transformer_options) else None
        if options is not None:
            options["activations_shape"] = list(x.shape)
        x = rearrange(self.norm(x), "n c h w -> n (h w) c")
        x = self.proj_in(x)
        for index, block in enumerate(self.transformer_blocks):
            if options is not None:
                options["block_index"] = index
            x = block(x, context, repeat_kv=repeat_kv, transformer_options=options)
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
