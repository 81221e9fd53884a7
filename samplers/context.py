"""Context windows and FreeNoise for long clips, in pure torch.

The UNet3D was trained on 16 frames (zeroscope on 24); its temporal attention has no positional encoding and looks at
every frame at once, so far past that it falls apart. Context windows split the frames into overlapping windows:

* **windowed UNet** (the default): each window is a whole UNet call on its own frames, so memory and the temporal
  layers follow the window, not the clip. Every window of one step sees the same latent; the outputs are fused per
  frame with the fuse method's weights and divided by the summed weights. Per-frame conditioning rows are sliced
  with the frames.
* **FreeNoise** (arXiv 2310.15169): (a) the initial noise is rescheduled: the first window keeps the seed's noise,
  each later block of frames gets a seeded shuffled copy of the noise one window earlier, so distant windows start
  from related noise; (b) optionally the windows are applied *inside the temporal attention only*: the whole UNet
  runs on all frames (spatial layers, temporal convolutions and norms see the clip), and only the temporal
  attention blocks run per window and are fused.

The names and values are ComfyUI's own (core `Context Windows (Manual)`): context_length 16, context_overlap 4,
schedules standard_static, standard_uniform, looped_uniform, batched; context_stride; closed_loop; fuse methods
pyramid, relative, flat, overlap-linear. The code is this pack's.

    options = ContextOptions(context_length=16, context_overlap=4)
    windows = context_windows(64, options, step=0)        # [[0..15], [12..27], ...]
    model = WindowedUNet(unet, options)                     # unet(x, t, context, transformer_options) -> eps
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Sequence

import torch

from ..model_loaders.unet3d import TEMPORAL_WINDOWS  # the transformer option the UNet3D reads
from .conditioning import slice_frames

SCHEDULES = ("standard_static", "standard_uniform", "looped_uniform", "batched")
FUSE_METHODS = ("pyramid", "relative", "flat", "overlap-linear")
FREENOISE_NOISE = "noise"
FREENOISE_ATTENTION = "noise + temporal attention windows"
FREENOISE_MODES = (FREENOISE_NOISE, FREENOISE_ATTENTION)


@dataclass(frozen=True)
class ContextOptions:
    """What `CinematicContextOptions` hands the sampler (T2V_CONTEXT_OPTIONS)."""

    context_length: int = 16
    context_overlap: int = 4
    context_schedule: str = "standard_static"
    fuse_method: str = "pyramid"
    context_stride: int = 1
    closed_loop: bool = False
    freenoise: bool = False
    freenoise_mode: str = FREENOISE_NOISE

    def __post_init__(self):
        if self.context_length < 1:
            raise ValueError(f"context_length must be at least 1 (got {self.context_length}); 16 is what the model "
                             "was trained on.")
        if not 0 <= self.context_overlap < self.context_length:
            raise ValueError(f"context_overlap must be between 0 and context_length - 1 = {self.context_length - 1} "
                             f"(got {self.context_overlap}); windows that overlap completely never move forward. "
                             "4 for windows of 16 is the usual choice.")
        if self.context_schedule not in SCHEDULES:
            raise ValueError(f"Unknown context_schedule {self.context_schedule!r}; choose one of {', '.join(SCHEDULES)}.")
        if self.fuse_method not in FUSE_METHODS:
            raise ValueError(f"Unknown fuse_method {self.fuse_method!r}; choose one of {', '.join(FUSE_METHODS)}.")
        if self.context_stride < 1:
            raise ValueError(f"context_stride must be at least 1 (got {self.context_stride}).")
        if self.freenoise_mode not in FREENOISE_MODES:
            raise ValueError(f"Unknown freenoise_mode {self.freenoise_mode!r}; choose one of "
                             f"{', '.join(map(repr, FREENOISE_MODES))}.")

    @property
    def attention_windows(self) -> bool:
        """FreeNoise's windowed temporal attention: the whole UNet on all frames, only temporal attention windowed."""
        return self.freenoise and self.freenoise_mode == FREENOISE_ATTENTION

    def applies_to(self, frames: int) -> bool:
        """A window at least as long as the clip is the plain run."""
        return self.context_length < frames

    def with_(self, **changes) -> "ContextOptions":
        return replace(self, **changes)


# ---------------------------------------------------------------------------------------------- schedules


def ordered_halving(step: int) -> float:
    """The step's bits reversed as a binary fraction in [0, 1): 0, 1/2, 1/4, 3/4, 1/8, ... (van der Corput), so
    consecutive steps shift the uniform windows as far apart as possible."""
    step = int(step) & (2**64 - 1)
    return int(f"{step:064b}"[::-1], 2) / 2**64


def _static(frames: int, length: int, overlap: int) -> list[list[int]]:
    """Windows of `length` every `length - overlap` frames from frame 0; the last one moved back to end on the
    clip's last frame. The same windows at every step."""
    hop = length - overlap
    windows, start = [], 0
    while True:
        if start + length >= frames:
            windows.append(list(range(frames - length, frames)))
            return windows
        windows.append(list(range(start, start + length)))
        start += hop


