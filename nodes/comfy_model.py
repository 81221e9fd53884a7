"""The UNet3D as a ComfyUI model: one ModelPatcher per view, owned by the view (no registry), built on first use.

Inside ComfyUI:
* the UNet3D is built with ComfyUI's cast-weight layers (`comfy.ops.disable_weight_init`), so ComfyUI's partial
  ("low VRAM") loading can leave any layer on the offload device and cast it on the fly;
* the view's ModelPatcher wraps a `comfy.model_base.BaseModel` whose diffusion model *is* our UNet3D (its forward
  takes ComfyUI's call signature and honours `transformer_options`), made with core's own patcher class
  (`CoreModelPatcher` where it exists, the plain `ModelPatcher` otherwise);
* a view's patcher is a clone of its parent's plus the view's own LoRA deltas (as weight adapters that compute the
  delta when ComfyUI patches the weight, lowvram included) and transformer options;
* `CinematicUNet3DToModel` returns a clone of it, with a model config core nodes can read (`model_channels`...);
* the BaseModel keeps a per-frame CONDITIONING (one row per frame) per frame, also under core's context windows
  (`video_model_classes`);
* a guidance-embedding view (T2V-Turbo) carries its guidance scale w in its transformer options (7.5 unless set), so
  core KSampler at cfg 1.0 makes one UNet pass per step; core's `FluxGuidance` on the positive CONDITIONING sets
  another w (the `guidance` extra cond, which the UNet3D's forward takes over the option). Distilled sampling in
  core: `ModelSamplingDiscrete` (sampling `lcm`: the 50 distillation timesteps and LCM's boundary condition) +
  sampler `lcm` + scheduler `simple` (LCM's timesteps 999, 759, 499, 259 at 4 steps).
Outside ComfyUI nothing here is used (`available()` is False) and the sampler patches weights itself.
"""

from __future__ import annotations

import torch

from ..model_loaders import fp8_storage
from ..model_loaders.unet3d import FORWARD_RUNNER
from ..model_loaders.unet_loader import resolve_dtype
from ..model_loaders.video_unet import VideoUNet, WeightDelta
from . import comfy_env

LATENT_SCALE = 0.18215


def available() -> bool:
    return comfy_env.IN_COMFYUI


def unet_operations(weight_dtype: str = "default"):
    """ComfyUI's cast-weight layer family inside ComfyUI, None (the pack's own) outside. For fp8 storage, the family
    core's own loaders pick for it (`comfy.ops.pick_operations`: manual_cast, casting every layer to the compute
    dtype per call; fp8 matmul ops for `fp8_e4m3fn_fast` on GPUs that have them)."""
    if not available():
        return None
    import comfy.ops  # type: ignore

    if fp8_storage.is_fp8(weight_dtype):
        device = comfy_env.torch_device()
        return comfy.ops.pick_operations(fp8_storage.FP8_DTYPES[weight_dtype], resolve_dtype("default", device),
                                         device, fp8_optimizations=weight_dtype.endswith("_fast"))
    return comfy.ops.disable_weight_init


def remember_source(module, reload) -> None:
    """`reload()` makes a fresh copy of this UNet3D (the loader node's own call): what core's `cached_patcher_init`
    factory runs when it needs an independent model (TrainLoraNode's deep copy, 0.33's non-dynamic delegates)."""
    module.__dict__["_cinematic_reload"] = reload  # not a submodule: out of state_dict and .to()


def _fresh_patcher(module, disable_dynamic=False):
    """The `cached_patcher_init` factory: a new root patcher around a fresh copy of `module` (reloaded from its file
    by the loader's own call; a deep copy for a UNet3D not made by the pack's loaders)."""
    import copy

    reload = module.__dict__.get("_cinematic_reload")
    fresh = reload() if reload is not None else copy.deepcopy(module)
    if reload is not None:
        remember_source(fresh, reload)
    return _root_patcher(fresh, disable_dynamic=disable_dynamic)


