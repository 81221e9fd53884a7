"""Sampler functions, k-diffusion style: short and stateless.

Every sampler is `fn(model, x, sigmas, *, callback=None, noise_sampler=None, eta=None) -> x` where `model(x, sigma)`
returns the denoised latent (x0) for x at noise level sigma (k-diffusion's convention: x = x0 + sigma * eps),
`sigmas` is a descending 1-D tensor (one more entry than steps), `callback(i, x, denoised)` is called after each
step and `noise_sampler(sigma, sigma_next)` returns fresh standard-normal noise shaped like x.
"""

from __future__ import annotations

import math

import torch

from .registry import register_sampler


def _gaussian(x):
    return lambda sigma, sigma_next: torch.randn_like(x)


def _to_d(x, sigma, denoised):
    return (x - denoised) / sigma


def ancestral_step(sigma: float, sigma_next: float, eta: float) -> tuple[float, float]:
    """(sigma_down, sigma_up): a step to sigma_next split into a deterministic part and fresh noise.
    In k-space this is exactly DDIM's eta-noise: DDIM(eta) == Euler ancestral(eta)."""
    if not eta or sigma_next == 0:
        return sigma_next, 0.0
    up = min(sigma_next, eta * math.sqrt(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2))
    return math.sqrt(sigma_next**2 - up**2), up


def _steps(sigmas):
    for i in range(len(sigmas) - 1):
        yield i, float(sigmas[i]), float(sigmas[i + 1])


def _euler_ancestral(model, x, sigmas, callback, noise_sampler, eta):
    noise_sampler = noise_sampler or _gaussian(x)
    for i, sigma, sigma_next in _steps(sigmas):
        denoised = model(x, sigmas[i])
        down, up = ancestral_step(sigma, sigma_next, eta)
        x = denoised + _to_d(x, sigma, denoised) * down
        if up:
            x = x + noise_sampler(sigma, sigma_next) * up
        if callback:
            callback(i, x, denoised)
    return x


@register_sampler("ddim")
def ddim(model, x, sigmas, *, callback=None, noise_sampler=None, eta=None):
    """DDIM (Song et al.). eta 0 (default, as the original) is deterministic; eta 1 is DDPM-like."""
    return _euler_ancestral(model, x, sigmas, callback, noise_sampler, 0.0 if eta is None else eta)


@register_sampler("euler")
def euler(model, x, sigmas, *, callback=None, noise_sampler=None, eta=None):
    return _euler_ancestral(model, x, sigmas, callback, noise_sampler, 0.0)


@register_sampler("euler_ancestral")
def euler_ancestral(model, x, sigmas, *, callback=None, noise_sampler=None, eta=None):
    return _euler_ancestral(model, x, sigmas, callback, noise_sampler, 1.0 if eta is None else eta)


@register_sampler("heun")
def heun(model, x, sigmas, *, callback=None, noise_sampler=None, eta=None):
    """Heun's second-order method (Karras et al. 2022); the last step to 0 is an Euler step."""
    for i, sigma, sigma_next in _steps(sigmas):
        denoised = model(x, sigmas[i])
        d = _to_d(x, sigma, denoised)
        dt = sigma_next - sigma
        if sigma_next == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = _to_d(x_2, sigma_next, model(x_2, sigmas[i + 1]))
            x = x + (d + d_2) / 2 * dt
        if callback:
            callback(i, x, denoised)
    return x


@register_sampler("dpmpp_2m")
def dpmpp_2m(model, x, sigmas, *, callback=None, noise_sampler=None, eta=None):
    """DPM-Solver++(2M) (Lu et al. 2022), first order on the first and the last step."""
    old_denoised, h_last = None, None
    for i, sigma, sigma_next in _steps(sigmas):
        denoised = model(x, sigmas[i])
        if sigma_next == 0:
            x = denoised
        else:
            h = math.log(sigma) - math.log(sigma_next)
            if old_denoised is None:
                d = denoised
            else:
                r = h_last / h
                d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = (sigma_next / sigma) * x - math.expm1(-h) * d
            h_last = h
        old_denoised = denoised
        if callback:
            callback(i, x, denoised)
    return x


@register_sampler("dpmpp_2m_sde")
def dpmpp_2m_sde(model, x, sigmas, *, callback=None, noise_sampler=None, eta=None):
    """DPM-Solver++(2M) SDE, midpoint variant (eta 1 by default)."""
    eta = 1.0 if eta is None else eta
    noise_sampler = noise_sampler or _gaussian(x)
    old_denoised, h_last = None, None
    for i, sigma, sigma_next in _steps(sigmas):
        denoised = model(x, sigmas[i])
        if sigma_next == 0:
            x = denoised
        else:
            h = math.log(sigma) - math.log(sigma_next)
            eta_h = eta * h
            x = sigma_next / sigma * math.exp(-eta_h) * x - math.expm1(-h - eta_h) * denoised
            if old_denoised is not None:
                r = h_last / h
                x = x - 0.5 * math.expm1(-h - eta_h) * (1 / r) * (denoised - old_denoised)
            if eta:
                x = x + noise_sampler(sigma, sigma_next) * sigma_next * math.sqrt(-math.expm1(-2 * eta_h))
            h_last = h
        old_denoised = denoised
        if callback:
            callback(i, x, denoised)
    return x


