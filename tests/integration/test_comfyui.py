"""The pack inside a real ComfyUI (COMFYUI_PATH), run the way a user installs it: the pack's folder in
custom_nodes/, ComfyUI's own start-up, ComfyUI's real validator and executor, tiny random-weight models in ComfyUI's
models folders under the names the example workflows use.

    COMFYUI_PATH=/path/to/ComfyUI bash scripts/setup_comfyui.sh
    COMFYUI_PATH=/path/to/ComfyUI $COMFYUI_PATH/venv/bin/python -m pytest -q tests/integration
"""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
pytestmark = pytest.mark.skipif(not COMFYUI_PATH, reason="COMFYUI_PATH is not set: the integration suite needs a "
                                                          "ComfyUI checkout (see scripts/setup_comfyui.sh)")
ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / "example_workflows").glob("*.json"))
FAST = {  # smaller sizes than the shared workflows, so the tiny models run in seconds
    "CinematicEmptyVideoLatent": {"width": 64, "height": 64, "frames": 3},
    "CinematicSampler": {"steps": 3},
    "KSampler": {"steps": 3},
    "ImageScale": {"width": 64, "height": 64},
    "CinematicPromptSchedule": {"frames": 3},  # the latent's frames
    "CinematicContextOptions": {"context_length": 2, "context_overlap": 1},  # still windows on 3 frames
    "CinematicImageToVideoLatent": {"frames": 3},
    "CinematicExtendVideo": {"frames": 3, "overlap": 1},
    "CinematicJoinVideos": {"overlap": 1},
    "TrainLoraNode": {"steps": 2, "training_dtype": "fp32", "lora_dtype": "fp32", "gradient_checkpointing": False},
}
FRAMES_WRITTEN = {"extend_video": 3 + 3 - 1}  # else 3


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    from cinematic_testing.comfy_harness import ComfyHarness, place_models

    harness = ComfyHarness(COMFYUI_PATH, tmp_path_factory.mktemp("comfy_base"))
    place_models(harness.models)
    _example_image(harness.base / "input" / "example.png")  # what LoadImage in the example workflows opens
    return harness


