"""The two registries: sampler functions and sigma schedules. The node's dropdowns are their keys.

Adding either is one decorated function, also from another pack:

    from <this pack>.samplers.registry import register_sampler, register_schedule

    @register_sampler("my_sampler")
    def my_sampler(model, x, sigmas, *, callback=None, noise_sampler=None, eta=None):
        ...                      # model(x, sigma) -> denoised x0 (k-diffusion convention), returns the final x

    @register_schedule("my_schedule")
    def my_schedule(schedule, steps):
        ...                      # -> descending sigmas of length steps + 1 (float64)
"""

from __future__ import annotations

from typing import Callable

SAMPLERS: dict[str, Callable] = {}
SCHEDULES: dict[str, Callable] = {}


def register_sampler(name: str):
    def wrap(fn):
        if name in SAMPLERS and SAMPLERS[name] is not fn:
            raise ValueError(f"a sampler named {name!r} is already registered")
        SAMPLERS[name] = fn
        return fn

    return wrap


def register_schedule(name: str):
    def wrap(fn):
        if name in SCHEDULES and SCHEDULES[name] is not fn:
            raise ValueError(f"a schedule named {name!r} is already registered")
        SCHEDULES[name] = fn
        return fn

    return wrap
