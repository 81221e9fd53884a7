"""The UNet3D's convolutional blocks: ResBlock with its temporal convolution block, down/upsampling, and `Block`,
one entry of input_blocks / middle_block / output_blocks (original key names, see unet3d.py)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .unet3d_attention import NORM_GROUPS, SpatialTransformer, TemporalTransformer, _add_fresh


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
                temporal_windows=None, transformer_options=None):
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
    `temporal_windows`: FreeNoise's windows for the temporal attention (TemporalTransformer.forward);
    `transformer_options`: ComfyUI's dict, read by the spatial transformers (attention patches)."""

    def forward(self, x, emb, context, frames: int, upsample_size=None, temporal=(1.0, 1.0), temporal_windows=None,
                transformer_options=None):
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb, frames, temporal[1])
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context, frames, transformer_options)
            elif isinstance(layer, TemporalTransformer):
                x = _blend(x, layer, temporal[0], frames, temporal_windows)
            elif isinstance(layer, Upsample):
                x = layer(x, upsample_size)
            else:
                x = layer(x)
        return x
