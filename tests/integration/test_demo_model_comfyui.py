"""The built-in demo model inside a real ComfyUI (COMFYUI_PATH): the checkpoint loader lists it, the example workflow
makes the prompt's video through ComfyUI's executor, and core KSampler drives it through the bridge. What comes out
is judged in the frames (scripts/demo_data.py), not compared with numbers."""

import json
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from cinematic_testing.comfy_harness import call_node

import demo_data

COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
pytestmark = pytest.mark.skipif(not COMFYUI_PATH, reason="COMFYUI_PATH is not set: the integration suite needs a "
                                                          "ComfyUI checkout (see scripts/setup_comfyui.sh)")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cui(tmp_path_factory):
    from cinematic_testing.comfy_harness import ComfyHarness

    return ComfyHarness(COMFYUI_PATH, tmp_path_factory.mktemp("comfy_demo"))  # one per process: maybe with models


def _name(cui):
    from cinematic_testing.comfy_harness import pack_module

    return pack_module(cui, "model_loaders.builtin_demo").NAME


def test_checkpoint_loader_lists_the_builtin_entry_last(cui):
    names = cui.nodes.NODE_CLASS_MAPPINGS["CinematicCheckpointLoader"].INPUT_TYPES()["required"]["model_name"][0]
    assert names[-1] == _name(cui) and names.count(_name(cui)) == 1  # installed models come first: the default pick


def test_example_workflow_makes_a_moving_red_circle(cui):
    from cinematic_testing.comfy_harness import ui_to_api

    from cinematic.nodes.video_reader import read_video_frames

    workflow = json.loads((ROOT / "example_workflows" / "demo_model.json").read_text())
    before = set(cui.output.rglob("demo_model*.mp4"))
    executor = cui.run(ui_to_api(workflow, cui.nodes.NODE_CLASS_MAPPINGS))
    assert executor.success, executor.status_messages
    (video,) = set(cui.output.rglob("demo_model*.mp4")) - before
    frames = read_video_frames(video)  # [16, 256, 256, 3]: the workflow scales 64 -> 256 (nearest)
    assert frames.shape == (16, 256, 256, 3)
    small = F.interpolate(frames.permute(0, 3, 1, 2), size=(64, 64), mode="area").permute(0, 2, 3, 1)
    result = demo_data.judge_video(small, demo_data.Combo("circle", "red", "right"))
    assert result["colour_ok"] and result["coherent"] >= 0.9 and result["direction"] != "still", result


def test_core_ksampler_through_the_bridge_gives_the_prompt_colour(cui):
    unet, text, vae = call_node(cui, "CinematicCheckpointLoader", model_name=_name(cui), weight_dtype="fp32")
    (model,) = call_node(cui, "CinematicUNet3DToModel", unet=unet)
    combos = [demo_data.Combo("circle", "red", "right"), demo_data.Combo("square", "blue", "down")]
    cond, pooled = text.encode([c.prompt() for c in combos])
    (negative,) = call_node(cui, "CinematicTextEncode", text_encoder=text, text="")
    (latent,) = call_node(cui, "CinematicEmptyVideoLatent", width=64, height=64, frames=16, batch_size=2)
    (latent,) = call_node(cui, "KSampler", model=model, seed=3, steps=20, cfg=9.0, sampler_name="euler",
                          scheduler="normal", positive=[[cond, {"pooled_output": pooled}]], negative=negative,
                          latent_image=latent, denoise=1.0)
    (images,) = call_node(cui, "CinematicVAEDecode", vae=vae, latent=latent)
    videos = ((images * 255).round() / 255).reshape(2, 16, 64, 64, 3)
    results = [demo_data.judge_video(v, c) for v, c in zip(videos, combos)]
    assert [r["colour"] for r in results] == ["red", "blue"], results
    assert torch.isfinite(images).all()
