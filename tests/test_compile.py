"""The opt-in compiled path (CINEMATIC_COMPILE=1): same output as eager within float rounding, no recompilation across
steps or window lengths, and a clean fallback where compilation is unavailable.

The graph capture, guards and dynamic frame count are torch.compile's whole front end whatever the backend; the test
uses the `aot_eager` backend by default (seconds) instead of inductor's C++ code generation (minutes on 2 cores):
CINEMATIC_TEST_COMPILE_BACKEND=inductor runs it with inductor (passed here: 2 tests in 3.7 minutes)."""

import os

import pytest
import torch

from cinematic.model_loaders.unet_loader import unet_from_state_dict
from cinematic.model_loaders.video_unet import VideoUNet, compiled_forward
from cinematic_testing import tiny_unet


@pytest.fixture(scope="module")
def model():
    return unet_from_state_dict(tiny_unet.tiny_state_dict(seed=9), "fp32")


def _inputs(frames, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(1, 4, frames, 8, 8, generator=gen), torch.randn(1, 77, 1024, generator=gen)


def test_compiled_equals_eager_and_does_not_recompile(model, monkeypatch):
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    view = VideoUNet(model)
    with torch.no_grad():
        eager = [model(*_in[:1], torch.tensor([t]), _in[1]) for t, _in in ((900, _inputs(6)), (500, _inputs(6, 1)),
                                                                            (100, _inputs(4, 2)))]
        monkeypatch.setenv("CINEMATIC_COMPILE", "1")
        monkeypatch.setenv("CINEMATIC_COMPILE_BACKEND", os.environ.get("CINEMATIC_TEST_COMPILE_BACKEND", "aot_eager"))
        got = [view(x, torch.tensor([t]), c) for t, (x, c) in ((900, _inputs(6)), (500, _inputs(6, 1)))]
        graphs_after_two_steps = counters["stats"]["unique_graphs"]
        x, c = _inputs(4, 2)  # a shorter window: the frame count is dynamic
        got.append(view(x, torch.tensor([100]), c))
    assert compiled_forward(model).failed is None, compiled_forward(model).failed
    for a, b in zip(got, eager):
        assert ((a - b).abs().max() / b.abs().max()).item() <= 1e-4
    assert graphs_after_two_steps >= 1
    assert counters["stats"]["unique_graphs"] == graphs_after_two_steps, "recompiled for another step or length"


def test_unavailable_compiler_falls_back_to_eager(monkeypatch):
    model = unet_from_state_dict(tiny_unet.tiny_state_dict(seed=10), "fp32")
    monkeypatch.setenv("CINEMATIC_COMPILE", "1")
    monkeypatch.setenv("CINEMATIC_COMPILE_BACKEND", "no_such_backend")
    x, c = _inputs(3)
    with torch.no_grad():
        got = VideoUNet(model)(x, torch.tensor([500]), c)
        expected = model(x, torch.tensor([500]), c)
    assert compiled_forward(model).failed  # said why, once
    assert torch.equal(got, expected)