def _example_image(path: Path):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = (torch.rand(96, 128, 3, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8).numpy()
    Image.fromarray(pixels).save(path)


def _videos(output: Path):
    return sorted(p for p in output.rglob("*") if p.suffix in (".mp4", ".webm", ".gif", ".webp"))


def test_pack_imports_cleanly(harness):
    ours = [line for line in harness.log.lines if "Cinematic" in line]
    assert not [line for line in ours if "IMPORT FAILED" in line or "Cannot import" in line], ours
    assert any("ComfyUI-Cinematic" in str(p) for p in harness.nodes.LOADED_MODULE_DIRS.values())


def test_every_contract_node_is_registered(harness):
    from cinematic_testing.contract import CONTRACT_INPUTS

    for node_id, names in CONTRACT_INPUTS.items():
        cls = harness.nodes.NODE_CLASS_MAPPINGS[node_id]
        assert list(cls.INPUT_TYPES()["required"]) == names
    # the text2video folder is registered and lists the model folders
    assert "text-to-video-ms-1.7b" in harness.nodes.NODE_CLASS_MAPPINGS["CinematicCheckpointLoader"].INPUT_TYPES()[
        "required"]["model_name"][0]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_example_workflow_executes(harness, path):
    from cinematic_testing.comfy_harness import ui_to_api

    if path.stem == "train_motion_lora":
        from cinematic_testing.comfy_harness import write_motion_gif

        trainer = harness.nodes.NODE_CLASS_MAPPINGS["TrainLoraNode"]
        if list(trainer.RETURN_TYPES)[:1] != ["LORA_MODEL"]:
            pytest.skip("the workflow has 0.33's TrainLoraNode (outputs LORA_MODEL first; v0.3.64's returned the MODEL "
                        "first, with other widgets): training on v0.3.64 is tested in test_training_comfyui.py")
        write_motion_gif(harness.base / "input" / "motion_clip.gif", 3)
    prompt = ui_to_api(json.loads(path.read_text()), harness.nodes.NODE_CLASS_MAPPINGS, FAST)
    before = set(_videos(harness.output))
    executor = harness.run(prompt)
    assert executor.success, executor.status_messages
    new = [p for p in _videos(harness.output) if p not in before]
    assert len(new) == 1, new
    executed = [d for e, d in harness.server.messages if e == "executed"]
    assert any(d.get("output", {}).get("animated") for d in executed) or executed == []
    import imageio_ffmpeg

    if new[0].suffix in (".mp4", ".webm"):
        assert imageio_ffmpeg.count_frames_and_secs(str(new[0]))[0] == FRAMES_WRITTEN.get(path.stem, 3)


def _t2v_prompt(steps, seed=0, extra=None):
    prompt = {
        "1": {"class_type": "CinematicCheckpointLoader", "inputs": {"model_name": "text-to-video-ms-1.7b",
                                                                    "weight_dtype": "default"}},
        "2": {"class_type": "CinematicTextEncode", "inputs": {"text_encoder": ["1", 1], "text": "a panda"}},
        "3": {"class_type": "CinematicTextEncode", "inputs": {"text_encoder": ["1", 1], "text": ""}},
        "4": {"class_type": "CinematicEmptyVideoLatent", "inputs": {"width": 64, "height": 64, "frames": 3,
                                                                    "batch_size": 1}},
        "5": {"class_type": "CinematicSampler", "inputs": {"unet": ["1", 0], "positive": ["2", 0], "negative": ["3", 0],
                                                           "latent": ["4", 0], "seed": seed, "steps": steps, "cfg": 5.0,
                                                           "sampler_name": "ddim", "scheduler": "ddim_uniform",
                                                           "denoise": 1.0}},
        "6": {"class_type": "CinematicVAEDecode", "inputs": {"vae": ["1", 2], "latent": ["5", 0],
                                                             "frames_per_batch": 8}},
        "7": {"class_type": "CinematicSaveVideo", "inputs": {"images": ["6", 0], "fps": 8.0,
                                                             "filename_prefix": "Cinematic/cancel", "format": "mp4"}},
    }
    prompt.update(extra or {})
    return prompt


def test_cancel_during_sampling_stops_within_one_step(harness):
    import comfy.model_management as mm
    import comfy.utils

    seen = []

    def hook(value, total, preview, *args, **kwargs):
        seen.append(value)
        if value == 2 and total == 20:
            mm.interrupt_current_processing(True)

    before = set(p for p in harness.output.rglob("*"))
    comfy.utils.set_progress_bar_global_hook(hook)
    try:
        executor = harness.run(_t2v_prompt(steps=20, seed=11))
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
    events = [e for e, _ in harness.server.messages]
    assert "execution_interrupted" in events, events
    sampling_steps = [v for v in seen if v <= 20]
    assert max(sampling_steps) <= 3, seen  # interrupted at step 2: at most one more step ran
    assert set(p for p in harness.output.rglob("*")) == before  # no video, no partial file


def test_unet_is_loaded_through_model_management(harness):
    import comfy.model_management as mm

    executor = harness.run(_t2v_prompt(steps=2, seed=12))
    assert executor.success, executor.status_messages
    # the view's ModelPatcher wraps a core BaseModel whose diffusion model is the UNet3D itself
    models = [m.model.model for m in mm.current_loaded_models if m.model is not None]
    loaded = [type(getattr(m, "diffusion_model", m)).__name__ for m in models]
    assert "UNet3D" in loaded, loaded


def _bridge(sampler_name, scheduler, steps, seed):
    """UNet3D -> MODEL -> core KSampler -> our decode and save, beside the _t2v_prompt graph (node ids 10-13)."""
    return {
        "10": {"class_type": "CinematicUNet3DToModel", "inputs": {"unet": ["1", 0]}},
        "11": {"class_type": "KSampler", "inputs": {"model": ["10", 0], "seed": seed, "steps": steps, "cfg": 5.0,
                                                    "sampler_name": sampler_name, "scheduler": scheduler,
                                                    "positive": ["2", 0], "negative": ["3", 0],
                                                    "latent_image": ["4", 0], "denoise": 1.0}},
        "12": {"class_type": "CinematicVAEDecode", "inputs": {"vae": ["1", 2], "latent": ["11", 0],
                                                              "frames_per_batch": 8}},
        "13": {"class_type": "CinematicSaveVideo", "inputs": {"images": ["12", 0], "fps": 8.0,
                                                              "filename_prefix": f"Cinematic/{sampler_name}",
                                                              "format": "mp4"}},
    }


def test_ksampler_bridge_matches_cinematic_sampler(harness):
    bridge = _bridge("ddim", "ddim_uniform", steps=10, seed=5)
    prompt = _t2v_prompt(steps=10, seed=5, extra=bridge)
    executor = harness.run(prompt)
    assert executor.success, executor.status_messages
    ours = harness.output_of(executor, "5")[0][0]["samples"]
    theirs = harness.output_of(executor, "11")[0][0]["samples"]
    assert ours.shape == theirs.shape == (1, 4, 3, 8, 8)
    rel = ((ours - theirs).abs().max() / theirs.abs().max()).item()
    print(f"KSampler(ddim, ddim_uniform) vs CinematicSampler: max relative difference {rel:.2e}")
    # ComfyUI starts a schedule that does not begin at sigma_max from noise * sigma, we (like the original) from
    # x_vp = noise, i.e. noise * sqrt(1 + sigma^2): a 0.2% difference in the start that carries to the end.
    assert rel < 1e-2


def test_ksampler_dpmpp_2m_karras_runs(harness):
    bridge = _bridge("dpmpp_2m", "karras", steps=4, seed=1)
    prompt = _t2v_prompt(steps=2, seed=1, extra=bridge)
    executor = harness.run(prompt)
    assert executor.success, executor.status_messages
    samples = harness.output_of(executor, "11")[0][0]["samples"]
    assert torch.isfinite(samples).all()


@pytest.mark.parametrize("prefix", ["", ".", "sub/..", "../x", "ABSOLUTE", "ok/./x"])
def test_save_prefix_never_leaves_the_output_folder(harness, prefix):
    """ComfyUI's own get_save_image_path lets "" and "." through (to a hidden "._00001_" file, or with our old
    fallback the parent folder); the node refuses every prefix without a file name or outside the output folder."""
    node = harness.nodes.NODE_CLASS_MAPPINGS["CinematicSaveVideo"]()
    base = harness.output.parent
    prefix = str(base / "abs" / "x") if prefix == "ABSOLUTE" else prefix
    before = {p for p in base.rglob("*") if not p.is_dir()}
    try:
        result = node.save(torch.rand(3, 16, 16, 3), 8.0, prefix, "gif")
    except Exception as exc:  # refused: named, and nothing written anywhere
        assert "filename_prefix" in str(exc)
        assert {p for p in base.rglob("*") if not p.is_dir()} == before
        assert prefix != "ok/./x", exc
        return
    entry = result["ui"]["images"][0]
    path = (harness.output / entry["subfolder"] / entry["filename"]).resolve()
    assert path.is_file() and harness.output.resolve() in path.parents
    assert {p.resolve() for p in base.rglob("*") if not p.is_dir()} - {p.resolve() for p in before} == {path}
    assert prefix == "ok/./x" and entry["subfolder"] == "ok" and not entry["filename"].startswith(".")
    path.unlink()


@pytest.mark.parametrize("fmt", ["gif", "webp", "mp4"])
def test_cancel_stops_save_video_and_leaves_no_file(harness, fmt):
    import comfy.model_management as mm

    node = harness.nodes.NODE_CLASS_MAPPINGS["CinematicSaveVideo"]()
    before = {p for p in harness.output.rglob("*") if not p.is_dir()}  # (ComfyUI itself makes the subfolder)
    mm.interrupt_current_processing(True)  # Cancel pressed
    try:
        with pytest.raises(mm.InterruptProcessingException):
            node.save(torch.rand(6, 16, 16, 3), 8.0, "Cinematic/cancelled", fmt)
    finally:
        mm.interrupt_current_processing(False)
    assert {p for p in harness.output.rglob("*") if not p.is_dir()} == before