def _run_with_wrappers(forward, x, timesteps, context, control, transformer_options, **kwargs):
    """The UNet3D's forward through ComfyUI's DIFFUSION_MODEL wrappers (EasyCache...), as core's UNetModel runs
    its `_forward`: the same positional order, transformer_options last."""
    import comfy.patcher_extension  # type: ignore

    wrappers = comfy.patcher_extension.get_all_wrappers(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL,
                                                        transformer_options)
    if not wrappers:
        return forward(x, timesteps, context, control, transformer_options, **kwargs)
    executor = comfy.patcher_extension.WrapperExecutor.new_class_executor(forward, forward.__self__, wrappers)
    return executor.execute(x, timesteps, context, control, transformer_options, **kwargs)


def _patcher_class():
    import comfy.model_patcher  # type: ignore

    return getattr(comfy.model_patcher, "CoreModelPatcher", comfy.model_patcher.ModelPatcher)


def unet_config_of(module) -> dict:
    """What core nodes read from `model.model_config.unet_config` (FreeU: model_channels). `num_res_blocks` is
    deliberately absent: core would then map SD's diffusers LoRA names onto this UNet, wrongly."""
    c = module.config
    return {"model_channels": c.model_channels, "in_channels": c.in_channels, "out_channels": c.out_channels,
            "channel_mult": list(c.channel_mult), "context_dim": c.context_dim, "num_head_channels": c.head_dim,
            "attention_levels": list(c.attention_levels), "transformer_depth_middle": c.transformer_depth,
            "temporal_attention": c.temporal_attention, "image_model": "modelscope_t2v_unet3d"}


def _model_config(module):
    import comfy.latent_formats  # type: ignore
    import comfy.supported_models_base  # type: ignore

    class VideoLatentFormat(comfy.latent_formats.LatentFormat):
        scale_factor = LATENT_SCALE
        latent_channels = 4
        latent_dimensions = 3
        latent_rgb_factors = [[0.3512, 0.2297, 0.3227], [0.3250, 0.4974, 0.2350], [-0.2829, 0.1762, 0.2721],
                              [-0.2120, -0.2616, -0.7177]]

    class ModelScopeT2V(comfy.supported_models_base.BASE):
        unet_config = {}
        unet_extra_config = {}
        # ComfyUI's "linear" schedule is SD's scaled linear: linspace(sqrt(start), sqrt(end)) ** 2
        sampling_settings = {"beta_schedule": "linear", "linear_start": 0.00085, "linear_end": 0.012,
                             "timesteps": 1000}
        latent_format = VideoLatentFormat
        supported_inference_dtypes = [torch.float16, torch.bfloat16, torch.float32]
        memory_usage_factor = 2.0

    config = ModelScopeT2V(unet_config_of(module))
    if getattr(module, "compute_dtype", None) is not None:  # fp8 storage: core casts inputs to the compute dtype
        config.set_inference_dtype(module.dtype, module.compute_dtype)
    return config


_VIDEO_CLASSES: dict = {}


