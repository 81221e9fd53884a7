"""Small models of the family (the demo model's kind) load through the normal paths: a UNet3D whose head size is
not 64 (named in the file's metadata), a text tower narrower than 1024 (as wide as its UNet3D's context), a token
table kept as the rows its prompts use; and the checks that keep mismatched parts apart."""

import pytest
import torch
from safetensors.torch import save_file

from cinematic.model_loaders.checkpoint import load_checkpoint
from cinematic.model_loaders.safe_load import ModelFileError
from cinematic.model_loaders.text_encoder import (TOKEN_ROW_IDS, VOCAB_SIZE, compact_token_rows, load_text_encoder,
                                                  text_encoder_from_state_dict)
from cinematic.model_loaders.unet_loader import HEAD_DIM_METADATA, load_unet
from cinematic_testing import tiny_text, tiny_unet

#: a narrow UNetSD: 32 channels, heads of 32 (the demo model's shape). The original hard-codes a 1024-wide context in
#: its decoder, so the narrow context is tested on our own module (test_sampler_names_the_unets_context_width).
NARROW = dict(dim=32, dim_mult=[1, 2], context_dim=1024, num_heads=1, head_dim=32, attn_scales=[1, 0.5])


@pytest.fixture(scope="module")
def narrow_reference():
    return tiny_unet.reference_unet(seed=5, **NARROW)


def _write_unet(reference, path, metadata=None):
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path), metadata=metadata)
    return path


def test_head_size_from_metadata_matches_the_original(narrow_reference, tmp_path):
    path = _write_unet(narrow_reference, tmp_path / "narrow.safetensors", {HEAD_DIM_METADATA: "32"})
    ours = load_unet(path, "fp32")
    assert ours.config.head_dim == 32 and ours.config.model_channels == 32 and ours.config.input_temporal_heads == 1
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 8, 8, 8, generator=gen)
    context = torch.randn(2, 77, 1024, generator=gen)
    with torch.no_grad():
        expected = narrow_reference(x, torch.tensor([900, 20]), context)
        got = ours(x, torch.tensor([900, 20]), context)
    assert (got - expected).abs().max().item() <= 1e-4


def test_head_size_is_not_guessed(narrow_reference, tmp_path):
    # without the metadata the family's 64 is assumed: 32 channels cannot hold a 64-wide head
    with pytest.raises(ModelFileError, match="UNet3D"):
        load_unet(_write_unet(narrow_reference, tmp_path / "bare.safetensors"), "fp32")
    with pytest.raises(ModelFileError, match=HEAD_DIM_METADATA):
        load_unet(_write_unet(narrow_reference, tmp_path / "bad.safetensors", {HEAD_DIM_METADATA: "x"}), "fp32")


