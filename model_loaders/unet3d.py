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

from dataclasses import dataclass, asdict
from typing import Mapping, Sequence

import torch
import torch.nn as nn
from einops import rearrange

from .guidance_embedding import GUIDANCE_SCALE, guidance_embedding, make_cond_proj
from .ops import ops as default_ops
from .unet3d_attention import (HEAD_DIM, NORM_GROUPS, TEMPORAL_WINDOWS, SpatialTransformer,  # noqa: F401 (re-exported)
                               TemporalTransformer)
from .unet3d_blocks import Block, Downsample, ResBlock, Upsample  # noqa: F401 (re-exported)

#: transformer_options key: a callable the forward runs through (ComfyUI's DIFFUSION_MODEL wrappers), see forward
FORWARD_RUNNER = "cinematic_forward_runner"


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
    #: width of the guidance embedding (T2V-Turbo: 256; diffusers `time_cond_proj_dim`); None: no `time_cond_proj`
    time_cond_proj_dim: int | None = None

    @property
    def time_embed_dim(self) -> int:
        return self.model_channels * 4

    def to_dict(self) -> dict:
        return asdict(self)

    # ------------------------------------------------------------------------------------------ inference

    @classmethod
    def from_state_dict(cls, shapes: Mapping[str, Sequence[int] | torch.Tensor],
                        head_dim: int = HEAD_DIM) -> "UNet3DConfig":
        """Infer the architecture from original-layout key names and tensor shapes (tensors or shape tuples).
        `head_dim` cannot be seen in the shapes: the family's 64 unless the file says otherwise (a small model's
        single file carries it in its metadata, see unet_loader.HEAD_DIM_METADATA)."""

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
        input_temporal_heads = shape("input_blocks.0.1.proj_in.weight")[0] // head_dim if temporal_attention else 8
        context_keys = [k for k in keys if k.endswith("attn2.to_k.weight") and k.startswith("middle_block.1.")]
        context_dim = shape(context_keys[0])[1] if context_keys else 1024
        depth = 1 + max(
            (int(k.split(".")[3]) for k in keys if k.startswith("middle_block.1.transformer_blocks.")), default=0
        )
        cond_proj_dim = shape("time_cond_proj.weight")[1] if "time_cond_proj.weight" in keys else None
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
            head_dim=head_dim,
            time_cond_proj_dim=cond_proj_dim,
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
        #: the guidance embedding's projection (guidance_embedding.py), added to the timestep's sinusoid
        self.time_cond_proj = None
        if c.time_cond_proj_dim:
            self.time_cond_proj = ops.Linear(c.time_cond_proj_dim, c.model_channels, bias=False, dtype=dtype,
                                             device=device)

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

    def add_guidance_embedding(self, dim: int) -> nn.Module:
        """The guidance embedding's projection, created (zero weight, the time MLP's layer family, device and dtype)
        when a LoRA needs one this model lacks (T2V-Turbo). A zero projection changes nothing, and the forward only
        uses it when given a guidance scale, so views without such a LoRA keep their numbers."""
        if self.time_cond_proj is None:
            self.time_cond_proj = make_cond_proj(self.time_embed[0], dim, self.config.model_channels)
        if self.time_cond_proj.in_features != dim:
            raise ValueError(f"this UNet3D's guidance embedding is {self.time_cond_proj.in_features} wide, not {dim}")
        return self.time_cond_proj

    def _time_input(self, timesteps: torch.Tensor, guidance, batch: int) -> torch.Tensor:
        """The time MLP's input: the timestep sinusoid, plus the projected guidance embedding of w when this UNet
        has one and a scale is given (as diffusers' TimestepEmbedding with `timestep_cond`)."""
        emb = timestep_embedding(timesteps, self.config.model_channels)
        if guidance is not None and self.time_cond_proj is not None:
            w = torch.as_tensor(guidance, dtype=torch.float32).reshape(-1).to(emb.device).expand(batch)
            w_emb = guidance_embedding(w, self.time_cond_proj.in_features).to(self.compute_dtype or self.dtype)
            emb = emb + self.time_cond_proj(w_emb).float()
        return emb.to(self.compute_dtype or self.dtype)

    #: activations in (B F) H W C order: None = automatic (half precision or CUDA: faster convolutions, fewer
    #: copies; float32 on the CPU keeps the plain layout, where oneDNN's 3x3 convolutions are faster), or True/False
    channels_last: bool | None = None

    #: the dtype activations run in when the weights are stored in another one (fp8 storage, fp8_storage.py; the
    #: layers then cast per call); None: the weights' dtype
    compute_dtype: torch.dtype | None = None

    @property
    def dtype(self) -> torch.dtype:
        """The stored weights' dtype."""
        return self.time_embed[0].weight.dtype

    def _use_channels_last(self, x: torch.Tensor) -> bool:
        if self.channels_last is not None:
            return self.channels_last
        return x.device.type == "cuda" or (self.compute_dtype or self.dtype) in (torch.float16, torch.bfloat16)

    def match_weight_layout(self) -> "UNet3D":
        """Store the convolution weights in the layout the activations will have (channels-last in half precision),
        once, instead of oneDNN/cuDNN reordering them on every call. Changes strides only, never values."""
        nhwc = (self.channels_last if self.channels_last is not None
                else (self.compute_dtype or self.dtype) in (torch.float16, torch.bfloat16))
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
        """`_forward` (below), run through `transformer_options[FORWARD_RUNNER]` when the options hold one: inside
        ComfyUI the bridge puts its DIFFUSION_MODEL wrapper executor there (nodes/comfy_model.py), as core's UNetModel
        runs its `_forward`; called `runner(self._forward, x, timesteps, context, control, transformer_options,
        **kwargs)`. Without one (outside ComfyUI) this is `_forward`."""
        runner = transformer_options.get(FORWARD_RUNNER) if transformer_options else None
        if runner is not None:
            return runner(self._forward, x, timesteps, context, control, transformer_options, **kwargs)
        return self._forward(x, timesteps, context, control, transformer_options, **kwargs)

    def _forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor, control=None,
                 transformer_options: dict | None = None, **kwargs) -> torch.Tensor:
        """eps for a 5-D latent. The signature is also ComfyUI's diffusion-model call, so ComfyUI's BaseModel can
        drive this module directly.

        `context`: [B, L, D] (one prompt per video, shared by its frames) or [B*F, L, D] (one row per frame,
        batch-major). `transformer_options` (ComfyUI's dict; optional):
          * `patches`: `input_block_patch` / `input_block_patch_after_skip` (h, options) -> h, `middle_block_patch`
            (h, options) -> h, `output_block_patch` (h, skip, options) -> (h, skip); core FreeU uses the last;
          * `block` is set to ("input" | "middle" | "output", index) before each block, as ComfyUI's UNet does;
          * attention patches (`attn1_patch`, `patches_replace["attn1"]`, ...) reach the spatial transformers
            (attention_patches.py);
          * `cinematic_temporal_strength`: (attention, convolution) blend of the temporal layers, 1 = as trained;
          * `cinematic_temporal_windows`: (frames, [(frame indices, weights), ...]): FreeNoise's windowed temporal
            attention (samplers/context.py), used when `frames` is this call's frame count;
          * `context_window` (set by ComfyUI's context windows): when `context` holds one row per frame of the
            *whole* clip and `x` is one window of it, the window's rows are taken by its `index_list`;
          * `cinematic_guidance_scale`: the guidance scale w for a UNet with a guidance embedding (T2V-Turbo); the
            keyword `guidance` (ComfyUI's extra conds: core FluxGuidance) takes precedence.
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
        dtype = self.compute_dtype or self.dtype
        emb = self.time_embed(self._time_input(timesteps, kwargs.get("guidance", options.get(GUIDANCE_SCALE)), b))
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
            h = block(h, emb, context, frames, temporal=temporal, temporal_windows=windows,
                      transformer_options=options)
            for patch in patches.get("input_block_patch", ()):
                h = patch(h, options)
            skips.append(h)
            for patch in patches.get("input_block_patch_after_skip", ()):
                h = patch(h, options)
        options["block"] = ("middle", 0)
        h = self.middle_block(h, emb, context, frames, temporal=temporal, temporal_windows=windows,
                              transformer_options=options)
        for patch in patches.get("middle_block_patch", ()):
            h = patch(h, options)
        for index, block in enumerate(self.output_blocks):
            options["block"] = ("output", index)
            skip = skips.pop()
            for patch in patches.get("output_block_patch", ()):
                h, skip = patch(h, skip, options)
            h = torch.cat([h, skip], dim=1)
            h = block(h, emb, context, frames, upsample_size=skips[-1].shape[-2:] if skips else None,
                      temporal=temporal, temporal_windows=windows, transformer_options=options)
        h = self.out(h)
        return rearrange(h, "(b f) c h w -> b c f h w", b=b).to(x.dtype).contiguous()