def _batched(frames: int, length: int) -> list[list[int]]:
    """Consecutive chunks of `length`, no overlap; the last one may be shorter."""
    return [list(range(s, min(s + length, frames))) for s in range(0, frames, length)]


def _stride_levels(frames: int, length: int, stride: int) -> list[int]:
    """Frame spacings 1, 2, 4, ... up to `stride` levels, kept only while a window of that spacing fits the clip
    without seeing a frame twice."""
    levels = []
    for k in range(stride):
        spacing = 1 << k
        if spacing * (length - 1) >= frames:
            break
        levels.append(spacing)
    return levels or [1]


def _uniform(frames: int, options: ContextOptions, step: int, looped: bool) -> list[list[int]]:
    """Windows that start at an offset changing with the step (so the seams move from step to step), for each
    frame-spacing level (context_stride). looped_uniform: a window running past the last frame wraps around to the
    first (for clips meant to loop; closed_loop adds the window across the seam). standard_uniform: such a window is
    moved back to end on the last frame instead, and frames it no longer reaches get a window of their own."""
    length, overlap = options.context_length, options.context_overlap
    shift = ordered_halving(step)
    offset = int(round(frames * shift))
    windows: list[list[int]] = []
    for spacing in _stride_levels(frames, length, options.context_stride):
        span = spacing * (length - 1)
        stop = frames + offset - (0 if (looped and options.closed_loop) else overlap)
        hop = max(length * spacing - overlap, 1)
        for start in range(int(shift * spacing) + offset, stop, hop):
            if looped:
                windows.append([(start + spacing * m) % frames for m in range(length)])
                continue
            first = start % frames
            if first + span >= frames:
                first = frames - 1 - span
            windows.append([first + spacing * m for m in range(length)])
    if not looped:
        covered = {f for w in windows for f in w}
        for frame in range(frames):
            if frame not in covered:
                first = min(frame, frames - length)
                windows.append(list(range(first, first + length)))
                covered.update(windows[-1])
    unique: list[list[int]] = []
    for w in windows:
        if w not in unique:
            unique.append(w)
    return unique


def context_windows(frames: int, options: ContextOptions, step: int = 0) -> list[list[int]]:
    """The windows (lists of frame numbers) for one sampling step. One window of every frame when the window is at
    least as long as the clip."""
    if not options.applies_to(frames):
        return [list(range(frames))]
    name = options.context_schedule
    if name == "standard_static":
        return _static(frames, options.context_length, options.context_overlap)
    if name == "batched":
        return _batched(frames, options.context_length)
    return _uniform(frames, options, step, looped=name == "looped_uniform")


# ---------------------------------------------------------------------------------------------- fuse weights


def fuse_weights(window: Sequence[int], frames: int, options: ContextOptions) -> torch.Tensor:
    """Per-frame weights of one window's output (float32, one per frame of the window):

    * pyramid: 1, 2, ..., n/2, ..., 2, 1 (the middle of a window counts most; FreeNoise's weighting);
    * relative: 1 at the window's centre falling linearly to 0.01 at its ends;
    * flat: all 1 (a plain average);
    * overlap-linear: 1, except linear ramps over the `context_overlap` frames shared with the previous / next
      window (a window touching the clip's first or last frame has no ramp on that side).
    """
    n = len(window)
    method = options.fuse_method
    if method == "flat":
        return torch.ones(n)
    if method == "pyramid":
        return torch.tensor([float(min(k + 1, n - k)) for k in range(n)])
    if method == "relative":
        centre, half = (n - 1) / 2, (n - 1 + 0.01) / 2
        return torch.tensor([max(0.01, 1 - abs(k - centre) / half) for k in range(n)])
    weights = torch.ones(n)
    ramp = options.context_overlap
    if ramp:
        up = torch.arange(1, ramp + 1, dtype=torch.float32) / (ramp + 1)
        if min(window) > 0:
            weights[:ramp] = up[:n]
        if max(window) < frames - 1:
            weights[-ramp:] = torch.minimum(weights[-ramp:], up.flip(0)[-n:])
    return weights


def window_plan(frames: int, options: ContextOptions, step: int = 0) -> list[tuple[list[int], torch.Tensor]]:
    """[(window frames, fuse weights)] for one step."""
    return [(w, fuse_weights(w, frames, options)) for w in context_windows(frames, options, step)]


