"""The operations namespace every layer of the models is built through.

A model never writes `nn.Linear(...)`; it writes `ops.Linear(...)` with `ops` given to its constructor. Swapping the
namespace changes how weights are stored or cast (fp8 storage, cast-on-the-fly for low VRAM, GGUF) without touching
the model code.

* `ops` (default): torch.nn layers; Linear's forward packs its weight for oneDNN on large CPU calls (`linear`).
* `skip_init_ops`: the same layers without their random initialisation, for models whose every parameter is about to
  be replaced by loaded weights (building the 1.4 B UNet on the CPU then takes a fraction of a second instead of
  tens of seconds). Use it together with the meta device and `load_state_dict(assign=True)`.
"""

from __future__ import annotations

import logging
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

log = logging.getLogger(__name__)

#: rows (tokens) from which a CPU linear goes through oneDNN with the weight packed for that call
ONEDNN_MIN_ROWS = 1024
_onednn: dict[torch.dtype, bool] = {}  # which dtypes take the oneDNN path; checked once, all off after a failure
_is_compiling = getattr(getattr(torch, "compiler", None), "is_compiling", lambda: False)  # torch < 2.3 lacks it


def _onednn_ready(dtype: torch.dtype) -> bool:
    if not _onednn:
        # measured on AVX-512 CPUs only (benchmarks in the README); elsewhere torch's own path stays
        ok = (os.environ.get("CINEMATIC_ONEDNN_LINEAR", "1") != "0" and torch.backends.mkldnn.is_available()
              and hasattr(torch.ops.mkldnn, "_linear_pointwise")
              and torch.backends.cpu.get_cpu_capability().startswith("AVX512"))
        _onednn.update({torch.float32: ok, torch.bfloat16: ok and torch.ops.mkldnn._is_mkldnn_bf16_supported()})
    return _onednn.get(dtype, False)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear`, except for large inference-time CPU calls: those run oneDNN's matmul on a weight packed for this
    call (nothing is kept, so patched or swapped weights are always current). Measured in a full-size fp32 UNet3D
    forward at [2,4,16,32,32]: linear time 37.6 -> 29.2 s (F.linear goes to MKL there); in bf16 no change (F.linear
    already is oneDNN). bf16 results are bit-identical, fp32 equal up to float rounding. Anything else (autograd,
    compile, other devices) is F.linear."""
    rows = x.numel() // max(x.shape[-1], 1) if x.dim() >= 2 else 0
    if (rows >= ONEDNN_MIN_ROWS and x.device.type == "cpu" and weight.dtype == x.dtype
            and (bias is None or bias.dtype == x.dtype) and weight.dim() == 2
            and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                                  or (bias is not None and bias.requires_grad)))
            # with a large weight and few rows, packing costs more than it saves (bf16, measured)
            and (x.dtype == torch.float32 or weight.shape[0] <= 2 * rows)
            and not _is_compiling() and _onednn_ready(x.dtype)):
        try:
            packed = torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), rows)
            out = torch.ops.mkldnn._linear_pointwise(x.reshape(rows, x.shape[-1]), packed, bias, "none", [], "")
            return out.view(*x.shape[:-1], weight.shape[0])
        except (RuntimeError, NotImplementedError) as exc:  # an unusual build: use torch's path from now on
            _onednn.update(dict.fromkeys(_onednn, False))
            log.warning("[Cinematic] oneDNN linear unavailable (%s); using F.linear", exc)
    return F.linear(x, weight, bias)


class Linear(nn.Linear):
    """nn.Linear (same parameters, same keys) whose forward is `linear` above."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)


class ops:  # noqa: N801 - a namespace, named like ComfyUI's `comfy.ops.disable_weight_init` family
    Linear = Linear
    Conv1d = nn.Conv1d
    Conv2d = nn.Conv2d
    Conv3d = nn.Conv3d
    GroupNorm = nn.GroupNorm
    LayerNorm = nn.LayerNorm


class _NoInit:
    def reset_parameters(self):
        return None


class skip_init_ops(ops):  # noqa: N801
    class Linear(_NoInit, Linear):
        pass

    class Conv1d(_NoInit, nn.Conv1d):
        pass

    class Conv2d(_NoInit, nn.Conv2d):
        pass

    class Conv3d(_NoInit, nn.Conv3d):
        pass

    class GroupNorm(_NoInit, nn.GroupNorm):
        pass

    class LayerNorm(_NoInit, nn.LayerNorm):
        pass
