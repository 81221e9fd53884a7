"""T2V_UNET3D: a loaded UNet3D plus the patches of one view of it (LoRAs, temporal strength, transformer options).

A node that changes the model (LoRA, temporal strength) returns a *view*: a new `VideoUNet` sharing the same
`UNet3D` module, with its own patch list; the input view, and every other branch of the graph that uses it, is
unchanged. Views stack in the order they are chained. Nothing here imports ComfyUI:

* outside ComfyUI the sampler runs `with unet.weights_applied(): ...`: the weight deltas are added to the shared
  module's weights for the run and the original weights are put back afterwards (bit for bit, from a backup);
* inside ComfyUI `nodes/comfy_model.py` turns a view into a ComfyUI `ModelPatcher` (a clone of its parent's, plus
  this view's patches), stored on the view itself in `comfy_patcher`: owned by the model object, released with it.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from typing import Iterator, Mapping

import torch

from .guidance_embedding import DEFAULT_GUIDANCE, GUIDANCE_SCALE
from .unet3d import UNet3D

TEMPORAL_STRENGTH = "cinematic_temporal_strength"
log = logging.getLogger("Cinematic")


def compile_requested() -> bool:
    """The opt-in compiled path: CINEMATIC_COMPILE=1 (off by default; CINEMATIC_COMPILE_BACKEND picks torch.compile's
    backend, default inductor)."""
    return os.environ.get("CINEMATIC_COMPILE", "").strip().lower() in ("1", "true", "yes", "on")


class CompiledForward:
    """`torch.compile` of one UNet3D's forward, made on first use and kept on the module.

    The frame count is marked dynamic, so a context-window run (windows of one length, a shorter last window, the
    whole clip) does not recompile per length; timesteps and contexts are tensors, so steps do not recompile either.
    Where compilation is unavailable (no C++ compiler, an unsupported device or torch build) the first call logs
    why and every call runs eagerly."""

    def __init__(self, module):
        self.module = module
        self.failed: str | None = None
        self._compiled = None

    def __call__(self, x, timesteps, context, transformer_options=None):
        if self.failed is None:
            try:
                if self._compiled is None:
                    backend = os.environ.get("CINEMATIC_COMPILE_BACKEND", "inductor")
                    self._compiled = torch.compile(self.module, backend=backend, dynamic=None)
                if x.shape[2] > 1:
                    torch._dynamo.mark_dynamic(x, 2)
                return self._compiled(x, timesteps, context, transformer_options=transformer_options)
            except Exception as exc:  # compiler missing, unsupported op or device: fall back, once
                self.failed = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                log.warning("[Cinematic] torch.compile unavailable (%s); running the UNet3D eagerly.", self.failed)
                print(f"[Cinematic] torch.compile unavailable ({self.failed}); running the UNet3D eagerly.")
        return self.module(x, timesteps, context, transformer_options=transformer_options)


def compiled_forward(module) -> CompiledForward:
    cached = module.__dict__.get("_cinematic_compiled")
    if cached is None:
        cached = CompiledForward(module)
        module.__dict__["_cinematic_compiled"] = cached  # not a submodule: kept out of state_dict and .to()
    return cached


@dataclass(frozen=True)
class WeightDelta:
    """One layer's low-rank delta: `scale * reshape(up @ down)`, or a full `diff` tensor.

    `layout`:
      * "reshape": `(up.flatten(1) @ down.flatten(1))` reshaped to the weight's shape (Linear, Conv1d, Conv2d, and
        PEFT's Conv3d whose down factor carries the kernel);
      * "conv3d_mean": Text-To-Video-Finetuning's stable_lora Conv3d: up [out*k, r*k] @ down [r*k, in*k], viewed
        as [out, in, k, k, 1] and averaged over its kernel-split axis (the 4th) to [out, in, k, 1, 1];
      * "diff": `diff` is the full delta (ComfyUI's `.diff` keys).
    """

    up: torch.Tensor | None = None
    down: torch.Tensor | None = None
    scale: float = 1.0
    layout: str = "reshape"
    diff: torch.Tensor | None = None

    def delta(self, shape: torch.Size, device=None, dtype=torch.float32) -> torch.Tensor:
        if self.layout == "diff":
            return (self.diff.to(device, dtype) * self.scale).reshape(shape)
        up = self.up.to(device, dtype).flatten(1)
        down = self.down.to(device, dtype).flatten(1)
        product = up @ down
        if self.layout == "conv3d_mean":
            out_ch, in_ch, k = shape[0], shape[1], shape[2]
            product = product.reshape(out_ch, in_ch, k, k, 1).mean(dim=-2, keepdim=True)
        return (product * self.scale).reshape(shape)


#: one LoRA (or other weight patch) on the original-layout weight keys ("input_blocks.1.1.proj_in.weight", ...)
WeightPatches = Mapping[str, WeightDelta]


class VideoUNet:
    """The T2V_UNET3D value passed between nodes. `module` is the shared UNet3D; `weight_patches` lists
    (patches, strength, label) of this view and its ancestors in order; `transformer_options` is what the UNet's
    forward receives (ComfyUI's dict; temporal strength lives there)."""

    def __init__(self, module: UNet3D, parent: "VideoUNet | None" = None):
        self.module = module
        self.parent = parent
        self.weight_patches: list[tuple[WeightPatches, float, str]] = []
        self.own_weight_patches: list[tuple[WeightPatches, float, str]] = []
        self.transformer_options: dict = {}
        self.own_options: dict = {}
        #: inside ComfyUI: this view's ModelPatcher, made on first use by nodes/comfy_model.py
        self.comfy_patcher = None
        if parent is None and getattr(getattr(module, "config", None), "time_cond_proj_dim", None):
            # a UNet with its own guidance embedding: sampled with w (the sampler's cfg), one pass per step
            self.transformer_options[GUIDANCE_SCALE] = self.own_options[GUIDANCE_SCALE] = DEFAULT_GUIDANCE

    # ------------------------------------------------------------------ what the sampler and nodes read

    @property
    def config(self):
        return self.module.config

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the model computes in (its weights' dtype, or the compute dtype of fp8-stored weights)."""
        return getattr(self.module, "compute_dtype", None) or self.module.dtype

    @property
    def guidance_embedded(self) -> bool:
        """True when this view is sampled with a guidance embedding (T2V-Turbo): `cfg` is the w given to the UNet
        and each step makes one UNet pass."""
        return GUIDANCE_SCALE in self.transformer_options and getattr(self.module, "time_cond_proj", None) is not None

    @property
    def labels(self) -> list[str]:
        return [label for _, _, label in self.weight_patches]

    def __repr__(self) -> str:
        extra = ", ".join(self.labels + [f"{k}={v}" for k, v in self.transformer_options.items()])
        return f"VideoUNet({self.module.config.model_channels}ch{', ' + extra if extra else ''})"

    def __call__(self, x, timesteps, context, transformer_options: dict | None = None):
        options = {**self.transformer_options, **(transformer_options or {})}
        if compile_requested():
            return compiled_forward(self.module)(x, timesteps, context, options)
        return self.module(x, timesteps, context, transformer_options=options)

    # ------------------------------------------------------------------ views

    def view(self) -> "VideoUNet":
        child = VideoUNet(self.module, parent=self)
        child.weight_patches = list(self.weight_patches)
        child.transformer_options = dict(self.transformer_options)
        return child

    def with_weight_patches(self, patches: WeightPatches, strength: float, label: str) -> "VideoUNet":
        """A view with `patches` added at `strength` (strength 0, or no patches: the same numbers as this one)."""
        child = self.view()
        if strength != 0 and patches:
            entry = (dict(patches), float(strength), label)
            child.weight_patches.append(entry)
            child.own_weight_patches.append(entry)
        return child

    def with_options(self, **options) -> "VideoUNet":
        child = self.view()
        child.transformer_options.update(options)
        child.own_options.update(options)
        return child

    def with_temporal_strength(self, attention: float, convolution: float) -> "VideoUNet":
        """Temporal attention / convolution blended with the identity; chained, the strengths multiply."""
        a, c = self.transformer_options.get(TEMPORAL_STRENGTH, (1.0, 1.0))
        return self.with_options(**{TEMPORAL_STRENGTH: (a * float(attention), c * float(convolution))})

    # ------------------------------------------------------------------ weights outside ComfyUI

    def merged_deltas(self, device=None) -> Iterator[tuple[str, torch.Tensor]]:
        """(key, summed delta in float32) for every patched weight of this view."""
        params = dict(self.module.named_parameters())
        keys: dict[str, None] = {}
        for patches, _, _ in self.weight_patches:
            keys.update(dict.fromkeys(patches))
        for key in keys:
            weight = params[key]
            total = torch.zeros(weight.shape, device=device or weight.device, dtype=torch.float32)
            for patches, strength, _ in self.weight_patches:
                if key in patches:
                    total += strength * patches[key].delta(weight.shape, total.device)
            yield key, total

    @contextlib.contextmanager
    def weights_applied(self):
        """Adds this view's deltas to the shared module's weights for the duration of the block, then restores the
        exact original weights. A no-op for a view without weight patches."""
        if not self.weight_patches:
            yield self.module
            return
        params = dict(self.module.named_parameters())
        backup: dict[str, torch.Tensor] = {}
        try:
            with torch.no_grad():
                for key, delta in self.merged_deltas():
                    weight = params[key]
                    backup[key] = weight.detach().clone()
                    weight.copy_((weight.float() + delta).to(weight.dtype))
            yield self.module
        finally:
            with torch.no_grad():
                for key, original in backup.items():
                    params[key].copy_(original)