class WindowFuser:
    """Accumulates per-window outputs along one frame axis and returns their weighted average per frame."""

    def __init__(self, like: torch.Tensor, dim: int):
        self.dim = dim
        self.total = torch.zeros(like.shape, dtype=torch.float32, device=like.device)
        self.weight = torch.zeros(like.shape[dim], dtype=torch.float32, device=like.device)

    def add(self, frames: Sequence[int], out: torch.Tensor, weights: torch.Tensor):
        index = torch.as_tensor(frames, dtype=torch.long, device=self.total.device)
        weights = weights.to(self.total.device)
        shape = [1] * out.ndim
        shape[self.dim] = -1
        self.total.index_add_(self.dim, index, out.float() * weights.reshape(shape))
        self.weight.index_add_(0, index, weights)

    def result(self, dtype=None) -> torch.Tensor:
        if (self.weight <= 0).any():
            missing = (self.weight <= 0).nonzero().flatten().tolist()
            raise RuntimeError(f"context windows left frames {missing[:8]} without any window")
        shape = [1] * self.total.ndim
        shape[self.dim] = -1
        out = self.total / self.weight.reshape(shape)
        return out if dtype is None else out.to(dtype)


# ---------------------------------------------------------------------------------------------- FreeNoise


def freenoise_noise(noise: torch.Tensor, options: ContextOptions, seed: int, dim: int = 2) -> torch.Tensor:
    """FreeNoise's noise rescheduling (a new tensor; `noise` is unchanged): frames 0 .. context_length-1 keep the
    seed's noise; from there, each block of `context_length - context_overlap` frames is a shuffled copy of the
    block one window earlier (already rescheduled frames included), the shuffles drawn on the CPU from `seed`.
    The same seed gives the same noise; a clip no longer than one window is unchanged."""
    out = noise.clone()
    frames = out.shape[dim]
    length = options.context_length
    hop = length - options.context_overlap
    generator = torch.Generator(device="cpu").manual_seed(int(seed) % 2**64)
    start = length
    while start < frames:
        count = min(hop, frames - start)
        source = torch.randperm(count, generator=generator) + (start - length)
        target = torch.arange(start, start + count)
        out.index_copy_(dim, target.to(out.device), out.index_select(dim, source.to(out.device)))
        start += count
    return out


# ---------------------------------------------------------------------------------------------- the windowed model


class WindowedUNet:
    """Wraps a UNet call `unet(x [B, C, F, h, w], t, context, transformer_options=None) -> eps` with context windows.

    `step` (which sampling step is running; the uniform schedules move with it) is set by the sampler, see
    `StepTracker`. `between_windows()` is called before each window (e.g. to honour a cancel). Counts `calls`."""

    def __init__(self, unet: Callable, options: ContextOptions, between_windows: Callable | None = None):
        self.unet = unet
        self.options = options
        self.between_windows = between_windows
        self.step = 0
        self.calls = 0
        self.max_frames_seen = 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, transformer_options: dict | None = None):
        b, frames = x.shape[0], x.shape[2]
        options = dict(transformer_options or {})
        if not self.options.applies_to(frames):
            return self._call(x, t, context, options)
        plan = window_plan(frames, self.options, self.step)
        if self.options.attention_windows:
            options[TEMPORAL_WINDOWS] = (frames, plan)
            return self._call(x, t, context, options)
        fuser = WindowFuser(x, dim=2)
        for index, weights in plan:
            if self.between_windows is not None:
                self.between_windows()
            sub_x = x[:, :, index]
            eps = self._call(sub_x, t, slice_frames(context, b, frames, index), options)
            fuser.add(index, eps, weights)
        return fuser.result(x.dtype)

    def _call(self, x, t, context, options):
        self.calls += 1
        self.max_frames_seen = max(self.max_frames_seen, x.shape[2])
        return self.unet(x, t, context, transformer_options=options) if options else self.unet(x, t, context)


class StepTracker:
    """Wraps a k-diffusion denoiser `model(x, sigma)`: before each call, the step whose sigma matches (as ComfyUI's
    context handler finds it) is written to `target.step`; a sub-step sigma (heun's second call) keeps the last."""

    def __init__(self, model: Callable, sigmas: torch.Tensor, target):
        self.model = model
        self.sigmas = sigmas.to(torch.float64)
        self.target = target

    def __call__(self, x, sigma, *args, **kwargs):
        value = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1)[0]
        match = torch.isclose(self.sigmas, value, rtol=1e-4, atol=0).nonzero().flatten()
        if len(match):
            self.target.step = int(match[0])
        return self.model(x, sigma, *args, **kwargs)


def describe(options: ContextOptions, frames: int) -> str:
    """One line for the console: how many windows, and of which frames."""
    if not options.applies_to(frames):
        return f"context windows of {options.context_length} >= {frames} frames: the whole clip at once"
    plan = context_windows(frames, options, 0)
    mode = " inside temporal attention" if options.attention_windows else ""
    return (f"{len(plan)} context windows{mode} of {options.context_length} frames over {frames} "
            f"({options.context_schedule}, overlap {options.context_overlap}, {options.fuse_method})"
            + (", FreeNoise" if options.freenoise else ""))
