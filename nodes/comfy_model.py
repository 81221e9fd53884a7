"""The UNet3D as a ComfyUI model: one ModelPatcher per view, owned by the view (no registry), built on first use.

Inside ComfyUI:
* the UNet3D is built with ComfyUI's cast-weight layers (`comfy.ops.disable_weight_init`), so ComfyUI's partial
  ("low VRAM") loading can leave any layer on the offload device and cast it on the fly;
* the view's ModelPatcher wraps a `comfy.model_base.BaseModel` whose diffusion model *is* our UNet3D (its forward
  takes ComfyUI's call signature and honours `transformer_options`), made with core's own patcher class
  (`CoreModelPatcher` where it exists, the plain `ModelPatcher` otherwise);
* a view's patcher is a clone of its parent's plus the view's own LoRA deltas (as weight adapters that compute the
  delta when ComfyUI patches the weight, lowvram included) and transformer options;
* `CinematicUNet3DToModel` returns a clone of it, with a model config core nodes can read (`model_channels`...).
Outside ComfyUI nothing here is used (`available()` is False) and the sampler patches weights itself.
"""

from __future__ import annotations

import torch

from ..model_loaders.video_unet import VideoUNet, WeightDelta
from . import comfy_env

LATENT_SCALE = 0.18215


def available() -> bool:
    return comfy_env.IN_COMFYUI


def unet_operations():
    """ComfyUI's cast-weight layer family inside ComfyUI, None (the pack's own) outside."""
    if not available():
        return None
    import comfy.ops  # type: ignore

    return comfy.ops.disable_weight_init


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

    return ModelScopeT2V(unet_config_of(module))


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
        import comfy.model_base  # type: ignore
        import comfy.model_management  # type: ignore

        module = unet.module
        base = comfy.model_base.BaseModel(_model_config(module), comfy.model_base.ModelType.EPS,
                                          unet_model=lambda **_: module)
        patcher = _patcher_class()(base, load_device=comfy.model_management.get_torch_device(),
                                   offload_device=comfy.model_management.unet_offload_device())
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