def video_model_classes():
    """(VideoCrossAttn, VideoBaseModel): ComfyUI's BaseModel and CONDCrossAttn taught the rows of a video
    CONDITIONING (samplers/conditioning.py), made once inside ComfyUI.

    Core's CONDCrossAttn repeats or cuts a CONDITIONING's rows to the latent batch (B videos), which would cut a
    per-frame CONDITIONING (one row per frame: a prompt schedule) down to its first row. VideoCrossAttn knows the
    clip's frame count (from the `noise` ComfyUI passes to extra_conds) and keeps per-frame rows: B*F rows when
    they are per frame, B when per video (repeated as core does); a per-video and a per-frame one (negative and
    positive) still batch together, the per-video one expanded to per frame. Under core context windows, 0.33+
    asks the model to slice its conditioning per window (`resize_cond_for_context_window`); older versions leave
    the rows whole and the UNet3D takes the window's rows itself (its `context_window` transformer option)."""
    if _VIDEO_CLASSES:
        return _VIDEO_CLASSES["cross_attn"], _VIDEO_CLASSES["base_model"]
    import comfy.conds  # type: ignore
    import comfy.model_base  # type: ignore

    from ..samplers.conditioning import is_per_frame, rows_for_latent

    class VideoCrossAttn(comfy.conds.CONDCrossAttn):
        def __init__(self, cond, frames: int = 1, per_frame: bool | None = None):
            super().__init__(cond)
            self.frames = int(frames)
            self.per_frame = per_frame  # None: raw rows, not yet laid out for a batch

        def _copy_with(self, cond):
            return self.__class__(cond, self.frames, self.per_frame)

        def process_cond(self, batch_size, **kwargs):
            rows = rows_for_latent(self.cond, batch_size, self.frames)
            return self.__class__(rows, self.frames, is_per_frame(rows, batch_size, self.frames))

        def _as_per_frame(self):
            if self.per_frame or self.per_frame is None or self.frames == 1:
                return self
            return self.__class__(self.cond.repeat_interleave(self.frames, dim=0), self.frames, True)

        def _mixed(self, other) -> bool:
            return (isinstance(other, VideoCrossAttn) and other.frames == self.frames
                    and None not in (self.per_frame, other.per_frame) and self.per_frame != other.per_frame)

        def can_concat(self, other):
            if self._mixed(other):
                return comfy.conds.CONDCrossAttn.can_concat(self._as_per_frame(), other._as_per_frame())
            return super().can_concat(other)

        def concat(self, others):
            if any(self._mixed(o) for o in others):
                return comfy.conds.CONDCrossAttn.concat(self._as_per_frame(), [o._as_per_frame() for o in others])
            return super().concat(others)

        def window(self, window, batch: int, total_frames: int):
            """This conditioning for one of core's context windows (frames `window.get_tensor` picks, anchor frame
            included): per-frame rows sliced to the window's frames, per-video rows as they are."""
            picked = window.get_tensor(torch.arange(total_frames), dim=0)
            frames = int(picked.shape[0])
            rows = rows_for_latent(self.cond, batch, total_frames)
            if is_per_frame(rows, batch, total_frames):
                per_video = rows.reshape(batch, total_frames, *rows.shape[1:])
                rows = per_video[:, picked.to(rows.device)].reshape(batch * frames, *rows.shape[1:])
                return self.__class__(rows, frames, None)
            return self.__class__(self.cond, frames, None)

    class VideoBaseModel(comfy.model_base.BaseModel):
        def extra_conds(self, **kwargs):
            out = super().extra_conds(**kwargs)
            cross_attn = out.get("c_crossattn")
            noise = kwargs.get("noise")
            if cross_attn is not None and type(cross_attn) is comfy.conds.CONDCrossAttn:
                frames = noise.shape[2] if noise is not None and noise.ndim == 5 else 1
                out["c_crossattn"] = VideoCrossAttn(cross_attn.cond, frames)
            guidance = kwargs.get("guidance")
            if guidance is not None and getattr(self.diffusion_model, "time_cond_proj", None) is not None:
                # a guidance-embedding UNet (T2V-Turbo): core's FluxGuidance on the conditioning sets its w
                out["guidance"] = comfy.conds.CONDRegular(torch.FloatTensor([float(guidance)]))
            return out

        def resize_cond_for_context_window(self, cond_key, cond_value, window, x_in, device, retain_index_list=[]):
            if cond_key == "c_crossattn" and isinstance(cond_value, VideoCrossAttn) and x_in.ndim == 5 \
                    and getattr(window, "dim", 2) == 2:
                return cond_value.window(window, x_in.shape[0], x_in.shape[2])
            return super().resize_cond_for_context_window(cond_key, cond_value, window, x_in, device,
                                                          retain_index_list=retain_index_list)

    _VIDEO_CLASSES.update(cross_attn=VideoCrossAttn, base_model=VideoBaseModel)
    return VideoCrossAttn, VideoBaseModel


