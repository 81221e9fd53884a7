"""fp8 weight storage: the UNet3D's weights kept in float8, every layer computing in the compute dtype.

* What is stored in fp8: every weight matrix / convolution kernel (tensors of 2+ dimensions, 99.9 % of the bytes);
  biases and norm weights (1-D) stay in the compute dtype, where fp8's 2-3 significant bits would shift every
  activation for no saving worth having.
* How it computes: `cast_ops`, the pack's layer family whose forward casts its weight and bias to the input's dtype
  for that call (the activations run in the compute dtype: fp32 on the CPU, fp16 on GPUs). Inside ComfyUI the nodes
  build the model with ComfyUI's own cast-weight family instead (`comfy.ops.manual_cast`, or its fp8 matmul ops for
  `fp8_e4m3fn_fast` on GPUs that have them), which also casts per layer and applies LoRA patches on the fly.
* `fp8_e4m3fn_fast` is ComfyUI's name for "fp8 storage, and fp8 matrix multiplication where the GPU has it"; outside
  ComfyUI it is stored and computed like `fp8_e4m3fn`.

Nothing here imports ComfyUI.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .ops import _NoInit, linear, ops

#: weight_dtype names (ComfyUI's own, as core UNETLoader lists them) -> storage dtype
FP8_DTYPES: dict[str, torch.dtype] = {}
if hasattr(torch, "float8_e4m3fn"):
    FP8_DTYPES = {"fp8_e4m3fn": torch.float8_e4m3fn, "fp8_e4m3fn_fast": torch.float8_e4m3fn,
                  "fp8_e5m2": torch.float8_e5m2}


def is_fp8(weight_dtype) -> bool:
    return isinstance(weight_dtype, str) and weight_dtype in FP8_DTYPES


def is_fp8_dtype(dtype: torch.dtype) -> bool:
    return dtype in set(FP8_DTYPES.values())


def tensor_dtype(fp8: torch.dtype, compute: torch.dtype):
    """For the loader: the dtype each tensor is stored in (fp8 for 2+ dimensions, the compute dtype otherwise)."""

    def pick(tensor: torch.Tensor) -> torch.dtype:
        return fp8 if tensor.ndim >= 2 else compute

    return pick


def _cast(tensor, x):
    if tensor is None or tensor.dtype == x.dtype and tensor.device == x.device:
        return tensor
    return tensor.to(device=x.device, dtype=x.dtype)


class CastLinear(nn.Linear):
    def forward(self, x):
        return linear(x, _cast(self.weight, x), _cast(self.bias, x))


class _CastConv:
    def forward(self, x):
        return self._conv_forward(x, _cast(self.weight, x), _cast(self.bias, x))


class CastConv1d(_CastConv, nn.Conv1d):
    pass


class CastConv2d(_CastConv, nn.Conv2d):
    pass


class CastConv3d(_CastConv, nn.Conv3d):
    pass


class CastGroupNorm(nn.GroupNorm):
    def forward(self, x):
        return F.group_norm(x, self.num_groups, _cast(self.weight, x), _cast(self.bias, x), self.eps)


class CastLayerNorm(nn.LayerNorm):
    def forward(self, x):
        return F.layer_norm(x, self.normalized_shape, _cast(self.weight, x), _cast(self.bias, x), self.eps)


class cast_ops(ops):  # noqa: N801 - a namespace, like ops.ops
    """Layers that cast their parameters to the input's dtype per call, without random initialisation (every
    parameter is loaded); the same parameters and keys as `ops`."""

    class Linear(_NoInit, CastLinear):
        pass

    class Conv1d(_NoInit, CastConv1d):
        pass

    class Conv2d(_NoInit, CastConv2d):
        pass

    class Conv3d(_NoInit, CastConv3d):
        pass

    class GroupNorm(_NoInit, CastGroupNorm):
        pass

    class LayerNorm(_NoInit, CastLayerNorm):
        pass


def weight_bytes(module: nn.Module) -> int:
    """Bytes held by the module's parameters and buffers (what the stored weights cost)."""
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))
