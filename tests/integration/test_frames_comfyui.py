"""Frames you give it, inside a real ComfyUI (COMFYUI_PATH): the pack's image-to-video latent through the bridge and
core KSampler / KSamplerAdvanced, core SetLatentNoiseMask with a per-frame MASK, core DifferentialDiffusion (the same
rule as the pack's sampler, compared number by number), and core's frame-axis latent nodes on the 5-D latent.

Core nodes are called the way ComfyUI calls them (V1: the FUNCTION method; V3: the `execute` classmethod)."""

import os

import pytest
import torch

from cinematic_testing.comfy_harness import call_node as _call

COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
pytestmark = pytest.mark.skipif(not COMFYUI_PATH, reason="COMFYUI_PATH is not set: the integration suite needs a "
                                                          "ComfyUI checkout (see scripts/setup_comfyui.sh)")
FRAMES = 5


@pytest.fixture(scope="module")
def cui(tmp_path_factory):
    from cinematic_testing.comfy_harness import ComfyHarness, place_models

    harness = ComfyHarness(COMFYUI_PATH, tmp_path_factory.mktemp("comfy_frames"))
    place_models(harness.models)
    return harness


@pytest.fixture(scope="module")
def models(cui):
    return _call(cui, "CinematicCheckpointLoader", model_name="text-to-video-ms-1.7b", weight_dtype="fp32")


def _has(harness, node_id):
    return node_id in harness.nodes.NODE_CLASS_MAPPINGS


def _cond(seed):
    gen = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, 77, 1024, generator=gen), {"pooled_output": torch.zeros(1, 1024)}]]


def _image(seed=0, size=32):
    return torch.rand(1, size, size, 3, generator=torch.Generator().manual_seed(seed))


def _ksampler(harness, model, latent, seed=3, steps=4, sampler="euler", scheduler="simple"):
    (out,) = _call(harness, "KSampler", model=model, seed=seed, steps=steps, cfg=5.0, sampler_name=sampler,
                   scheduler=scheduler, positive=_cond(1), negative=_cond(2), latent_image=latent, denoise=1.0)
    return out["samples"]


def _ours(harness, unet, latent, seed=3, steps=4, sampler="euler", scheduler="simple"):
    (out,) = _call(harness, "CinematicSampler", unet=unet, positive=_cond(1), negative=_cond(2), latent=latent,
                   seed=seed, steps=steps, cfg=5.0, sampler_name=sampler, scheduler=scheduler, denoise=1.0)
    return out["samples"]


def _source(seed=4):
    return torch.randn(1, 4, FRAMES, 4, 4, generator=torch.Generator().manual_seed(seed)) * 3


def test_ksampler_keeps_the_image_to_video_keyframes(cui, models):
    unet, _, vae = models
    (latent,) = _call(cui, "CinematicImageToVideoLatent", vae=vae, images=_image(), frames=FRAMES, keyframes="0,-1",
                      strength=1.0)
    (model,) = _call(cui, "CinematicUNet3DToModel", unet=unet)
    for sampler, scheduler in (("euler", "normal"), ("dpmpp_2m", "karras")):
        out = _ksampler(cui, model, latent, sampler=sampler, scheduler=scheduler)
        for frame in (0, FRAMES - 1):
            assert (out[:, :, frame] - latent["samples"][:, :, frame]).abs().max().item() <= 1e-5
        assert (out[:, :, 1:-1] - latent["samples"][:, :, 1:-1]).abs().min().item() > 1e-3
    (advanced,) = _call(cui, "KSamplerAdvanced", model=model, add_noise="enable", noise_seed=3, steps=4, cfg=5.0,
                        sampler_name="euler", scheduler="simple", positive=_cond(1), negative=_cond(2),
                        latent_image=latent, start_at_step=0, end_at_step=10000, return_with_leftover_noise="disable")
    assert (advanced["samples"][:, :, 0] - latent["samples"][:, :, 0]).abs().max().item() <= 1e-5
    # and the pack's own sampler keeps the same frames the same way
    ours = _ours(cui, unet, latent, scheduler="simple")
    assert (ours[:, :, 0] - latent["samples"][:, :, 0]).abs().max().item() <= 1e-5


