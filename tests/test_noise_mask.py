"""Held frames in the sampler: a LATENT's noise_mask (1 = generate, 0 = keep), soft masks, windows, FreeInit, RePaint.

Every check runs the real tiny UNet3D; the expected kept inputs, thresholds and mask layouts are written out here from
the rules (core KSamplerX0Inpaint, core DifferentialDiffusion), not taken from the code under test."""

import math

import pytest
import torch

from cinematic.model_loaders.unet_loader import unet_from_state_dict
from cinematic.samplers.context import ContextOptions, window_plan
from cinematic.samplers.noise_mask import prepare_mask
from cinematic.samplers.sampling import LATENT_SCALE, TRAINING_SCHEDULE, make_noise, sample
from cinematic_testing import tiny_unet

SHAPE = (1, 4, 6, 8, 8)


class Recorder(torch.nn.Module):
    """The tiny UNet3D, recording every call's input and timesteps (no mock: every call runs the model)."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet
        self.calls = []

    @property
    def dtype(self):
        return self.unet.dtype

    def forward(self, x, t, context, transformer_options=None):
        self.calls.append((x.detach().clone(), t.detach().clone()))
        return self.unet(x, t, context, transformer_options=transformer_options)


@pytest.fixture(scope="module")
def unet():
    return unet_from_state_dict(tiny_unet.tiny_state_dict(seed=11), "fp32")


@pytest.fixture(scope="module")
def context():
    gen = torch.Generator().manual_seed(5)
    return torch.randn(1, 77, 1024, generator=gen), torch.randn(1, 77, 1024, generator=gen)


@pytest.fixture(scope="module")
def source():
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(9)) * 4


def _kept_input(source, noise, t):
    """What core KSamplerX0Inpaint feeds the model at a kept position: source (scaled) + sigma * noise, in the
    model's variance-preserving input scaling x / sqrt(1 + sigma^2)."""
    sigma = TRAINING_SCHEDULE.sigma(t.double()).to(torch.float32).reshape(-1, 1, 1, 1, 1)
    return (source * LATENT_SCALE + noise * sigma) / torch.sqrt(1 + sigma**2)


def test_all_ones_mask_is_the_unmasked_run(unet, context, source):
    cond, uncond = context
    plain = sample(unet, source, cond, uncond, seed=3, steps=6, cfg=7.0, denoise=0.8)
    ones = sample(unet, source, cond, uncond, seed=3, steps=6, cfg=7.0, denoise=0.8, noise_mask=torch.ones(6, 8, 8))
    assert (plain - ones).abs().max().item() <= 1e-6


@pytest.mark.parametrize("sampler,schedule,windows", [
    ("ddim", "modelscope", None), ("euler", "karras", None), ("dpmpp_2m", "karras", None),
    ("ddim", "modelscope", ContextOptions(context_length=4, context_overlap=2, fuse_method="flat")),
])
def test_kept_frames_come_out_as_given_and_the_model_sees_them_renoised(unet, context, source, sampler, schedule,
                                                                         windows):
    cond, uncond = context
    kept = [0, 5]
    mask = torch.ones(6)
    mask[kept] = 0
    model = Recorder(unet)
    seed = 21
    out = sample(model, source, cond, uncond, seed=seed, steps=5, cfg=6.0, sampler=sampler, schedule=schedule,
                 noise_mask=mask, context=windows)
    assert (out[:, :, kept] - source[:, :, kept]).abs().max().item() <= 1e-5
    generated = [f for f in range(6) if f not in kept]
    assert (out[:, :, generated] - source[:, :, generated]).abs().min().item() > 1e-3

    noise = make_noise(SHAPE, seed)
    frames_of_call = [list(range(6))] * len(model.calls)
    if windows is not None:
        plan = [w for w, _ in window_plan(6, windows, 0)]
        frames_of_call = [plan[i % len(plan)] for i in range(len(model.calls))]
        assert len(model.calls) == 5 * len(plan)
    checked = 0
    for (x, t), frames in zip(model.calls, frames_of_call):
        for pos, frame in enumerate(frames):
            if frame in kept:
                expected = _kept_input(source[:, :, frame:frame + 1], noise[:, :, frame:frame + 1], t)
                got = x[:, :, pos:pos + 1]  # cond and uncond halves of the CFG batch both
                assert (got - expected).abs().max().item() <= 1e-5
                checked += 1
    assert checked >= 10


def test_soft_masks_switch_where_the_threshold_passes_them(unet, context, source):
    """DifferentialDiffusion's rule, step by step: frame of mask m is kept while (t - t_last) / (t_first - t_last) > m.
    modelscope's 10 steps call the UNet at t = 901, 801, ..., 1 and end on alpha_bar[0] (t_last = 0)."""
    cond, uncond = context
    values = [0.0, 0.15, 0.45, 0.75, 0.95, 1.0]
    mask = torch.tensor(values)
    model = Recorder(unet)
    sample(model, source, cond, uncond, seed=4, steps=10, cfg=6.0, noise_mask=mask)
    noise = make_noise(SHAPE, 4)
    switch = {}
    for step, (x, t) in enumerate(model.calls):
        t_now = float(t[0])
        assert abs(t_now - (901 - 100 * step)) < 1e-3
        threshold = (t_now - 0.0) / (901.0 - 0.0)
        for f, m in enumerate(values):
            expected = _kept_input(source[:, :, f:f + 1], noise[:, :, f:f + 1], t)
            is_kept = (x[:, :, f:f + 1] - expected).abs().max().item() <= 1e-5
            assert is_kept == (m == 0 or threshold > m), (step, f, m, threshold)
            if not is_kept and f not in switch:
                switch[f] = step
    assert 0 not in switch  # m = 0: held to the end
    order = [switch[f] for f in range(1, 6)]
    assert order == sorted(order, reverse=True) and len(set(order)) > 3  # lower m, later switch


