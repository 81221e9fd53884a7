"""Per-frame CONDITIONING (prompt travel) through the bridge inside real ComfyUI (COMFYUI_PATH): core KSampler on the
MODEL from CinematicUNet3DToModel conditions each frame on its own row, also under core Context Windows (Manual) on
the frame axis (dim 2), which must hand each window the rows of its own frames.

The check that a row reaches its frame: with the temporal layers off (Cinematic's temporal strength 0, the
original's image mode) the frames are independent, so frame k of a run on per-frame rows equals frame k of a run
conditioned on row k alone (same seed, same latent shape, so the same noise).
"""

import inspect
import os
from pathlib import Path

import pytest
import torch

COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
pytestmark = pytest.mark.skipif(not COMFYUI_PATH, reason="COMFYUI_PATH is not set: the integration suite needs a "
                                                          "ComfyUI checkout (see scripts/setup_comfyui.sh)")
FRAMES = 7
TOL = 1e-5


@pytest.fixture(scope="module")
def comfy(tmp_path_factory):
    from cinematic_testing import tiny_unet
    from cinematic_testing.comfy_harness import ComfyHarness

    harness = ComfyHarness(COMFYUI_PATH, tmp_path_factory.mktemp("comfy_long"))
    # into the folder ComfyUI actually searches (another harness in this process may have set the base directory)
    folder = Path(harness.folder_paths.get_folder_paths("diffusion_models")[0])
    tiny_unet.write_original_safetensors(tiny_unet.tiny_state_dict(seed=13), folder / "tiny_long_clips.safetensors")
    return harness


def _call(harness, node_id, **inputs):
    cls = harness.nodes.NODE_CLASS_MAPPINGS[node_id]
    if hasattr(cls, "define_schema"):  # V3 node: pass only what this ComfyUI version's node takes
        accepted = inspect.signature(cls.execute).parameters
        out = cls.execute(**{k: v for k, v in inputs.items() if k in accepted})
        return tuple(out.args) if hasattr(out, "args") else tuple(out)
    return tuple(getattr(cls(), cls.FUNCTION)(**inputs))


def _model(harness, temporal=1.0):
    (unet,) = _call(harness, "CinematicUNet3DLoader", unet_name="tiny_long_clips.safetensors", weight_dtype="fp32")
    if temporal != 1.0:
        (unet,) = _call(harness, "CinematicTemporalStrength", unet=unet, attention_strength=temporal,
                        conv_strength=temporal)
    (model,) = _call(harness, "CinematicUNet3DToModel", unet=unet)
    return unet, model


def _windows(harness, model, length, overlap=1):
    (windowed,) = _call(harness, "ContextWindowsManual", model=model, context_length=length, context_overlap=overlap,
                        context_schedule="standard_static", context_stride=1, closed_loop=False,
                        fuse_method="pyramid", dim=2, freenoise=False)
    return windowed


def _rows(seed, rows):
    return torch.randn(rows, 77, 1024, generator=torch.Generator().manual_seed(seed))


def _cond(rows):
    return [[rows, {"pooled_output": torch.zeros(rows.shape[0], 1024)}]]


def _ksampler(harness, model, positive, frames=FRAMES, batch=1):
    latent = {"samples": torch.zeros(batch, 4, frames, 4, 4)}
    (out,) = _call(harness, "KSampler", model=model, seed=5, steps=2, cfg=5.0, sampler_name="euler",
                   scheduler="normal", positive=positive, negative=_cond(_rows(99, 1)), latent_image=latent,
                   denoise=1.0)
    return out["samples"]


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.fixture(scope="module")
def schedule():
    return _rows(3, FRAMES)


@pytest.fixture(scope="module")
def alone(comfy, schedule):
    """Frame k of a run conditioned on row k only, temporal layers off (no windows)."""
    _, model = _model(comfy, temporal=0.0)
    return {k: _ksampler(comfy, model, _cond(schedule[k:k + 1]))[:, :, k] for k in (0, 2, 4, 6)}


def test_per_frame_rows_reach_each_frame_through_core_ksampler(comfy, schedule, alone):
    _, model = _model(comfy, temporal=0.0)
    travel = _ksampler(comfy, model, _cond(schedule))
    assert travel.shape == (1, 4, FRAMES, 4, 4)
    for k, expected in alone.items():
        assert _rel(travel[:, :, k], expected) <= TOL, k
    # not row 0 everywhere (what core's own CONDCrossAttn would make of F rows on one video)
    assert _rel(travel[:, :, 4], _ksampler(comfy, model, _cond(schedule[:1]))[:, :, 4]) > 1e-3
    # with the temporal layers on, a schedule's rows change the clip too
    _, plain = _model(comfy)
    assert _rel(_ksampler(comfy, plain, _cond(schedule)), _ksampler(comfy, plain, _cond(schedule[:1]))) > 1e-3


def test_per_frame_rows_per_video_on_a_batch(comfy):
    """B*F rows: one per frame of each video; video 1 conditioned on its own rows."""
    _, model = _model(comfy, temporal=0.0)
    rows = _rows(4, 2 * FRAMES)
    both = _ksampler(comfy, model, _cond(rows), batch=2)
    second = _ksampler(comfy, model, _cond(rows[FRAMES:]), batch=2)  # F rows: the same for both videos
    assert _rel(both[1], second[1]) <= TOL and _rel(both[0], second[0]) > 1e-3


def test_core_context_windows_slice_per_frame_rows(comfy, schedule, alone):
    import comfy.model_base as model_base

    unet, model = _model(comfy, temporal=0.0)
    seen, rows = [], []

    def hook(module, args, kwargs):
        seen.append(args[0].shape[2])
        rows.append((args[0].shape[0] * args[0].shape[2], kwargs["context"].shape[0]))

    handle = unet.module.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        travel = _ksampler(comfy, _windows(comfy, model, length=3), _cond(schedule))
    finally:
        handle.remove()
    # ComfyUI 0.33+ adds the frame before each window as a "causal anchor" (stripped from the result)
    assert seen and max(seen) <= 4 and len(seen) > 2, seen
    for k, expected in alone.items():
        assert _rel(travel[:, :, k], expected) <= TOL, k
    if hasattr(model_base.BaseModel, "resize_cond_for_context_window"):
        # 0.33+: the model's BaseModel slices the rows per window before the UNet sees them
        assert all(frame_rows == context_rows for frame_rows, context_rows in rows), rows
    else:
        # older: core passes all rows (2 batched conds x 7 frames); the UNet takes its window's rows itself
        assert all(context_rows == 2 * FRAMES for _, context_rows in rows), rows


def test_core_context_windows_with_temporal_layers_on(comfy, schedule):
    unet, model = _model(comfy)
    seen = []
    handle = unet.module.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[2]))
    try:
        windowed = _ksampler(comfy, _windows(comfy, model, length=3), _cond(schedule))
    finally:
        handle.remove()
    assert max(seen) <= 4 and torch.isfinite(windowed).all()
    assert _rel(windowed, _ksampler(comfy, model, _cond(schedule))) > 1e-4  # the windows did something
    # a window as long as the clip is the plain run, per-frame rows included
    whole = _ksampler(comfy, _windows(comfy, model, length=FRAMES), _cond(schedule))
    assert _rel(whole, _ksampler(comfy, model, _cond(schedule))) <= TOL


def test_a_schedule_of_another_length_is_a_clear_error(comfy):
    _, model = _model(comfy)
    with pytest.raises(Exception, match=r"12 rows.*7 frames"):
        _ksampler(comfy, model, _cond(_rows(1, 12)))
