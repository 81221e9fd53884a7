"""The text encoder equals open_clip's penultimate + ln_final output; token ids equal open_clip.tokenize's."""

import gc

import pytest
import torch
from safetensors.torch import save_file

from cinematic.model_loaders.safe_load import ModelFileError
from cinematic.model_loaders.text_encoder import load_text_encoder, text_encoder_from_state_dict
from cinematic_testing import tiny_text, tiny_unet
from cinematic_testing.openclip_ref import open_clip

PROMPTS = [
    "a panda playing guitar",
    "",
    "   lots   of\twhite\n\nspace   ",
    "Café crème brûlée, naïve façade — São Paulo",
    "emoji 🐼🎸🔥 and 漢字 and Привет",
    "html &amp; entities &lt;b&gt;bold&lt;/b&gt; &amp;amp;lt; &quot;quoted&quot;",
    "UPPER case AND MiXeD, punctuation!!! ... ??? (brackets) [x] {y}",
    "numbers 1234567890 and 3.14, 1/2, 50%",
    "don't can't I'm we'll they've she'd it's",
    " ".join(["a very long prompt about a cinematic drone shot over mountains at sunset"] * 12),
    "mojibake Ã©tÃ© and ï¬\x81",
]


def test_token_ids_equal_open_clip():
    oc = open_clip()
    from cinematic.model_loaders.text_encoder import Tokenizer

    ours = Tokenizer()(PROMPTS)
    expected = oc.tokenize(PROMPTS)
    for i, prompt in enumerate(PROMPTS):
        assert torch.equal(ours[i], expected[i]), prompt
    assert ours.shape == (len(PROMPTS), 77) and ours.dtype == torch.long


@pytest.mark.parametrize("size", ["small", "full"])
def test_conditioning_equals_open_clip_penultimate(size, tmp_path):
    model = tiny_text.reference_clip(size, seed=1)
    path = tiny_text.write_open_clip_bin(model, tmp_path / "open_clip_pytorch_model.bin")
    ids = open_clip().tokenize(PROMPTS[:4] if size == "small" else PROMPTS[:2])
    expected = tiny_text.reference_penultimate(model, ids)
    sd_visual_keys = [k for k in model.state_dict() if k.startswith("visual.")]
    assert sd_visual_keys  # the file holds the full CLIP, as the original does
    del model
    gc.collect()
    encoder = load_text_encoder(path)
    assert encoder.model.config.num_hidden_layers == tiny_text.TEXT_CFGS[size]["layers"] - 1
    cond, pooled = encoder.encode(PROMPTS[:4] if size == "small" else PROMPTS[:2])
    assert cond.shape == expected.shape
    assert (cond - expected).abs().max().item() <= 1e-5
    assert pooled.shape == (cond.shape[0], 1024)


def _hf_keys(encoder, prefix="text_model."):
    return {prefix + k.removeprefix("text_model."): v.contiguous() for k, v in encoder.model.state_dict().items()
            if not k.endswith("position_ids")}


def test_every_layout_gives_the_same_conditioning(tmp_path):
    model = tiny_text.reference_clip("small", seed=2)
    bin_path = tiny_text.write_open_clip_bin(model, tmp_path / "orig" / "open_clip_pytorch_model.bin")
    reference = load_text_encoder(bin_path)
    # A text tower alone in open_clip keys, as .safetensors (ComfyUI-style clip file).
    tower = tmp_path / "openclip_text.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items() if not k.startswith("visual.")}, str(tower))
    # diffusers text_encoder/ folder, transformers 4 style (text_model. prefix) with the 3 (= 4 - 1) layers baked in.
    folder = tmp_path / "diffusers"
    (folder / "text_encoder").mkdir(parents=True)
    save_file(_hf_keys(reference), str(folder / "text_encoder" / "model.safetensors"))
    (folder / "text_encoder" / "config.json").write_text('{"num_hidden_layers": 3}')
    # transformers 5 style: no text_model. prefix.
    bare = tmp_path / "te_v5.safetensors"
    save_file(_hf_keys(reference, prefix=""), str(bare))
    prompts = ["a panda playing guitar", ""]
    expected, _ = reference.encode(prompts)
    for path in (bin_path.parent, tower, folder, folder / "text_encoder", bare):
        got, _ = load_text_encoder(path).encode(prompts)
        assert torch.equal(got, expected), path


def test_sd15_text_encoder_is_refused(tmp_path):
    sd = {"text_model.embeddings.token_embedding.weight": torch.zeros(49408, 768),
          "text_model.embeddings.position_embedding.weight": torch.zeros(77, 768),
          "text_model.final_layer_norm.weight": torch.ones(768),
          "text_model.final_layer_norm.bias": torch.zeros(768)}
    for i in range(2):
        sd[f"text_model.encoder.layers.{i}.mlp.fc1.weight"] = torch.zeros(3072, 768)
    path = tmp_path / "sd15_clip.safetensors"
    save_file(sd, str(path))
    with pytest.raises(ModelFileError, match="768 wide"):
        load_text_encoder(path)


def test_unet_file_is_refused(tmp_path):
    unet = tiny_unet.write_original_safetensors(tiny_unet.tiny_state_dict(), tmp_path / "unet.safetensors")
    with pytest.raises(ModelFileError, match="UNet3D, not a text encoder"):
        load_text_encoder(unet)
