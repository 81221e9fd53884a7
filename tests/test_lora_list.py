"""List-format LoRAs (cloneofsimo `.pt`: MotionDirector, T2V-Turbo): each rule, written exactly as the saver writes it
from a tiny diffusers UNet3DConditionModel by this test's own walk of `named_modules()`, applied through
CinematicLoraLoader, equals diffusers' UNet with the deltas merged by hand; strength scales it; bad lists are
refused clearly."""

import pickle

import pytest
import torch

from cinematic.model_loaders.guidance_embedding import authors_init_weight
from cinematic.model_loaders.lora import read_lora
from cinematic.model_loaders.lora_list import layer_orders
from cinematic.model_loaders.safe_load import ModelFileError
from cinematic.model_loaders.unet3d import UNet3D, UNet3DConfig
from cinematic.model_loaders.unet_loader import unet_from_state_dict
from cinematic.model_loaders.video_unet import VideoUNet
from cinematic.nodes.model_patches import CinematicLoraLoader
from cinematic_testing import hostile, tiny_lora, tiny_unet

TOL = 1e-4


@pytest.fixture(scope="module")
def sd():
    return tiny_unet.tiny_state_dict(seed=11)


@pytest.fixture(scope="module")
def model(sd):
    return unet_from_state_dict(sd, "fp32")


def _older_diffusers_order(walk):
    """The same walk as an older diffusers registered a transformer block's layers: attn1, ff, attn2."""
    import re

    rank = {"attn1": 0, "ff": 1, "attn2": 2}
    out, block, pending = [], None, []
    for name, m in walk + [("", None)]:
        match = re.match(r"(.*\.transformer_blocks\.\d+)\.(attn1|attn2|ff)\.", name)
        key = match[1] if match else None
        if key != block and pending:
            out += sorted(pending, key=lambda item: rank[re.search(r"\.(attn1|attn2|ff)\.", item[0])[1]])
            pending = []
        block = key
        if match:
            pending.append((name, m))
        elif m is not None:
            out.append((name, m))
    return out


def _write_list(unet, rule, path, seed, older_order=False):
    walk = tiny_lora.saver_walk(unet, rule)
    if older_order:
        older = _older_diffusers_order(walk)
        assert [n for n, _ in older] != [n for n, _ in walk]
        walk = older
    return tiny_lora.write_list(walk, path, seed)


def _merged(unet, deltas, strength=1.0):
    import copy

    merged = copy.deepcopy(unet)
    modules = dict(merged.named_modules())
    with torch.no_grad():
        for name, delta in deltas.items():
            modules[name].weight += strength * delta
    return merged


