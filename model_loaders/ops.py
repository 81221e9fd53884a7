"""The operations namespace every layer of the models is built through.

A model never writes `nn.Linear(...)`; it writes `ops.Linear(...)` with `ops` given to its constructor. Swapping the
namespace changes how weights are stored or cast (fp8 storage, cast-on-the-fly for low VRAM, GGUF) without touching
the model code.

* `ops` (default): torch.nn layers.
* `skip_init_ops`: the same layers without their random initialisation, for models whose every parameter is about to
  be replaced by loaded weights (building the 1.4 B UNet on the CPU then takes a fraction of a second instead of
  tens of seconds). Use it together with the meta device and `load_state_dict(assign=True)`.
"""

from __future__ import annotations

import torch.nn as nn


class ops:  # noqa: N801 - a namespace, named like ComfyUI's `comfy.ops.disable_weight_init` family
    Linear = nn.Linear
    Conv1d = nn.Conv1d
    Conv2d = nn.Conv2d
    Conv3d = nn.Conv3d
    GroupNorm = nn.GroupNorm
    LayerNorm = nn.LayerNorm


class _NoInit:
    def reset_parameters(self):
        return None


class skip_init_ops(ops):  # noqa: N801
    class Linear(_NoInit, nn.Linear):
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
