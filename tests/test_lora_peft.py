"""PEFT adapter folders (MCM's modelscopet2v-*: adapter_config.json + adapter_model.safetensors, keys
`base_model.model.<diffusers module>.lora_A/lora_B.weight`, alpha and rank in the config): the folder or its file,
through CinematicLoraLoader, equals diffusers' UNet with alpha / r * B @ A merged by hand."""

import json

import pytest
import torch
import torch.nn as nn
from safetensors.torch import save_file

from cinematic.model_loaders.safe_load import ModelFileError
from cinematic.model_loaders.unet_loader import unet_from_state_dict
from cinematic.model_loaders.video_unet import VideoUNet
from cinematic.nodes.model_patches import CinematicLoraLoader
from cinematic_testing import tiny_unet

TOL = 1e-4
TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "conv1", "time_emb_proj")


def _write_peft(reference, folder, r=4, alpha=8, pattern_module=None, seed=0):
    """What peft's save_pretrained writes, and the deltas PEFT's merge adds: scale * B.flatten(1) @ A.flatten(1)."""
    gen = torch.Generator().manual_seed(seed)
    tensors, deltas = {}, {}
    for name, m in reference.named_modules():
        if not isinstance(m, (nn.Linear, nn.Conv2d)) or not name.endswith(TARGETS):
            continue
        rank, a = (2, 6.0) if name == pattern_module else (r, alpha)
        w = m.weight
        lora_a = 0.05 * torch.randn(rank, *w.shape[1:], generator=gen)
        lora_b = 0.05 * torch.randn(w.shape[0], rank, *([1] * (w.ndim - 2)), generator=gen)
        tensors[f"base_model.model.{name}.lora_A.weight"] = lora_a
        tensors[f"base_model.model.{name}.lora_B.weight"] = lora_b
        deltas[name] = (a / rank) * (lora_b.flatten(1) @ lora_a.flatten(1)).reshape(w.shape)
    folder.mkdir(parents=True)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    config = {"peft_type": "LORA", "r": r, "lora_alpha": alpha, "target_modules": list(TARGETS),
              "use_rslora": False, "rank_pattern": {}, "alpha_pattern": {}}
    if pattern_module:
        config["rank_pattern"] = {pattern_module: 2}
        config["alpha_pattern"] = {pattern_module: 6.0}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return deltas


def test_mcm_folder_and_its_file_equal_hand_merged_weights(models_dir):
    sd = tiny_unet.tiny_state_dict(seed=8)
    reference = tiny_unet.diffusers_model(sd)
    pattern = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
    deltas = _write_peft(reference, models_dir / "loras" / "modelscopet2v-webvid", pattern_module=pattern)
    choices = CinematicLoraLoader.INPUT_TYPES()["required"]["lora_name"][0]
    assert "modelscopet2v-webvid" in choices and "modelscopet2v-webvid/adapter_model.safetensors" in choices
    model = unet_from_state_dict(sd, "fp32")
    merged = reference
    with torch.no_grad():
        modules = dict(merged.named_modules())
        for name, delta in deltas.items():
            modules[name].weight += delta
    gen = torch.Generator().manual_seed(0)
    x, t, c = torch.randn(1, 4, 3, 8, 8, generator=gen), torch.tensor([259]), torch.randn(1, 77, 1024, generator=gen)
    with torch.no_grad():
        expected = merged(x, t, encoder_hidden_states=c).sample
        plain = model(x, t, c)
    for name in ("modelscopet2v-webvid", "modelscopet2v-webvid/adapter_model.safetensors"):
        (view,) = CinematicLoraLoader().apply(VideoUNet(model), name, 1.0)
        assert len(view.weight_patches[0][0]) == len(deltas)
        with torch.no_grad(), view.weights_applied():
            got = view(x, t, c)
        assert ((got - expected).abs().max() / expected.abs().max()).item() <= TOL, name
        assert (got - plain).abs().max() > 1e-3


def test_a_folder_without_weights_is_refused(models_dir):
    folder = models_dir / "loras" / "broken"
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 4}))
    model = unet_from_state_dict(tiny_unet.tiny_state_dict(seed=8), "fp32")
    with pytest.raises(ModelFileError, match="broken.*adapter_model.safetensors"):
        CinematicLoraLoader().apply(VideoUNet(model), "broken", 1.0)
