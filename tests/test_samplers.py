"""Samplers against the originals: ModelScope's own DDIM loop, and diffusers' schedulers on the same model,
noise and sigmas."""

import warnings

import pytest
import torch

warnings.filterwarnings("ignore", category=DeprecationWarning, module="diffusers")

from cinematic.model_loaders.unet_loader import unet_from_state_dict
from cinematic.samplers.registry import SAMPLERS, SCHEDULES
from cinematic.samplers.sampling import LATENT_SCALE, TRAINING_SCHEDULE, make_noise, sample
from cinematic.samplers.schedule import EpsDenoiser
from cinematic_testing import refs, tiny_unet

SHAPE = (1, 4, 3, 8, 8)


@pytest.fixture(scope="module")
def reference():
    return tiny_unet.reference_unet(seed=3)


@pytest.fixture(scope="module")
def unet(reference):
    return unet_from_state_dict(reference.state_dict(), "fp32")


@pytest.fixture(scope="module")
def context():
    gen = torch.Generator().manual_seed(1)
    return torch.randn(1, 77, 1024, generator=gen), torch.randn(1, 77, 1024, generator=gen)


@pytest.mark.parametrize("steps", [50, 10])
def test_ddim_modelscope_equals_original_loop(reference, unet, context, steps):
    D = refs.modelscope_module("diffusion")
    betas = D.beta_schedule("linear_sd", 1000, init_beta=0.00085, last_beta=0.0120)
    diffusion = D.GaussianDiffusion(betas=betas, mean_type="eps", var_type="fixed_small", loss_type="mse",
                                    rescale_timesteps=False)
    cond, uncond = context
    noise = make_noise(SHAPE, 1234)
    with torch.no_grad():
        expected = diffusion.ddim_sample_loop(noise=noise.clone(), model=reference,
                                              model_kwargs=[{"y": cond}, {"y": uncond}], guide_scale=9.0,
                                              ddim_timesteps=steps, eta=0.0) / LATENT_SCALE
        got = sample(unet, torch.zeros(SHAPE), cond, uncond, seed=1234, steps=steps, cfg=9.0, sampler="ddim",
                     schedule="modelscope")
    rel = ((got - expected).abs().max() / expected.abs().max()).item()
    assert rel <= 1e-4, rel


def _diffusers_loop(scheduler, unet, cond, noise, steps, gen=None):
    import inspect

    scheduler.set_timesteps(steps)
    x = noise * scheduler.init_noise_sigma
    extra = {"generator": gen} if "generator" in inspect.signature(scheduler.step).parameters else {}
    with torch.no_grad():
        for t in scheduler.timesteps:
            eps = unet(scheduler.scale_model_input(x, t), t.reshape(1).float(), cond)
            x = scheduler.step(eps, t, x, **extra).prev_sample
    return x


CASES = {
    # our sampler: (diffusers class, its configuration, tolerance on max |diff| relative to max |x|)
    "euler": ("EulerDiscreteScheduler", dict(timestep_spacing="leading", steps_offset=1), 1e-4),
    "euler_ancestral": ("EulerAncestralDiscreteScheduler", dict(timestep_spacing="leading", steps_offset=1), 1e-4),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", dict(algorithm_type="dpmsolver++", solver_order=2,
                                                     final_sigmas_type="zero", lower_order_final=True), 1e-4),
    "unipc": ("UniPCMultistepScheduler", dict(solver_order=2, solver_type="bh2", predict_x0=True,
                                              lower_order_final=True, final_sigmas_type="zero"), 1e-4),
    "ddpm": ("DDPMScheduler", dict(variance_type="fixed_small", clip_sample=False), 1e-4),
}


