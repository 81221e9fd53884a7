"""T2V-Turbo through the bridge (COMFYUI_PATH): a list-format T2V-Turbo LoRA on the tiny UNet3D, `UNet3D to MODEL`,
core `ModelSamplingDiscrete` (lcm) and core KSampler (sampler lcm, cfg 1.0): 4 steps, one model call of batch 1
each; the w reaches the UNet (the view's 7.5, or core FluxGuidance's), equal to Cinematic's own sampler."""

import os

import pytest
import torch

from cinematic_testing.comfy_harness import call_node as _call, pack_module as _pack

COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
pytestmark = pytest.mark.skipif(not COMFYUI_PATH, reason="COMFYUI_PATH is not set: the integration suite needs a "
                                                          "ComfyUI checkout (see scripts/setup_comfyui.sh)")
FRAMES = 3


@pytest.fixture(scope="module")
def cui(tmp_path_factory):
    from cinematic_testing import tiny_unet
    from cinematic_testing.comfy_harness import ComfyHarness, place_models

    harness = ComfyHarness(COMFYUI_PATH, tmp_path_factory.mktemp("comfy_turbo"))
    place_models(harness.models)
    sd = tiny_unet.tiny_state_dict(seed=13)
    tiny_unet.write_original_safetensors(sd, harness.models / "diffusion_models" / "tiny_unet.safetensors")
    # a T2V-Turbo-style list: every layer of the UNet with a 256-wide guidance embedding, in diffusers' order
    lora_list = _pack(harness, "model_loaders.lora_list")
    unet_loader = _pack(harness, "model_loaders.unet_loader")
    module = unet_loader.unet_from_state_dict(sd, "fp32")
    shapes = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    layers = lora_list.layer_orders(module.config, shapes, None)[("all", lora_list.BLOCK_ORDERS[0], True)]
    gen = torch.Generator().manual_seed(14)
    tensors = []
    for layer in layers:
        shape = shapes.get(layer.key, (module.config.model_channels, 256))
        r = min(4, shape[0], shape[1])
        kernel = shape[2:] if len(shape) in (4, 5) else ()
        tensors += [0.05 * torch.randn(shape[0], r, *([1] * len(kernel)), generator=gen),
                    0.05 * torch.randn(r, shape[1], *kernel, generator=gen)]
    (harness.models / "loras").mkdir(exist_ok=True)
    torch.save(tensors, harness.models / "loras" / "turbo_unet_lora.pt")
    return harness


def _cond(seed):
    gen = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, 77, 1024, generator=gen), {"pooled_output": torch.zeros(1, 1024)}]]


def _turbo(harness):
    (unet,) = _call(harness, "CinematicUNet3DLoader", unet_name="tiny_unet.safetensors", weight_dtype="fp32")
    (view,) = _call(harness, "CinematicLoraLoader", unet=unet, lora_name="turbo_unet_lora.pt", strength=1.0)
    assert view.guidance_embedded
    return view


def _ksampler(harness, view, steps, positive):
    (model,) = _call(harness, "CinematicUNet3DToModel", unet=view)
    (model,) = _call(harness, "ModelSamplingDiscrete", model=model, sampling="lcm", zsnr=False)
    calls = []
    module = view.module
    original = module.forward

    def counting(x, *args, **kwargs):
        calls.append(tuple(x.shape))
        return original(x, *args, **kwargs)

    module.forward = counting
    try:
        (out,) = _call(harness, "KSampler", model=model, seed=7, steps=steps, cfg=1.0, sampler_name="lcm",
                       scheduler="simple", positive=positive, negative=_cond(2),
                       latent_image={"samples": torch.zeros(1, 4, FRAMES, 8, 8)}, denoise=1.0)
    finally:
        del module.forward
    return out["samples"], calls


def _ours(harness, view, cfg):
    (out,) = _call(harness, "CinematicSampler", unet=view, positive=_cond(1), negative=_cond(2),
                   latent={"samples": torch.zeros(1, 4, FRAMES, 8, 8)}, seed=7, steps=1, cfg=cfg,
                   sampler_name="lcm", scheduler="lcm", denoise=1.0)
    return out["samples"]


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def test_turbo_view_four_steps_one_model_call_each(cui):
    samples, calls = _ksampler(cui, _turbo(cui), 4, _cond(1))
    assert len(calls) == 4 and all(shape[0] == 1 for shape in calls), calls
    assert torch.isfinite(samples).all()


def test_w_reaches_the_unet_through_the_bridge(cui):
    """One step has no noise after it: core's result equals Cinematic's sampler with cfg = the w the view carries
    (7.5), and core FluxGuidance's w when it is set."""
    view = _turbo(cui)
    core, calls = _ksampler(cui, view, 1, _cond(1))
    assert len(calls) == 1
    assert _rel(core, _ours(cui, view, 7.5)) <= 1e-4
    (positive,) = _call(cui, "FluxGuidance", conditioning=_cond(1), guidance=3.0)
    core_w3, _ = _ksampler(cui, view, 1, positive)
    assert _rel(core_w3, _ours(cui, view, 3.0)) <= 1e-4
    assert _rel(core_w3, core) > 1e-3