def _narrow_clip(width=128, layers=3, seed=0):
    oc = tiny_text.open_clip()
    torch.manual_seed(seed)
    model = oc.model.CLIP(embed_dim=width, vision_cfg=oc.model.CLIPVisionCfg(**tiny_text.TINY_VISION),
                          text_cfg=oc.model.CLIPTextCfg(context_length=77, vocab_size=VOCAB_SIZE, width=width,
                                                        heads=width // 64, layers=layers)).eval()
    with torch.no_grad():
        model.positional_embedding.normal_(0, 0.1)
    return model


def test_narrow_text_tower_matches_open_clip(tmp_path):
    model = _narrow_clip()
    path = tiny_text.write_open_clip_bin(model, tmp_path / "narrow_clip.bin")
    encoder = load_text_encoder(path)
    prompts = ["a red circle moving right", ""]
    cond, _ = encoder.encode(prompts)
    expected = tiny_text.reference_penultimate(model, tiny_text.open_clip().tokenize(prompts))
    assert encoder.width == 128 and cond.shape == (2, 77, 128)
    assert (cond - expected).abs().max().item() <= 1e-5


def _hf_tower(encoder) -> dict:
    return {k.removeprefix("text_model."): v for k, v in encoder.model.state_dict().items()
            if not k.endswith("position_ids")}


def test_compact_token_rows_load_as_the_whole_table_with_zeros_elsewhere(tmp_path):
    encoder = load_text_encoder(tiny_text.write_open_clip_bin(_narrow_clip(), tmp_path / "c.bin"))
    prompts = ["a red circle moving right", "a blue square moving up"]
    used = set(encoder.tokenize(prompts + [""]).flatten().tolist())
    compact = compact_token_rows(_hf_tower(encoder), used)
    assert compact["embeddings.token_embedding.weight"].shape == (len(used), 128)
    save_file(compact, str(tmp_path / "compact.safetensors"))
    loaded = load_text_encoder(tmp_path / "compact.safetensors")
    table = loaded.model.get_input_embeddings().weight
    full = encoder.model.get_input_embeddings().weight
    ids = torch.tensor(sorted(used))
    assert table.shape == (VOCAB_SIZE, 128) and torch.equal(table[ids], full[ids])
    others = torch.ones(VOCAB_SIZE, dtype=torch.bool)
    others[ids] = False
    assert table[others].abs().sum() == 0
    assert torch.equal(loaded.encode(prompts)[0], encoder.encode(prompts)[0])


@pytest.mark.parametrize("ids", [[0, 0, 5], [0, 5, VOCAB_SIZE], [0.0, 1.0, 2.0], [1, 2]])
def test_damaged_token_rows_are_refused(ids):
    sd = {"embeddings.token_embedding.weight": torch.zeros(3, 64),
          "embeddings.position_embedding.weight": torch.zeros(77, 64),
          "final_layer_norm.weight": torch.ones(64), "final_layer_norm.bias": torch.zeros(64),
          "encoder.layers.0.mlp.fc1.weight": torch.zeros(256, 64), TOKEN_ROW_IDS: torch.tensor(ids)}
    with pytest.raises(ModelFileError, match="token rows are damaged"):
        text_encoder_from_state_dict(sd)


@pytest.mark.parametrize("width,needle", [(768, "SD1.5"), (96, "multiple of 64"), (1280, "1024 wide")])
def test_other_widths_are_refused(width, needle):
    sd = {"embeddings.token_embedding.weight": torch.zeros(VOCAB_SIZE, width),
          "embeddings.position_embedding.weight": torch.zeros(77, width),
          "final_layer_norm.weight": torch.ones(width), "final_layer_norm.bias": torch.zeros(width),
          "encoder.layers.0.mlp.fc1.weight": torch.zeros(4 * width, width)}
    with pytest.raises(ModelFileError, match=needle):
        text_encoder_from_state_dict(sd)


def test_checkpoint_with_mismatched_text_width_is_refused(tmp_path):
    from cinematic_testing import tiny_checkpoint

    unet, _, vae = tiny_checkpoint.parts(seed=0)  # a 1024-context UNet3D
    encoder = load_text_encoder(tiny_text.write_open_clip_bin(_narrow_clip(), tmp_path / "c.bin"))
    sd = {"unet." + k: v for k, v in unet.items()}
    sd.update({"vae." + k: v for k, v in vae.items()})
    sd.update({"text_encoder." + k: v for k, v in _hf_tower(encoder).items()})
    path = tmp_path / "mixed.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path), metadata={"cinematic_format": "1"})
    with pytest.raises(ModelFileError, match="128 wide but its UNet3D attends to 1024"):
        load_checkpoint(path, "fp32")


def test_sampler_names_the_unets_context_width(pack, tmp_path):
    from cinematic.model_loaders.unet3d import UNet3D, UNet3DConfig
    from cinematic.model_loaders.video_unet import VideoUNet

    torch.manual_seed(0)
    module = UNet3D(UNet3DConfig(model_channels=32, channel_mult=(1, 2), num_res_blocks=1, attention_levels=(0, 1),
                                 context_dim=128, input_temporal_heads=1, head_dim=32))
    path = tmp_path / "narrow.safetensors"
    save_file(module.state_dict(), str(path), metadata={HEAD_DIM_METADATA: "32"})
    unet = VideoUNet(load_unet(path, "fp32"))
    assert unet.config.context_dim == 128
    node = pack.NODE_CLASS_MAPPINGS["CinematicSampler"]()
    wide = [[torch.zeros(1, 77, 1024), {"pooled_output": torch.zeros(1, 1024)}]]
    with pytest.raises(ValueError, match="1024 wide; this text-to-video UNet3D needs 128-wide"):
        node.sample(unet, wide, wide, {"samples": torch.zeros(1, 4, 2, 8, 8)}, 0, 1, 5.0, "ddim", "modelscope", 1.0)
    narrow = [[torch.randn(1, 77, 128), {"pooled_output": torch.zeros(1, 128)}]]
    (out,) = node.sample(unet, narrow, narrow, {"samples": torch.zeros(1, 4, 2, 8, 8)}, 0, 1, 5.0, "ddim",
                         "modelscope", 1.0)
    assert out["samples"].shape == (1, 4, 2, 8, 8) and torch.isfinite(out["samples"]).all()