@pytest.mark.parametrize("name", list(CASES))
def test_matches_diffusers_scheduler(unet, context, name):
    import diffusers

    cls_name, config, tol = CASES[name]
    scheduler = getattr(diffusers, cls_name)(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                                              beta_schedule="scaled_linear", prediction_type="epsilon", **config)
    cond, _ = context
    steps = 12
    noise = make_noise(SHAPE, 7)
    expected = _diffusers_loop(scheduler, unet, cond, noise, steps, torch.Generator().manual_seed(99))

    # The same sigmas: diffusers' own (k-space) where it keeps them, else those of its timesteps, then 0.
    if hasattr(scheduler, "sigmas") and len(scheduler.sigmas) == len(scheduler.timesteps) + 1:
        sigmas = scheduler.sigmas.to(torch.float64)
    else:
        sigmas = torch.cat([TRAINING_SCHEDULE.sigmas[scheduler.timesteps.long()], torch.zeros(1, dtype=torch.float64)])
    x = noise * float(scheduler.init_noise_sigma)
    if name in ("dpmpp_2m", "unipc", "ddpm"):  # these start in the variance-preserving space: x_vp = noise
        x = noise * (1 + float(sigmas[0]) ** 2) ** 0.5
    gen = torch.Generator().manual_seed(99)
    denoiser = EpsDenoiser(lambda x_vp, t: unet(x_vp, t.reshape(1), cond), TRAINING_SCHEDULE)
    with torch.no_grad():
        got = SAMPLERS[name](denoiser, x, sigmas, noise_sampler=lambda s, sn: torch.randn(x.shape, generator=gen))
    rel = ((got - expected).abs().max() / expected.abs().max()).item()
    assert rel <= tol, rel


def test_registries_have_the_promised_entries():
    assert {"ddim", "euler", "euler_ancestral", "heun", "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_3m_sde", "unipc", "lcm",
            "ddpm"} <= set(SAMPLERS)
    assert {"modelscope", "karras", "exponential", "simple", "uniform", "sgm_uniform", "ddim_uniform"} <= set(SCHEDULES)
    modelscope = SCHEDULES["modelscope"](TRAINING_SCHEDULE, 50)
    ts = TRAINING_SCHEDULE.t(modelscope)
    assert torch.allclose(ts[:-1], torch.arange(981, 0, -20, dtype=torch.float64), atol=1e-6)
    assert abs(float(ts[-1])) < 1e-6  # the last step lands on alpha_bar[0]
    for name, fn in SCHEDULES.items():
        sigmas = fn(TRAINING_SCHEDULE, 20)
        assert (sigmas[:-1] > sigmas[1:]).all(), name
        assert len(sigmas) >= 21


@pytest.mark.parametrize("name", ["heun", "dpmpp_2m_sde", "dpmpp_3m_sde", "lcm", "ddim"])
def test_every_sampler_runs_and_is_reproducible(unet, context, name):
    cond, uncond = context
    kwargs = dict(seed=5, steps=6, cfg=4.0, sampler=name, schedule="karras")
    a = sample(unet, torch.zeros(SHAPE), cond, uncond, **kwargs)
    b = sample(unet, torch.zeros(SHAPE), cond, uncond, **kwargs)
    assert torch.isfinite(a).all()
    assert torch.equal(a, b)


def test_custom_sampler_and_schedule_register(unet, context):
    from cinematic.samplers.registry import register_sampler, register_schedule

    @register_sampler("test_only_euler_twice")
    def twice(model, x, sigmas, *, callback=None, noise_sampler=None, eta=None):
        return SAMPLERS["euler"](model, x, sigmas, callback=callback)

    @register_schedule("test_only_linear")
    def linear(schedule, steps):
        return torch.cat([torch.linspace(schedule.sigma_max, schedule.sigma_min, steps, dtype=torch.float64),
                          torch.zeros(1, dtype=torch.float64)])

    try:
        cond, uncond = context
        out = sample(unet, torch.zeros(SHAPE), cond, uncond, steps=3, cfg=2.0, sampler="test_only_euler_twice",
                     schedule="test_only_linear")
        assert torch.isfinite(out).all()
    finally:
        SAMPLERS.pop("test_only_euler_twice")
        SCHEDULES.pop("test_only_linear")
