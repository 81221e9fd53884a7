"""CinematicUNet3DToModel: the UNet3D as a ComfyUI MODEL, so the stock KSampler, SamplerCustomAdvanced and every
core sampler and scheduler drive it on 5-D video latents.

ComfyUI is imported lazily, inside the node function: outside ComfyUI the node exists (workflows still load) but
says plainly that it only works inside ComfyUI.
"""

from __future__ import annotations

LATENT_SCALE = 0.18215


def unet_to_comfy_model(unet):
    """Wrap a UNet3D into a ModelPatcher around a comfy.model_base.BaseModel (eps prediction, SD's scaled-linear
    0.00085-0.012 schedule, a 3-D latent format with the SD scale factor)."""
    import torch

    import comfy.latent_formats  # type: ignore
    import comfy.model_base  # type: ignore
    import comfy.model_management  # type: ignore
    import comfy.model_patcher  # type: ignore
    import comfy.supported_models_base  # type: ignore

    class VideoLatentFormat(comfy.latent_formats.LatentFormat):
        scale_factor = LATENT_SCALE
        latent_channels = 4
        latent_dimensions = 3

    class ModelScopeT2V(comfy.supported_models_base.BASE):
        unet_config = {}
        unet_extra_config = {}
        # ComfyUI's "linear" schedule is SD's scaled linear: linspace(sqrt(start), sqrt(end)) ** 2
        sampling_settings = {"beta_schedule": "linear", "linear_start": 0.00085, "linear_end": 0.012,
                             "timesteps": 1000}
        latent_format = VideoLatentFormat
        supported_inference_dtypes = [torch.float16, torch.bfloat16, torch.float32]
        memory_usage_factor = 2.0

    class ComfyUNet3D(torch.nn.Module):
        """ComfyUI's UNet call signature around our module."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        @property
        def dtype(self):
            return self.inner.dtype

        def forward(self, x, timesteps, context=None, control=None, transformer_options={}, **kwargs):
            if x.ndim != 5:
                raise ValueError("The text-to-video UNet3D needs a 5-D video latent from 'Empty Text-to-Video "
                                 f"Latent' or 'Text-to-Video VAE Encode', got shape {tuple(x.shape)}.")
            return self.inner(x, timesteps, context)

    config = ModelScopeT2V({})
    model = comfy.model_base.BaseModel(config, comfy.model_base.ModelType.EPS,
                                       unet_model=lambda **kwargs: ComfyUNet3D(unet))
    return comfy.model_patcher.ModelPatcher(model, load_device=comfy.model_management.get_torch_device(),
                                            offload_device=comfy.model_management.unet_offload_device())


class CinematicUNet3DToModel:
    DESCRIPTION = ("Turns the text-to-video UNet3D into a ComfyUI MODEL so the stock KSampler and the core samplers "
                   "and schedulers can drive it (use a 5-D latent from Empty Text-to-Video Latent). Inside ComfyUI only.")
    CATEGORY = "Cinematic/sampling"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "convert"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"unet": ("T2V_UNET3D", {"tooltip": "From Load Text-to-Video UNet3D or Checkpoint."})}}

    def convert(self, unet):
        try:
            import comfy.model_base  # type: ignore  # noqa: F401
        except ImportError:
            raise RuntimeError("UNet3D to MODEL only works inside ComfyUI (it hands the UNet3D to ComfyUI's own "
                               "samplers). Outside ComfyUI use the Text-to-Video Sampler node.") from None
        return (unet_to_comfy_model(unet),)


NODE_CLASS_MAPPINGS = {"CinematicUNet3DToModel": CinematicUNet3DToModel}
NODE_DISPLAY_NAME_MAPPINGS = {"CinematicUNet3DToModel": "UNet3D to MODEL (for KSampler)"}
