"""Image to Video Latent, Extend Video and Join Videos as a user chains them: real tiny VAE and UNet3D, then the
Text-to-Video Sampler keeps what the nodes hold."""

import pytest
import torch

from cinematic.model_loaders.unet_loader import unet_from_state_dict
from cinematic.model_loaders.vae import vae_from_state_dict
from cinematic_testing import tiny_unet, tiny_vae


@pytest.fixture(scope="module")
def vae():
    return vae_from_state_dict(tiny_vae.tiny_state_dict(seed=2))


@pytest.fixture(scope="module")
def unet():
    return unet_from_state_dict(tiny_unet.tiny_state_dict(seed=6), "fp32")


def _images(n, size=16, seed=0):
    return torch.rand(n, size, size, 3, generator=torch.Generator().manual_seed(seed))


def _cond(seed):
    return [[torch.randn(1, 77, 1024, generator=torch.Generator().manual_seed(seed)), {}]]


def _node(pack, name):
    return pack.NODE_CLASS_MAPPINGS[name]()


def _encode(pack, vae, images):
    return _node(pack, "CinematicVAEEncode").encode(vae, images)[0]["samples"]


def _sample(pack, unet, latent, **kw):
    args = dict(seed=5, steps=4, cfg=6.0, sampler_name="ddim", scheduler="modelscope", denoise=1.0)
    args.update(kw)
    return _node(pack, "CinematicSampler").sample(unet, _cond(1), _cond(2), latent, **args)[0]["samples"]


def test_image_to_video_holds_the_encoded_image_and_the_sampler_keeps_it(pack, vae, unet):
    image = _images(1)
    (latent,) = _node(pack, "CinematicImageToVideoLatent").place(vae, image, 6, "0", 1.0)
    encoded = _encode(pack, vae, image)  # [1, 4, 1, h, w]
    samples, mask = latent["samples"], latent["noise_mask"]
    assert samples.shape == (1, 4, 6) + encoded.shape[-2:] and mask.shape == (1, 1, 6) + encoded.shape[-2:]
    assert torch.equal(samples[:, :, 0], encoded[:, :, 0])
    assert torch.equal(samples, encoded.expand_as(samples))  # the image repeated over the clip
    assert mask[:, :, 0].eq(0).all() and mask[:, :, 1:].eq(1).all()
    out = _sample(pack, unet, latent)
    assert (out[:, :, 0] - encoded[:, :, 0]).abs().max().item() <= 1e-5
    assert (out[:, :, 1:] - samples[:, :, 1:]).abs().min().item() > 1e-3


def test_strength_and_falloff_shape_the_mask(pack, vae):
    node = _node(pack, "CinematicImageToVideoLatent")
    (latent,) = node.place(vae, _images(2), 9, "1,-2", 0.8, falloff=2)
    per_frame = latent["noise_mask"][0, 0, :, 0, 0]
    # keyframes 1 and 7 held with 0.8, neighbours with 0.8 * (3 - d) / 3; mask = 1 - held; the stronger wins
    held = [0.8 * 2 / 3, 0.8, 0.8 * 2 / 3, 0.8 / 3, 0.0, 0.8 / 3, 0.8 * 2 / 3, 0.8, 0.8 * 2 / 3]
    assert torch.allclose(per_frame, 1 - torch.tensor(held), atol=1e-6)
    encoded = _encode(pack, vae, _images(2))
    # every frame holds its nearest keyframe's image (frame 4 is equally far from both: the earlier wins)
    for frame, image in enumerate([0, 0, 0, 0, 0, 1, 1, 1, 1]):
        assert torch.equal(latent["samples"][:, :, frame], encoded[:, :, image])


def test_first_and_last_make_a_loop(pack, vae, unet):
    image = _images(1, seed=3)
    (latent,) = _node(pack, "CinematicImageToVideoLatent").place(vae, image, 6, "0,-1", 1.0, batch_size=2)
    assert latent["samples"].shape[0] == 2
    out = _sample(pack, unet, latent)
    assert (out[:, :, 0] - out[:, :, -1]).abs().max().item() <= 1e-5
    assert (out[:, :, 0] - _encode(pack, vae, image)[:, :, 0]).abs().max().item() <= 1e-5


def test_extend_then_join(pack, unet):
    clip = torch.randn(1, 4, 6, 8, 8, generator=torch.Generator().manual_seed(4))
    (new,) = _node(pack, "CinematicExtendVideo").extend({"samples": clip}, 8, 3)
    assert new["samples"].shape == (1, 4, 8, 8, 8)
    assert torch.equal(new["samples"][:, :, :3], clip[:, :, 3:])
    assert new["noise_mask"][:, :, :3].eq(0).all() and new["noise_mask"][:, :, 3:].eq(1).all()
    second = _sample(pack, unet, new)
    assert (second[:, :, :3] - clip[:, :, 3:]).abs().max().item() <= 1e-5
    (joined,) = _node(pack, "CinematicJoinVideos").join({"samples": clip}, {"samples": second}, 3)
    assert joined["samples"].shape[2] == 6 + 8 - 3
    assert torch.equal(joined["samples"][:, :, :6], clip)
    assert torch.equal(joined["samples"][:, :, 6:], second[:, :, 3:])


@pytest.mark.parametrize("images,keyframes,match", [
    (2, "0", "2 images but 1 keyframes"),
    (1, "16", "outside the clip of 16"),
    (1, "0,x", "not a frame number"),
    (1, "0,0", "same frame twice"),
])
def test_bad_keyframes_are_refused_before_encoding(pack, images, keyframes, match):
    class NoVAE:  # a VAE the node must not reach: the error comes first
        def __getattr__(self, name):
            raise AssertionError("the VAE was used before the input was checked")

    with pytest.raises(ValueError, match=match):
        _node(pack, "CinematicImageToVideoLatent").place(NoVAE(), _images(images), 16, keyframes, 1.0)


def test_images_not_divisible_by_8_are_refused(pack, vae):
    with pytest.raises(ValueError, match="multiples of 8"):
        _node(pack, "CinematicImageToVideoLatent").place(vae, _images(1, size=20), 16, "0", 1.0)


def test_bad_overlaps_are_refused(pack):
    clip = {"samples": torch.zeros(1, 4, 6, 8, 8)}
    with pytest.raises(ValueError, match="smaller than the new clip"):
        _node(pack, "CinematicExtendVideo").extend(clip, 4, 4)
    with pytest.raises(ValueError, match="between 1 and the clip's 6"):
        _node(pack, "CinematicExtendVideo").extend(clip, 12, 7)
    with pytest.raises(ValueError, match="differ in batch or size"):
        _node(pack, "CinematicJoinVideos").join(clip, {"samples": torch.zeros(1, 4, 6, 4, 4)}, 2)
    with pytest.raises(ValueError, match="below the second clip's 6"):
        _node(pack, "CinematicJoinVideos").join(clip, clip, 6)


def test_sampler_refuses_a_mask_that_fits_nothing(pack, unet):
    latent = {"samples": torch.zeros(1, 4, 6, 8, 8), "noise_mask": torch.ones(5, 8, 8)}
    with pytest.raises(ValueError, match="5 frames but the latent has 6"):
        _sample(pack, unet, latent)
