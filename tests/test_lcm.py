"""Few-step sampling (samplers/lcm.py): `lcm` + `t2v_turbo` equals diffusers' LCMScheduler (timestep_scaling 10,
T2V-Turbo's timesteps) step by step with the same noises; `lcm` + `lcm` equals LCMScheduler(timestep_scaling 4)
(MCM's); a guidance-embedding UNet makes one pass per step with cfg as its w, equal to diffusers' turbo UNet."""

import warnings

import pytest
import torch

warnings.filterwarnings("ignore", category=DeprecationWarning, module="diffusers")

from cinematic.model_loaders.guidance_embedding import GUIDANCE_SCALE
from cinematic.model_loaders.unet_loader import unet_from_state_dict
from cinematic.model_loaders.video_unet import VideoUNet
from cinematic.samplers.registry import SCHEDULES
from cinematic.samplers.sampling import LATENT_SCALE, TRAINING_SCHEDULE, make_noise, sample
from cinematic_testing import tiny_unet

SHAPE = (1, 4, 3, 8, 8)
SEED = 21
TOL = 1e-5


@pytest.fixture(scope="module")
def turbo_reference():
    """diffusers' tiny UNet3DConditionModel(time_cond_proj_dim=256) with random weights (cond_proj included)."""
    from diffusers import UNet3DConditionModel

    sd = tiny_unet.tiny_state_dict(seed=4)
    model = UNet3DConditionModel(**tiny_unet.TINY_DIFFUSERS_CONFIG, time_cond_proj_dim=256).eval()
    model.load_state_dict(tiny_unet.diffusers_model(sd).state_dict(), strict=False)
    with torch.no_grad():
        w = model.time_embedding.cond_proj.weight
        w.copy_(0.05 * torch.randn(w.shape, generator=torch.Generator().manual_seed(2)))
    return model


@pytest.fixture(scope="module")
def turbo(turbo_reference):
    """Ours, loaded from the diffusers weights (a single-file diffusers-layout state dict)."""
    module = unet_from_state_dict(turbo_reference.state_dict(), "fp32")
    view = VideoUNet(module)
    assert view.guidance_embedded
    return view


@pytest.fixture(scope="module")
def context():
    gen = torch.Generator().manual_seed(1)
    return torch.randn(1, 77, 1024, generator=gen), torch.randn(1, 77, 1024, generator=gen)


def _turbo_timesteps(steps):
    origin = [k * 20 - 1 for k in range(1, 51)]
    return origin[::-(50 // steps)][:steps]


def _diffusers_loop(eps, steps, scaling, timesteps=None):
    """diffusers' LCMScheduler loop on the scaled latent; returns prev_sample after every step."""
    from diffusers import LCMScheduler

    sched = LCMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", timestep_scaling=scaling,
                         original_inference_steps=50)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if timesteps is None:
            sched.set_timesteps(steps)
        else:
            sched.set_timesteps(timesteps=timesteps)
    gen = torch.Generator().manual_seed(SEED + 1)  # the pack's stochastic-noise convention
    latents = make_noise(SHAPE, SEED) * sched.init_noise_sigma
    out = []
    for t in sched.timesteps:
        with torch.no_grad():
            model_output = eps(latents, t)
        latents = sched.step(model_output, t, latents, generator=gen).prev_sample
        out.append(latents)
    return [int(t) for t in sched.timesteps], out


def _ours(view, context, steps, schedule, cfg):
    cond, uncond = context
    got = []
    calls = []
    sigmas = SCHEDULES[schedule](TRAINING_SCHEDULE, steps)

    def callback(i, x, denoised):
        got.append(x / (1 + float(sigmas[i + 1]) ** 2) ** 0.5)

    original = view.module.forward

    def counting(*args, **kwargs):
        calls.append(args[0].shape[0])
        return original(*args, **kwargs)

    view.module.forward = counting
    try:
        with torch.no_grad():
            result = sample(view, torch.zeros(SHAPE), cond, uncond, seed=SEED, steps=steps, cfg=cfg, sampler="lcm",
                            schedule=schedule, callback=callback)
    finally:
        del view.module.forward
    return sigmas, got, calls, result


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("steps", [1, 4, 8])
def test_lcm_t2v_turbo_equals_lcmscheduler_scaling_10(turbo, context, steps):
    cond, _ = context
    w = 7.5
    sigmas, got, calls, result = _ours(turbo, context, steps, "t2v_turbo", w)
    assert calls == [1] * steps  # one UNet pass per step, no unconditional pass
    ts = TRAINING_SCHEDULE.t(sigmas[:-1]).round().long().tolist()
    assert ts == _turbo_timesteps(steps)
    if steps == 4:
        assert ts == [999, 759, 519, 279]

    def eps(x, t):  # our UNet on both sides: this compares the schedulers
        return turbo(x, t.reshape(1), cond, {GUIDANCE_SCALE: w})

    timesteps, expected = _diffusers_loop(eps, steps, 10.0, _turbo_timesteps(steps))
    assert timesteps == ts
    assert len(got) == len(expected) == steps
    for i, (a, b) in enumerate(zip(got, expected)):
        assert _rel(a, b) <= TOL, (steps, i, _rel(a, b))
    assert _rel(result * LATENT_SCALE, expected[-1]) <= TOL


@pytest.mark.parametrize("steps", [1, 4, 8])
def test_lcm_lcm_equals_lcmscheduler_scaling_4(turbo, context, steps):
    """MCM's scheduler (timestep_scaling 4, diffusers' own LCM timesteps)."""
    cond, _ = context
    sigmas, got, _, _ = _ours(turbo, context, steps, "lcm", 1.0)
    ts = TRAINING_SCHEDULE.t(sigmas[:-1]).round().long().tolist()
    if steps == 4:
        assert ts == [999, 759, 499, 259]

    def eps(x, t):
        return turbo(x, t.reshape(1), cond, {GUIDANCE_SCALE: 1.0})

    timesteps, expected = _diffusers_loop(eps, steps, 4.0)
    assert timesteps == ts
    for i, (a, b) in enumerate(zip(got, expected)):
        assert _rel(a, b) <= TOL, (steps, i, _rel(a, b))


def test_turbo_sampling_equals_diffusers_turbo_unet(turbo, turbo_reference, context):
    """End to end: our guidance-embedding UNet + lcm/t2v_turbo against diffusers' UNet3DConditionModel given T2V-Turbo's
    w-embedding as timestep_cond, under LCMScheduler."""
    import math

    cond, _ = context
    w = 6.0
    half = 128
    freqs = torch.tensor([math.exp(-math.log(10000.0) * k / (half - 1)) for k in range(half)])
    w_emb = torch.cat([(w * 1000 * freqs).sin(), (w * 1000 * freqs).cos()])[None]
    _, got, _, _ = _ours(turbo, context, 4, "t2v_turbo", w)

    def eps(x, t):
        return turbo_reference(x, t.reshape(1), encoder_hidden_states=cond, timestep_cond=w_emb).sample

    _, expected = _diffusers_loop(eps, 4, 10.0, _turbo_timesteps(4))
    for a, b in zip(got, expected):
        assert _rel(a, b) <= 1e-4


def test_schedules_refuse_more_steps_than_distilled():
    with pytest.raises(ValueError, match="1 to 50"):
        SCHEDULES["t2v_turbo"](TRAINING_SCHEDULE, 51)