@register_sampler("dpmpp_3m_sde")
def dpmpp_3m_sde(model, x, sigmas, *, callback=None, noise_sampler=None, eta=None):
    """DPM-Solver++(3M) SDE (eta 1 by default)."""
    eta = 1.0 if eta is None else eta
    noise_sampler = noise_sampler or _gaussian(x)
    d_1 = d_2 = None
    h_1 = h_2 = None
    for i, sigma, sigma_next in _steps(sigmas):
        denoised = model(x, sigmas[i])
        if sigma_next == 0:
            x = denoised
        else:
            h = math.log(sigma) - math.log(sigma_next)
            h_eta = h * (eta + 1)
            x = math.exp(-h_eta) * x - math.expm1(-h_eta) * denoised
            phi_2 = math.expm1(-h_eta) / h_eta + 1
            if h_2 is not None:
                r0, r1 = h_1 / h, h_2 / h
                d1_0 = (denoised - d_1) / r0
                d1_1 = (d_1 - d_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_3 = phi_2 / h_eta - 0.5
                x = x + phi_2 * d1 - phi_3 * d2
            elif h_1 is not None:
                x = x + phi_2 * (denoised - d_1) / (h_1 / h)
            if eta:
                x = x + noise_sampler(sigma, sigma_next) * sigma_next * math.sqrt(-math.expm1(-2 * h * eta))
            h_1, h_2 = h, h_1
        d_1, d_2 = denoised, d_1
        if callback:
            callback(i, x, denoised)
    return x


@register_sampler("ddpm")
def ddpm(model, x, sigmas, *, callback=None, noise_sampler=None, eta=None):
    """DDPM ancestral sampling (Ho et al.) with the posterior ("fixed small") variance."""
    noise_sampler = noise_sampler or _gaussian(x)
    for i, sigma, sigma_next in _steps(sigmas):
        denoised = model(x, sigmas[i])
        eps = (x - denoised) / sigma
        a_cum, a_cum_prev = 1 / (sigma**2 + 1), 1 / (sigma_next**2 + 1)
        alpha = a_cum / a_cum_prev
        x_vp = x / math.sqrt(sigma**2 + 1)
        mu = math.sqrt(1 / alpha) * (x_vp - (1 - alpha) * eps / math.sqrt(1 - a_cum))
        if sigma_next > 0:
            mu = mu + noise_sampler(sigma, sigma_next) * math.sqrt((1 - alpha) * (1 - a_cum_prev) / (1 - a_cum))
        x = mu * math.sqrt(sigma_next**2 + 1)
        if callback:
            callback(i, x, denoised)
    return x


def _unipc_coefficients(rks: list[float], hh: float, order: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The R matrix, b vector and B(h) of UniPC's bh2 variant."""
    h_phi_1 = math.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1
    factorial = 1
    b_h = math.expm1(hh)
    rk = torch.tensor(rks, dtype=torch.float64)
    rows, b = [], []
    for i in range(1, order + 1):
        rows.append(rk ** (i - 1))
        b.append(h_phi_k * factorial / b_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    return torch.stack(rows), torch.tensor(b, dtype=torch.float64), b_h


@register_sampler("unipc")
def unipc(model, x, sigmas, *, callback=None, noise_sampler=None, eta=None, order: int = 2):
    """UniPC (Zhao et al. 2023): bh2 predictor-corrector on the data prediction, order 2, lower order at the
    start and the end. The model output at each new point corrects that point before the next prediction."""
    steps = len(sigmas) - 1
    lambdas = [-math.log(float(s)) if float(s) > 0 else math.inf for s in sigmas]
    outputs: list[torch.Tensor] = []  # x0 predictions, newest last
    last_x, last_order = None, 1
    for i in range(steps):
        denoised = model(x, sigmas[i])
        if last_x is not None:  # corrector: fix x_i with the model output at x_i itself
            x = _unipc_update(last_x, outputs, lambdas, i - 1, last_order, sigmas, model_t=denoised)
        outputs.append(denoised)
        outputs = outputs[-order:]
        this_order = min(order, steps - i, len(outputs))
        last_x, last_order = x, this_order
        x = _unipc_update(x, outputs, lambdas, i, this_order, sigmas)
        if callback:
            callback(i, x, denoised)
    return x


def _unipc_update(x, outputs, lambdas, s0: int, order: int, sigmas, model_t=None):
    """From x at step s0 (whose x0 prediction is outputs[-1]) to step s0 + 1: the predictor, or, given the model
    output at the new point (`model_t`), the corrector."""
    m0 = outputs[-1]
    lam_s0, lam_t = lambdas[s0], lambdas[s0 + 1]
    h = lam_t - lam_s0
    rks, d1s = [], []
    for k in range(1, order):
        rk = (lambdas[s0 - k] - lam_s0) / h
        rks.append(rk)
        d1s.append((outputs[-(k + 1)] - m0) / rk)
    rks.append(1.0)
    hh = -h
    R, b, b_h = _unipc_coefficients(rks, hh, order)
    x_t = (float(sigmas[s0 + 1]) / float(sigmas[s0])) * x - math.expm1(hh) * m0
    if model_t is None:  # predictor
        if d1s:
            rhos = [0.5] if order == 2 else torch.linalg.solve(R[:-1, :-1], b[:-1]).tolist()
            x_t = x_t - b_h * sum(r * d for r, d in zip(rhos, d1s))
        return x_t
    rhos = [0.5] if order == 1 else torch.linalg.solve(R, b).tolist()
    corr = sum(r * d for r, d in zip(rhos[:-1], d1s)) if d1s else 0
    return x_t - b_h * (corr + rhos[-1] * (model_t - m0))
