"""The demo model's training script on a micro config (seconds): a run stopped and resumed equals one run, and its
file loads through the checkpoint loader and samples; the evaluation judges rendered clips correctly."""

import shutil

import pytest
import torch
from safetensors.torch import load_file

import demo_data
import train_demo_model
from cinematic.model_loaders.safe_load import safetensors_metadata


def _train(folder, name, *extra):
    out = folder / f"{name}.safetensors"
    rc = train_demo_model.main(["--config", "micro", "--workdir", str(folder / name), "--out", str(out),
                                "--eval-steps", "0", *extra])
    return rc, out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    rc, out = _train(tmp_path_factory.mktemp("demo"), "straight")
    assert rc == 0 and out.is_file()
    return out


def test_stopped_and_resumed_run_equals_one_run(trained, tmp_path):
    # 1: inside the VAE stage; 2: the VAE's last step, the latent normalisation and bank, one UNet step
    for stop in ("1", "2"):
        rc, out = _train(tmp_path, "resumed", "--stop-after", stop)
        assert rc == 0 and not out.exists()
    rc, out = _train(tmp_path, "resumed")
    assert rc == 0
    one, resumed = load_file(str(trained)), load_file(str(out))
    assert one.keys() == resumed.keys()
    assert all(torch.equal(one[k], resumed[k]) for k in one)


def test_resuming_with_other_settings_is_refused(trained, tmp_path):
    assert _train(tmp_path, "run", "--stop-after", "1")[0] == 0
    assert _train(tmp_path, "run", "--seed", "1")[0] == 2
    assert _train(tmp_path, "run", "--stop-after", "1")[0] == 0  # the VAE stage ends
    assert _train(tmp_path, "run", "--vae-steps", "3")[0] == 2


def test_file_loads_through_the_checkpoint_loader_and_samples(trained, models_dir, pack):
    shutil.copy(trained, models_dir / "text2video" / "demo.safetensors")
    loader = pack.NODE_CLASS_MAPPINGS["CinematicCheckpointLoader"]
    assert "demo.safetensors" in loader.INPUT_TYPES()["required"]["model_name"][0]
    unet, text, vae = loader().load("demo.safetensors", "default")
    assert unet.config.head_dim == 32 and text.width == unet.config.context_dim == 64
    assert trained.stat().st_size < 8e6
    meta = safetensors_metadata(trained)
    assert meta["cinematic_format"] == "1" and "cinematic_demo_model" in meta
    m = pack.NODE_CLASS_MAPPINGS
    (positive,) = m["CinematicTextEncode"]().encode(text, "a red circle moving right")
    (negative,) = m["CinematicTextEncode"]().encode(text, "")
    (latent,) = m["CinematicEmptyVideoLatent"]().generate(32, 32, 4, 1)
    (latent,) = m["CinematicSampler"]().sample(unet, positive, negative, latent, 0, 2, 7.0, "ddim", "modelscope", 1.0)
    (images,) = m["CinematicVAEDecode"]().decode(vae, latent, 4)
    assert images.shape == (4, 32, 32, 3) and torch.isfinite(images).all()


def _video(combo, reverse=False):
    start = demo_data.random_start(combo.direction, torch.Generator().manual_seed(0))
    centres = demo_data.track(combo.direction, start)
    if reverse:
        centres = centres.flip(0)
    return demo_data.render(combo.shape, combo.colour, centres).permute(0, 2, 3, 1)


def test_evaluation_reads_rendered_clips():
    results = [demo_data.judge_video(_video(c), c) for c in demo_data.combos()[::3]]
    assert demo_data.summarise(results) == {"videos": len(results), "colour_right": 1.0, "one_blob_frames": 1.0,
                                            "direction_right": 1.0}
    combo = demo_data.Combo("circle", "red", "right")
    backwards = demo_data.judge_video(_video(combo, reverse=True), combo)
    assert backwards["direction"] == "left" and not backwards["direction_ok"]
    other = demo_data.judge_video(_video(combo), demo_data.Combo("circle", "blue", "right"))
    assert other["colour"] == "red" and not other["colour_ok"]
    apart = torch.tensor([[16.0, 16.0]] * 16), torch.tensor([[48.0, 48.0]] * 16)
    two = (demo_data.render("circle", "red", apart[0]) + demo_data.render("square", "blue", apart[1])
           - torch.tensor(demo_data.BACKGROUND).view(1, 3, 1, 1))
    assert demo_data.judge_video(two.permute(0, 2, 3, 1), combo)["coherent"] == 0.0
    blank = torch.full((16, 64, 64, 3), 0.2)
    assert demo_data.judge_video(blank, combo) == {"colour": None, "colour_ok": False, "coherent": 0.0,
                                                   "direction": "still", "direction_ok": False}
