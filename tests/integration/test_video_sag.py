"""CinematicSelfAttentionGuidance (nodes/video_sag.py) inside real ComfyUI (COMFYUI_PATH), on the tiny UNet3D the
core-node table uses: it changes core KSampler's output, equals plain KSampler at scale 0, makes one extra UNet pass
per step; and its per-frame map and blur give core SAG's own numbers (comfy_extras/nodes_sag.py) frame by frame."""

import os

import pytest
import torch

from cinematic_testing.comfy_harness import random_cond as _cond, rel_l2 as _rel

COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
pytestmark = pytest.mark.skipif(not COMFYUI_PATH, reason="COMFYUI_PATH is not set: the integration suite needs a "
                                                          "ComfyUI checkout (see scripts/setup_comfyui.sh)")
FRAMES, STEPS = 6, 3


@pytest.fixture(scope="module")
def cui(tmp_path_factory):
    from cinematic_testing.comfy_harness import harness_with_unet

    return harness_with_unet(COMFYUI_PATH, tmp_path_factory.mktemp("comfy_sag"), "sag_unet.safetensors")


@pytest.fixture(scope="module")
def sampled(cui):
    """Plain KSampler and the node at scale 0.5 / 0, with the UNet3D's computations counted per run."""
    from cinematic_testing.comfy_harness import call_node

    (unet,) = call_node(cui, "CinematicUNet3DLoader", unet_name="sag_unet.safetensors", weight_dtype="fp32")
    (model,) = call_node(cui, "CinematicUNet3DToModel", unet=unet)
    calls = []
    unet.module.input_blocks[0].register_forward_pre_hook(lambda module, args: calls.append(1))

    def sample(m):
        calls.clear()
        (out,) = call_node(cui, "KSampler", model=m, seed=3, steps=STEPS, cfg=5.0, sampler_name="euler",
                           scheduler="normal", positive=_cond(1), negative=_cond(2), denoise=1.0,
                           latent_image={"samples": torch.zeros(1, 4, FRAMES, 8, 8)})
        return out["samples"], len(calls)

    results = {"plain": sample(model)}
    for scale in (0.5, 0.0):
        (sag,) = call_node(cui, "CinematicSelfAttentionGuidance", model=model, scale=scale, blur_sigma=2.0)
        results[scale] = sample(sag)
    (no_blur,) = call_node(cui, "CinematicSelfAttentionGuidance", model=model, scale=0.5, blur_sigma=0.0)
    results["no_blur"] = sample(no_blur)
    results["after"] = sample(model)
    return results


def test_sag_changes_the_output(sampled):
    out, _ = sampled[0.5]
    assert torch.isfinite(out).all()
    print(f"\nSAG 0.5 vs plain: rel {_rel(out, sampled['plain'][0]):.3g}; scale 0: rel "
          f"{_rel(sampled[0.0][0], sampled['plain'][0]):.3g}; UNet3D calls {sampled[0.5][1]} vs {sampled['plain'][1]}; "
          f"blur_sigma 0 vs plain: rel "
          f"{_rel(sampled['no_blur'][0], sampled['plain'][0]):.3g}")
    assert _rel(out, sampled["plain"][0]) > 1e-3, _rel(out, sampled["plain"][0])


def test_with_nothing_blurred_the_extra_pass_reproduces_the_negative_prediction(sampled):
    """blur_sigma 0: the re-noised prediction is the step's own input, so the extra pass on the negative prompt returns
    its prediction again and the guidance term vanishes (the output above differs only through the blurred mask)."""
    assert _rel(sampled["no_blur"][0], sampled["plain"][0]) <= 1e-5, _rel(sampled["no_blur"][0], sampled["plain"][0])


def test_sag_at_scale_zero_is_plain_ksampler(sampled):
    assert _rel(sampled[0.0][0], sampled["plain"][0]) <= 1e-5, _rel(sampled[0.0][0], sampled["plain"][0])


def test_one_extra_unet_pass_per_step_and_the_input_model_is_untouched(sampled):
    assert sampled["plain"][1] == STEPS  # cond and uncond batched: one call per step
    assert sampled[0.5][1] == 2 * STEPS
    assert torch.equal(sampled["after"][0], sampled["plain"][0])


def test_map_and_blur_match_core_sag_frame_by_frame(cui):
    """Each frame of a video is an image to core's create_blur_map: the same mask and blur, from the same q/k."""
    from comfy_extras import nodes_sag

    from cinematic.samplers.sag_blur import adversarial_blur, received_attention

    gen = torch.Generator().manual_seed(7)
    videos, frames, heads, grid = 2, 3, 4, (4, 4)
    rows, tokens = videos * frames, grid[0] * grid[1]
    q = torch.randn(rows, tokens, heads * 16, generator=gen) * 2
    k = torch.randn(rows, tokens, heads * 16, generator=gen) * 2
    x0 = torch.randn(videos, 4, frames, 16, 16, generator=gen)
    _, sim = nodes_sag.attention_basic_with_sim(q, k, k, heads=heads)
    images = x0.transpose(1, 2).reshape(rows, 4, 16, 16)
    core = nodes_sag.create_blur_map(images, sim, sigma=2.0, threshold=1.0)
    ours = adversarial_blur(x0, received_attention(q, k, heads), grid, 2.0, 1.0)
    assert not torch.equal(core, images)  # the mask is on somewhere
    torch.testing.assert_close(ours.transpose(1, 2).reshape(rows, 4, 16, 16), core, atol=1e-5, rtol=1e-5)


def test_context_windows_are_refused_with_a_message(cui):
    """Core Context Windows (Manual) runs each window as its own model call: the map then covers one window's frames,
    not the clip's, and the node says so instead of blurring the wrong frames."""
    from cinematic_testing.comfy_harness import call_node

    (unet,) = call_node(cui, "CinematicUNet3DLoader", unet_name="sag_unet.safetensors", weight_dtype="fp32")
    (model,) = call_node(cui, "CinematicUNet3DToModel", unet=unet)
    windows = dict(context_length=4, context_overlap=1, context_schedule="standard_static", context_stride=1,
                   closed_loop=False, fuse_method="pyramid", dim=2, freenoise=False)
    known = {spec.id for spec in cui.nodes.NODE_CLASS_MAPPINGS["ContextWindowsManual"].define_schema().inputs}
    (windowed,) = call_node(cui, "ContextWindowsManual", model=model,
                            **{k: v for k, v in windows.items() if k in known})  # freenoise: 0.33 only
    (sag,) = call_node(cui, "CinematicSelfAttentionGuidance", model=windowed, scale=0.5, blur_sigma=2.0)
    with pytest.raises(RuntimeError, match="whole clip in one model call"):
        call_node(cui, "KSampler", model=sag, seed=3, steps=1, cfg=5.0, sampler_name="euler", scheduler="normal",
                  positive=_cond(1), negative=_cond(2), denoise=1.0,
                  latent_image={"samples": torch.zeros(1, 4, FRAMES, 8, 8)})