def test_set_latent_noise_mask_per_frame(cui, models):
    unet, _, _ = models
    mask = torch.ones(FRAMES, 32, 32)  # a core MASK batch: one mask per frame, at pixel size
    mask[1] = 0
    (latent,) = _call(cui, "SetLatentNoiseMask", samples={"samples": _source()}, mask=mask)
    (model,) = _call(cui, "CinematicUNet3DToModel", unet=unet)
    out = _ksampler(cui, model, latent)
    assert (out[:, :, 1] - _source()[:, :, 1]).abs().max().item() <= 1e-5
    assert (out[:, :, [0, 2, 3, 4]] - _source()[:, :, [0, 2, 3, 4]]).abs().min().item() > 1e-3
    ours = _ours(cui, unet, latent)  # the same LATENT (core's mask layout) through the pack's sampler
    assert (ours[:, :, 1] - _source()[:, :, 1]).abs().max().item() <= 1e-5
    assert ((ours - out).abs().max() / out.abs().max()).item() <= 1e-4


def test_differential_diffusion_follows_the_same_rule_as_the_pack(cui, models):
    """Soft per-frame masks: core DifferentialDiffusion + KSampler and the pack's sampler switch each frame from kept
    to generated at the same step, so they agree number by number."""
    unet, _, _ = models
    mask = torch.tensor([0.0, 0.3, 0.55, 0.8, 1.0]).reshape(1, 1, FRAMES, 1, 1).expand(1, 1, FRAMES, 4, 4)
    latent = {"samples": _source(), "noise_mask": mask.contiguous()}
    (model,) = _call(cui, "CinematicUNet3DToModel", unet=unet)
    (dd,) = _call(cui, "DifferentialDiffusion", model=model)
    core = _ksampler(cui, dd, latent, steps=8)
    ours = _ours(cui, unet, latent, steps=8)
    assert (core[:, :, 0] - _source()[:, :, 0]).abs().max().item() <= 1e-5
    assert ((ours - core).abs().max() / core.abs().max()).item() <= 1e-4
    # without DifferentialDiffusion core blends soft masks instead (a different result): the rule really mattered
    assert ((_ksampler(cui, model, latent, steps=8) - core).abs().max() / core.abs().max()).item() > 1e-3


def test_core_latent_nodes_on_the_frame_axis(cui, models):
    a, b = _source(1), _source(2)
    (joined,) = _call(cui, "LatentConcat", samples1={"samples": a}, samples2={"samples": b}, dim="t")
    assert torch.equal(joined["samples"], torch.cat([a, b], dim=2))
    (cut,) = _call(cui, "LatentCut", samples=joined, dim="t", index=FRAMES - 2, amount=4)
    assert torch.equal(cut["samples"], torch.cat([a, b], dim=2)[:, :, FRAMES - 2:FRAMES + 2])
    # Extend Video + Join Videos agree with core's cut and concat of the same frames
    (extended,) = _call(cui, "CinematicExtendVideo", latent={"samples": a}, frames=FRAMES, overlap=2)
    (tail,) = _call(cui, "LatentCut", samples={"samples": a}, dim="t", index=-2, amount=2)
    assert torch.equal(extended["samples"][:, :, :2], tail["samples"])
    (ours,) = _call(cui, "CinematicJoinVideos", first={"samples": a}, second={"samples": b}, overlap=2)
    (rest,) = _call(cui, "LatentCut", samples={"samples": b}, dim="t", index=2, amount=FRAMES)
    (theirs,) = _call(cui, "LatentConcat", samples1={"samples": a}, samples2=rest, dim="t")
    assert torch.equal(ours["samples"], theirs["samples"])
    if not _has(cui, "ReplaceVideoLatentFrames"):
        pytest.skip("this ComfyUI has no ReplaceVideoLatentFrames (added after v0.3.64)")
    (replaced,) = _call(cui, "ReplaceVideoLatentFrames", destination={"samples": a}, source={"samples": b[:, :, :2]},
                        index=1)
    expected = a.clone()
    expected[:, :, 1:3] = b[:, :, :2]
    assert torch.equal(replaced["samples"], expected)
