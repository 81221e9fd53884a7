"""Temporal strength against the original: s = 1 is the model as trained, s = 0 is the original UNetSD's own image
mode (`use_image_dataset=True`: temporal attention 0 * x + x_in, temporal convolution identity + 0 * x), 0.5 is a
genuine blend in between."""

import pytest
import torch

from cinematic.model_loaders.unet3d import Block, TemporalTransformer
from cinematic.model_loaders.unet_loader import unet_from_state_dict
from cinematic.model_loaders.video_unet import VideoUNet
from cinematic_testing import tiny_unet

TOL = 1e-4


@pytest.fixture(scope="module")
def image_mode_reference():
    return tiny_unet.reference_unet(seed=6, use_image_dataset=True)


@pytest.fixture(scope="module")
def video_reference():
    return tiny_unet.reference_unet(seed=6)


@pytest.fixture(scope="module")
def ours(video_reference):
    return unet_from_state_dict(video_reference.state_dict(), "fp32")


def _inputs(frames, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(2, 4, frames, 16, 16, generator=gen), torch.randn(2, 77, 1024, generator=gen)


def _diff(a, b):
    return (a - b).abs().max().item()


def test_the_two_references_hold_the_same_weights(image_mode_reference, video_reference):
    a, b = image_mode_reference.state_dict(), video_reference.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("frames", [1, 6])
def test_strength_zero_is_the_originals_image_mode(image_mode_reference, video_reference, ours, frames):
    x, context = _inputs(frames)
    (view,) = _node().apply(VideoUNet(ours), 0.0, 0.0)
    for t in ([999, 999], [400, 20]):
        timesteps = torch.tensor(t)
        with torch.no_grad():
            expected = image_mode_reference(x, timesteps, context)
            got = view(x, timesteps, context)
            video = video_reference(x, timesteps, context)
        assert _diff(got, expected) <= TOL, t
        if frames > 1:
            assert _diff(got, video) > 1e-3  # the temporal layers really are off


def test_strength_one_is_the_plain_model(ours, video_reference):
    x, context = _inputs(5, seed=1)
    t = torch.tensor([700, 700])
    (view,) = _node().apply(VideoUNet(ours), 1.0, 1.0)
    with torch.no_grad():
        plain = ours(x, t, context)
        assert torch.equal(view(x, t, context), plain)
        assert _diff(plain, video_reference(x, t, context)) <= TOL


def test_half_strength_lies_strictly_between(ours):
    x, context = _inputs(6, seed=2)
    t = torch.tensor([500, 500])
    base = VideoUNet(ours)
    with torch.no_grad():
        full, off, half = (_node().apply(base, s, s)[0](x, t, context) for s in (1.0, 0.0, 0.5))
    assert _diff(full, off) > 1e-3
    # a genuine blend: it differs from both ends ...
    assert _diff(half, full) > 1e-3 and _diff(half, off) > 1e-3
    # ... and lies between them: nearer to each end than the ends are to each other (RMS distance; the blend is
    # linear per layer, see below, but the layers compose non-linearly, so not every element is between)
    span = (full - off).norm()
    print(f"|half-full| {(half - full).norm() / span:.3f}, |half-off| {(half - off).norm() / span:.3f} of |full-off|")
    assert (half - full).norm() < span and (half - off).norm() < span


def test_each_temporal_layer_is_blended_linearly(ours):
    """Inside one block the blend is exactly x + s * (layer(x) - x): at s = 0.5 the midpoint, elementwise."""
    block = next(b for b in ours.input_blocks if isinstance(b, Block) and any(isinstance(m, TemporalTransformer)
                                                                                 for m in b))
    temporal = next(m for m in block if isinstance(m, TemporalTransformer))
    gen = torch.Generator().manual_seed(3)
    frames = 4
    h = torch.randn(2 * frames, temporal.norm.num_channels, 8, 8, generator=gen)
    with torch.no_grad():
        through = temporal(h, frames)
        half = Block([temporal])(h, None, None, frames, temporal=(0.5, 1.0))
        none = Block([temporal])(h, None, None, frames, temporal=(0.0, 1.0))
    assert torch.equal(none, h)
    assert _diff(half, (h + through) / 2) <= 1e-6
    assert _diff(through, h) > 1e-3


def test_strengths_multiply_when_chained(ours):
    x, context = _inputs(4, seed=4)
    t = torch.tensor([300, 300])
    base = VideoUNet(ours)
    (a,) = _node().apply(base, 0.5, 0.8)
    (ab,) = _node().apply(a, 0.5, 0.5)
    (direct,) = _node().apply(base, 0.25, 0.4)
    with torch.no_grad():
        assert _diff(ab(x, t, context), direct(x, t, context)) <= 1e-6


def _node():
    from cinematic.nodes.model_patches import CinematicTemporalStrength

    return CinematicTemporalStrength()