@pytest.mark.parametrize("shape", [(6, 64, 64), (1, 6, 8, 8), (6, 1, 64, 64), (1, 1, 6, 64, 64), (6,)])
def test_mask_layouts_resize_like_core(shape):
    mask = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    out = prepare_mask(mask, SHAPE)
    assert out.shape == (1, 1, 6, 8, 8)
    if shape[-1] == 64:  # pixel size -> latent size, bilinear per frame (core: trilinear with the frames unchanged)
        per_frame = torch.nn.functional.interpolate(mask.reshape(-1, 1, 64, 64), size=(8, 8), mode="bilinear")
        assert torch.allclose(out[0, 0], per_frame[:, 0], atol=1e-6)
    elif len(shape) == 1:
        assert torch.equal(out[0, 0, :, 0, 0], mask)


@pytest.mark.parametrize("shape,message", [((5, 8, 8), "5 frames but the latent has 6"), ((1, 3, 6, 8, 8), "channels"),
                                           ((3, 6, 8, 8), "18 frames"), ((3, 1, 6, 8, 8), "3 videos"),
                                           ((2, 2, 2, 2, 2, 2), "fits no")])
def test_masks_that_fit_nothing_are_refused(shape, message):
    with pytest.raises(ValueError, match=message):
        prepare_mask(torch.ones(shape), SHAPE)


def test_freeinit_keeps_the_kept_frames_in_every_iteration(pack, unet, source):
    from cinematic.samplers.freeinit import FreeInitOptions, fresh_noise, low_pass_filter, mix_frequencies

    node = pack.NODE_CLASS_MAPPINGS["CinematicSampler"]()
    cond = [[torch.randn(1, 77, 1024, generator=torch.Generator().manual_seed(1)), {}]]
    mask = torch.ones(1, 1, 6, 8, 8)
    mask[:, :, :2] = 0
    options = FreeInitOptions(iterations=2)
    model = Recorder(unet)
    out = node.sample(model, cond, cond, {"samples": source, "noise_mask": mask}, seed=2, steps=4, cfg=1.0,
                      freeinit=options)[0]["samples"]
    assert len(model.calls) == 8
    assert (out[:, :, :2] - source[:, :, :2]).abs().max().item() <= 1e-5
    assert (out[:, :, 2:] - source[:, :, 2:]).abs().min().item() > 1e-3
    # the second run starts from the first's low frequencies, with FreeInit's mixed noise; its kept frames are still
    # the *source* re-noised with that run's noise
    first_noise = make_noise(SHAPE, 2)
    second_noise = mix_frequencies(first_noise, fresh_noise(SHAPE, 2, 1), low_pass_filter(6, 8, 8, options))
    for run_noise, calls in ((first_noise, model.calls[:4]), (second_noise, model.calls[4:])):
        for x, t in calls:
            expected = _kept_input(source[:, :, :2], run_noise[:, :, :2], t)
            assert (x[:, :, :2] - expected).abs().max().item() <= 1e-5


@pytest.mark.parametrize("r", [1, 2])
def test_resample_runs_the_unet_one_plus_r_times_per_step(unet, context, source, r):
    cond, uncond = context
    mask = torch.ones(6)
    mask[0] = 0
    plain_model, model = Recorder(unet), Recorder(unet)
    plain = sample(plain_model, source, cond, uncond, seed=8, steps=4, cfg=6.0, noise_mask=mask)
    zero = sample(unet, source, cond, uncond, seed=8, steps=4, cfg=6.0, noise_mask=mask, resample=0)
    out = sample(model, source, cond, uncond, seed=8, steps=4, cfg=6.0, noise_mask=mask, resample=r)
    assert len(plain_model.calls) == 4 and len(model.calls) == 4 * (1 + r)
    assert torch.equal(plain, zero)
    assert (out[:, :, 0] - source[:, :, 0]).abs().max().item() <= 1e-5
    assert (out[:, :, 1:] - plain[:, :, 1:]).abs().max().item() > 1e-3
    # each repetition is the same step again: the repeated calls share the step's timestep
    ts = [float(t[0]) for _, t in model.calls]
    assert ts == [t for t in ts[::1 + r] for _ in range(1 + r)]
    assert math.isclose(ts[0], 751.0, abs_tol=1e-3)


def test_one_mask_per_video():
    mask = torch.rand(2, 6, 8, 8, generator=torch.Generator().manual_seed(3))
    out = prepare_mask(mask, (2, 4, 6, 8, 8))
    assert torch.equal(out[:, 0], mask)
    assert torch.equal(prepare_mask(mask[:, None], (2, 4, 6, 8, 8)), out)