def _delta_adapter(delta: WeightDelta, label: str):
    """A ComfyUI weight adapter computing our delta when ComfyUI patches the weight (full load or lowvram)."""
    import comfy.weight_adapter  # type: ignore

    class CinematicDelta(comfy.weight_adapter.WeightAdapterBase):
        name = "cinematic_lora"

        def __init__(self):
            self.loaded_keys = set()
            self.weights = [t for t in (delta.up, delta.down, delta.diff) if t is not None]

        def calculate_weight(self, weight, key, strength, strength_model, offset, function,
                             intermediate_dtype=torch.float32, original_weight=None):
            d = delta.delta(weight.shape, weight.device, intermediate_dtype)
            weight += function((strength * d).to(weight.dtype))
            return weight

    return CinematicDelta()


def patcher_for(unet: VideoUNet):
    """This view's ModelPatcher (made once, kept on the view)."""
    if unet.comfy_patcher is not None:
        return unet.comfy_patcher
    if unet.parent is None:
        patcher = _root_patcher(unet.module)
    else:
        patcher = patcher_for(unet.parent).clone()
    for patches, strength, label in unet.own_weight_patches:
        adapters = {f"diffusion_model.{key}": _delta_adapter(delta, label) for key, delta in patches.items()}
        applied = patcher.add_patches(adapters, strength)
        missing = set(adapters) - set(applied)
        if missing:
            raise RuntimeError(f"{label}: ComfyUI did not accept {len(missing)} patched weights, e.g. "
                               f"{sorted(missing)[:3]}")
    if unet.own_options:
        options = patcher.model_options.setdefault("transformer_options", {})
        options.update(unet.own_options)
    unet.comfy_patcher = patcher
    return patcher


def _root_patcher(module, disable_dynamic=False):
    """A patcher around `module` as core's loaders make one: core's patcher class (the plain ModelPatcher when
    `disable_dynamic`), the DIFFUSION_MODEL wrapper executor as the UNet3D's forward runner, and the
    `cached_patcher_init` factory core uses to re-create the model (clone(force_deepcopy / disable_dynamic))."""
    import comfy.model_base  # type: ignore
    import comfy.model_management  # type: ignore
    import comfy.model_patcher  # type: ignore

    base = video_model_classes()[1](_model_config(module), comfy.model_base.ModelType.EPS,
                                    unet_model=lambda **_: module)
    cls = comfy.model_patcher.ModelPatcher if disable_dynamic else _patcher_class()
    patcher = cls(base, load_device=comfy.model_management.get_torch_device(),
                  offload_device=comfy.model_management.unet_offload_device())
    patcher.model_options.setdefault("transformer_options", {})[FORWARD_RUNNER] = _run_with_wrappers
    patcher.cached_patcher_init = (_fresh_patcher, (module,))
    return patcher


def as_comfy_model(unet: VideoUNet):
    """A MODEL for core nodes: a clone of the view's patcher, as core loader nodes return."""
    return patcher_for(unet).clone()


def load(unet: VideoUNet):
    """Put the view's model on the compute device for a run; returns the device. Inside ComfyUI: through its memory
    manager (shares VRAM with the graph's other models, may load partially); outside: `.to(device)`."""
    device = comfy_env.torch_device()
    if available():
        import comfy.model_management  # type: ignore

        comfy.model_management.load_models_gpu([patcher_for(unet)])
        return device
    unet.module.to(device)
    return device


def release(unet: VideoUNet):
    """After a run: outside ComfyUI back to the CPU; inside, ComfyUI's memory manager decides."""
    if not available():
        unet.module.to(comfy_env.offload_device())


def predict_uncond(model, uncond, x, sigma, model_options):
    """One more model pass on the negative conditioning, from a sampler's post-CFG function (self-attention guidance):
    core's batched conditioning call, so area/mask conds, ControlNets and wrappers apply as in the step itself."""
    import comfy.samplers  # type: ignore

    (out,) = comfy.samplers.calc_cond_batch(model, [uncond], x, sigma, model_options)
    return out
