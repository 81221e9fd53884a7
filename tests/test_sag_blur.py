"""Self-attention guidance's tensor part (samplers/sag_blur.py): the received-attention map, the frame folding, the
Gaussian blur and the per-frame adversarial blur. Plain torch, no ComfyUI (the node:
tests/integration/test_video_sag.py)."""

import math

import pytest
import torch
import torch.nn.functional as F

from cinematic.samplers.sag_blur import (adversarial_blur, attention_mask, fold_frames, gaussian_blur,
                                         received_attention, unfold_frames)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_received_attention_is_the_softmax_map_summed_over_queries():
    heads, d, tokens, rows = 2, 8, 6, 3
    q = torch.randn(rows, tokens, heads * d, generator=_gen(1))
    k = torch.randn(rows, tokens, heads * d, generator=_gen(2))
    got = received_attention(q, k, heads)
    # torch's own attention with the identity as values returns the attention probabilities themselves
    qh, kh = (t.view(rows, tokens, heads, d).transpose(1, 2) for t in (q, k))
    eye = torch.eye(tokens).expand(rows, heads, tokens, tokens)
    probs = F.scaled_dot_product_attention(qh, kh, eye)  # [rows, heads, queries, keys]
    assert got.shape == (rows, tokens)
    torch.testing.assert_close(got, probs.mean(1).sum(1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.sum(-1), torch.full((rows,), float(tokens)))


def test_fold_frames_is_video_major_and_unfolds_back():
    x = torch.randn(2, 4, 3, 5, 6, generator=_gen(3))
    folded = fold_frames(x)
    assert folded.shape == (6, 4, 5, 6)
    for b in range(2):
        for f in range(3):
            assert torch.equal(folded[b * 3 + f], x[b, :, f])
    assert torch.equal(unfold_frames(folded, x), x)
    image = torch.randn(2, 4, 5, 6)
    assert fold_frames(image) is image and unfold_frames(image, image) is image


def test_gaussian_blur_spreads_an_impulse_as_a_normalised_gaussian_and_keeps_a_constant():
    sigma = 1.5
    impulse = torch.zeros(1, 2, 15, 15)
    impulse[:, :, 7, 7] = 1.0
    out = gaussian_blur(impulse, sigma)
    offsets = torch.arange(-4, 5, dtype=torch.float32)
    g = torch.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * sigma ** 2))
    expected = torch.zeros(15, 15)
    expected[3:12, 3:12] = g / g.sum()
    torch.testing.assert_close(out[0, 0], expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out[0, 1], expected, atol=1e-6, rtol=1e-5)
    constant = torch.full((1, 3, 8, 8), 2.5)
    torch.testing.assert_close(gaussian_blur(constant, 2.0), constant)
    assert torch.equal(gaussian_blur(impulse, 0.0), impulse)


def test_attention_mask_marks_tokens_over_the_threshold_at_latent_size():
    received = torch.tensor([[2.0, 0.5, 1.0, 1.5]])  # a 2x2 grid; 1.0 itself is not over the threshold
    mask = attention_mask(received, (2, 2), (4, 6))
    expected = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).repeat_interleave(2, 0).repeat_interleave(3, 1)
    assert mask.shape == (1, 1, 4, 6) and torch.equal(mask[0, 0], expected)
    with pytest.raises(ValueError, match="grid is 3x2"):
        attention_mask(received, (3, 2), (4, 6))


def test_adversarial_blur_blurs_only_the_frames_and_places_the_map_marks():
    x0 = torch.randn(2, 4, 3, 8, 8, generator=_gen(4))
    tokens = 4
    uniform = torch.ones(6, tokens)  # every token gets exactly the mean: the mask is off everywhere
    assert torch.equal(adversarial_blur(x0, uniform, (2, 2), 2.0), x0)
    received = uniform.clone()
    received[4, 0] = 3.0  # video 1, frame 1, top-left quarter
    out = adversarial_blur(x0, received, (2, 2), 2.0)
    blurred = gaussian_blur(x0[1, :, 1][None], 2.0)[0]
    changed = (out != x0).any(dim=1)  # [B, F, h, w]
    assert changed[1, 1, :4, :4].all() and changed.sum() == 16
    torch.testing.assert_close(out[1, :, 1, :4, :4], blurred[:, :4, :4])
    assert torch.equal(out[1, :, 1, 4:], x0[1, :, 1, 4:]) and torch.equal(out[1, :, 1, :, 4:], x0[1, :, 1, :, 4:])
    everywhere = adversarial_blur(x0, torch.full((6, tokens), 2.0), (2, 2), 2.0)
    torch.testing.assert_close(everywhere, unfold_frames(gaussian_blur(fold_frames(x0), 2.0), x0))
    assert not math.isclose(everywhere.std().item(), x0.std().item(), rel_tol=1e-3)


def test_adversarial_blur_refuses_a_map_from_another_call():
    with pytest.raises(ValueError, match="5 rows but the prediction has 6 frames"):
        adversarial_blur(torch.zeros(2, 4, 3, 8, 8), torch.ones(5, 4), (2, 2), 2.0)


def test_the_node_says_it_needs_comfyui(pack):
    node = pack.NODE_CLASS_MAPPINGS["CinematicSelfAttentionGuidance"]
    assert node.RETURN_TYPES == ("MODEL",)
    with pytest.raises(RuntimeError, match="only works inside ComfyUI"):
        node().patch(None, 0.5, 2.0)