def _inputs(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(1, 4, 3, 8, 8, generator=gen), torch.tensor([601]), torch.randn(1, 77, 1024, generator=gen)


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def _ours(view, inputs, **options):
    with torch.no_grad(), view.weights_applied():
        return view(*inputs, transformer_options=options or None)


@pytest.mark.parametrize("rule", ["all", "temporal", "spatial"])
def test_each_rule_equals_diffusers_with_deltas_merged_by_hand(rule, sd, model, models_dir):
    reference = tiny_unet.diffusers_model(sd)
    (models_dir / "loras").mkdir()
    deltas = _write_list(reference, rule, models_dir / "loras" / f"{rule}.pt", seed=2)
    lora = read_lora(models_dir / "loras" / f"{rule}.pt", model)
    assert lora.rule == rule and len(lora.patches) == len(deltas)
    base = VideoUNet(model)
    x, t, c = _inputs()
    with torch.no_grad():
        plain = reference(x, t, encoder_hidden_states=c).sample
    for strength in (1.0, 0.6):
        (view,) = CinematicLoraLoader().apply(base, f"{rule}.pt", strength)
        with torch.no_grad():
            expected = _merged(reference, deltas, strength)(x, t, encoder_hidden_states=c).sample
        got = _ours(view, (x, t, c))
        assert _rel(got, expected) <= TOL, (rule, strength)
        assert _rel(got, plain) > 1e-3
    assert not view.guidance_embedded  # no guidance embedding: cfg stays classifier-free guidance


def test_lists_saved_with_an_older_diffusers_block_order(sd, model, tmp_path):
    """MotionDirector's era of diffusers registered attn1, ff, attn2 in a transformer block: the shapes tell."""
    reference = tiny_unet.diffusers_model(sd)
    deltas = _write_list(reference, "all", tmp_path / "old.pt", seed=5, older_order=True)
    lora = read_lora(tmp_path / "old.pt", model)
    assert lora.rule == "all"
    x, t, c = _inputs(2)
    with torch.no_grad():
        expected = _merged(reference, deltas)(x, t, encoder_hidden_states=c).sample
    got = _ours(VideoUNet(model).with_weight_patches(lora.patches, 1.0, "old"), (x, t, c))
    assert _rel(got, expected) <= TOL


def test_turbo_list_creates_the_guidance_embedding(sd, model, models_dir):
    """T2V-Turbo: the list covers every layer of a UNet built with time_cond_proj_dim=256, cond_proj included; the
    base model has none, the loader creates it with the authors' init, and the view takes w from the options."""
    from diffusers import UNet3DConditionModel

    plain = tiny_unet.diffusers_model(sd)
    reference = UNet3DConditionModel(**tiny_unet.TINY_DIFFUSERS_CONFIG, time_cond_proj_dim=256).eval()
    reference.load_state_dict(plain.state_dict(), strict=False)
    with torch.no_grad():
        reference.time_embedding.cond_proj.weight.copy_(authors_init_weight(64, 4, 256))
    (models_dir / "loras").mkdir()
    deltas = _write_list(reference, "all", models_dir / "loras" / "unet_lora.pt", seed=4)
    assert "time_embedding.cond_proj" in deltas
    module = unet_from_state_dict(sd, "fp32")  # its own copy: the loader adds a layer to the shared module
    base = VideoUNet(module)
    (view,) = CinematicLoraLoader().apply(base, "unet_lora.pt", 1.0)
    assert view.guidance_embedded and not base.guidance_embedded
    x, t, c = _inputs(1)
    w = 7.5
    half = 128
    freqs = torch.exp(torch.arange(half, dtype=torch.float32) * -(torch.log(torch.tensor(10000.0)) / (half - 1)))
    w_emb = torch.cat([(w * 1000 * freqs).sin(), (w * 1000 * freqs).cos()])[None]
    with torch.no_grad():
        expected = _merged(reference, deltas)(x, t, encoder_hidden_states=c, timestep_cond=w_emb).sample
    got = _ours(view, (x, t, c))  # the view's default w is 7.5
    assert _rel(got, expected) <= TOL
    # the base view (and the module's weights) are unchanged by the created layer
    with torch.no_grad():
        assert torch.equal(base(x, t, c), model(x, t, c))
    # zero base: only the LoRA's delta on cond_proj
    (zero_view,) = CinematicLoraLoader().apply(base, "unet_lora.pt", 1.0, "zero")
    with torch.no_grad():
        reference.time_embedding.cond_proj.weight.zero_()
        expected_zero = _merged(reference, deltas)(x, t, encoder_hidden_states=c, timestep_cond=w_emb).sample
    assert _rel(_ours(zero_view, (x, t, c)), expected_zero) <= TOL


def test_walk_equals_diffusers_named_modules_full_size():
    """The rebuilt layer order is diffusers' own, at the real size, with and without a guidance embedding."""
    from diffusers import UNet3DConditionModel

    with torch.device("meta"):
        ours = UNet3D(UNet3DConfig())
        for cond in (None, 256):
            reference = UNet3DConditionModel(time_cond_proj_dim=cond, cross_attention_dim=1024,
                                             attention_head_dim=64)
            expected = [n for n, _ in tiny_lora.saver_walk(reference, "all")]
            shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
            got = layer_orders(ours.config, shapes, None)[("all", ("attn1", "attn2", "ff"), cond is not None)]
            assert [layer.diffusers for layer in got] == expected
            for rule in ("temporal", "spatial"):
                got = layer_orders(ours.config, shapes, None)[(rule, ("attn1", "attn2", "ff"), False)]
                assert [layer.diffusers for layer in got] == [n for n, _ in tiny_lora.saver_walk(reference, rule)]


def test_wrong_length_is_refused_with_the_expected_lengths(sd, model, tmp_path):
    reference = tiny_unet.diffusers_model(sd)
    path = tmp_path / "short.pt"
    _write_list(reference, "temporal", path, seed=3)
    tensors = torch.load(path, weights_only=True)
    torch.save(tensors[:-2], path)
    with pytest.raises(ModelFileError, match=r"short\.pt.*of \d+ tensors.*temporal: \d+.*spatial: \d+") as info:
        read_lora(path, model)
    assert str(len(tensors)) in str(info.value)
    # the right length with a misplaced pair: the shapes do not fit
    tensors[0], tensors[2] = tensors[2], tensors[0]
    tensors[0] = torch.randn(3, 2)
    torch.save(tensors, path)
    with pytest.raises(ModelFileError, match="does not fit"):
        read_lora(path, model)


@pytest.mark.parametrize("bad", [["not a tensor"], [{"a": 1}], [3]])
def test_a_list_of_anything_but_tensors_is_refused(bad, model, tmp_path):
    path = tmp_path / "bad.pt"
    torch.save([torch.zeros(4, 4), torch.zeros(4, 4)] + bad, path)
    with pytest.raises(ModelFileError, match=r"bad\.pt.*entry 2"):
        read_lora(path, model)


def test_a_list_that_would_run_code_is_refused(model, tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump([torch.zeros(4, 4), hostile.Payload(marker)], f)
    with pytest.raises(ModelFileError, match=r"evil\.pt"):
        read_lora(path, model)
    assert not marker.exists()
    path2 = tmp_path / "evil2.pt"
    torch.save([torch.zeros(4, 4), hostile.Payload(marker)], path2)
    with pytest.raises(ModelFileError, match=r"evil2\.pt.*refused"):
        read_lora(path2, model)
    assert not marker.exists()


@pytest.mark.parametrize("rule", ["temporal", "turbo"])
def test_convert_lora_script_writes_list_loras_in_comfyui_naming(rule, sd, model, tmp_path):
    """scripts/convert_lora.py takes list LoRAs like the other formats; read back, the same deltas (a T2V-Turbo
    list's guidance embedding included, still to be created)."""
    import subprocess
    import sys
    from pathlib import Path

    from diffusers import UNet3DConditionModel

    root = Path(__file__).resolve().parents[1]
    reference = tiny_unet.diffusers_model(sd)
    if rule == "turbo":
        turbo = UNet3DConditionModel(**tiny_unet.TINY_DIFFUSERS_CONFIG, time_cond_proj_dim=256)
        turbo.load_state_dict(reference.state_dict(), strict=False)
        reference = turbo
    src = tmp_path / "src.pt"
    _write_list(reference, "all" if rule == "turbo" else rule, src, seed=6)
    unet_file = tiny_unet.write_original_safetensors(sd, tmp_path / "unet.safetensors")
    out = tmp_path / "converted.safetensors"
    proc = subprocess.run([sys.executable, str(root / "scripts" / "convert_lora.py"), str(src), str(out),
                           "--unet", str(unet_file), "--dtype", "fp32"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    source, converted = read_lora(src, model), read_lora(out, model)
    assert converted.format == "comfyui" and set(converted.patches) == set(source.patches)
    assert converted.guidance_embedding_dim == source.guidance_embedding_dim == (256 if rule == "turbo" else None)
    for key, delta in source.patches.items():
        shape = model.state_dict()[key].shape if key in model.state_dict() else (64, 256)
        assert torch.allclose(converted.patches[key].delta(shape), delta.delta(shape), atol=1e-6), key
