"""Long clips: context windows, FreeNoise, prompt travel, the rows of a CONDITIONING, FreeInit.

Everything runs the real tiny UNet3D (and the real tiny text encoder); calls are counted with forward hooks on it."""

import itertools

import pytest
import torch

from cinematic.model_loaders.text_encoder import text_encoder_from_state_dict
from cinematic.model_loaders.unet3d import TEMPORAL_WINDOWS, TemporalTransformer
from cinematic.model_loaders.unet_loader import unet_from_state_dict
from cinematic.model_loaders.video_unet import VideoUNet
from cinematic.samplers.conditioning import ConditioningRowsError, match_layouts, rows_for_latent
from cinematic.samplers.context import (SCHEDULES, ContextOptions, context_windows, freenoise_noise, fuse_weights,
                                        window_plan)
from cinematic.samplers.freeinit import FreeInitOptions, low_pass_filter, mix_frequencies
from cinematic.samplers.prompt_schedule import PromptScheduleError, parse_schedule
from cinematic.samplers.sampling import make_noise, sample
from cinematic_testing import tiny_text, tiny_unet

TOL = 1e-5


@pytest.fixture(scope="module")
def unet():
    return unet_from_state_dict(tiny_unet.tiny_state_dict(seed=4), "fp32")


@pytest.fixture(scope="module")
def text_encoder():
    return text_encoder_from_state_dict(tiny_text.reference_clip("tiny", seed=2).state_dict())


def _rows(seed, rows=1, tokens=77):
    return torch.randn(rows, tokens, 1024, generator=torch.Generator().manual_seed(seed))


def _cond(tensor):
    return [[tensor, {"pooled_output": torch.zeros(tensor.shape[0], 1024)}]]


class FrameCounter:
    """Forward pre-hook on the real UNet3D: the frame count of every call."""

    def __init__(self, module):
        self.frames = []
        self.handle = module.register_forward_pre_hook(lambda m, args: self.frames.append(args[0].shape[2]))

    def close(self):
        self.handle.remove()


def _node(pack, name):
    return pack.NODE_CLASS_MAPPINGS[name]()


def _sampler(pack, unet, positive, negative, frames, batch=1, size=4, **kw):
    args = dict(seed=7, steps=2, cfg=5.0, sampler_name="euler", scheduler="karras", denoise=1.0)
    args.update(kw)
    latent = {"samples": torch.zeros(batch, 4, frames, size, size)}
    return _node(pack, "CinematicSampler").sample(unet, positive, negative, latent, **args)[0]["samples"]


def _max_diff(a, b):
    return (a - b).abs().max().item()


def _rel(a, b):
    """max |a - b| relative to max |b| (the tiny random model's latents reach the hundreds)."""
    return ((a - b).abs().max() / b.abs().max()).item()


# ---------------------------------------------------------------------------------------------- windows


@pytest.mark.parametrize("length,schedule", [(12, "standard_static"), (16, "standard_uniform"),
                                             (40, "looped_uniform"), (12, "batched")])
def test_windows_at_least_as_long_as_the_clip_are_the_plain_run(pack, unet, length, schedule):
    cond, uncond = _cond(_rows(1)), _cond(_rows(2))
    plain = _sampler(pack, unet, cond, uncond, frames=12)
    (options,) = _node(pack, "CinematicContextOptions").build(length, 4, schedule, "pyramid")
    counter = FrameCounter(unet)
    try:
        windowed = _sampler(pack, unet, cond, uncond, frames=12, context_options=options)
    finally:
        counter.close()
    assert _max_diff(windowed, plain) <= TOL
    assert counter.frames == [12, 12]  # one whole-clip call per step


def test_shorter_windows_change_the_result(pack, unet):
    """The check above would pass if the options were ignored; windows shorter than the clip do change it."""
    cond, uncond = _cond(_rows(1)), _cond(_rows(2))
    plain = _sampler(pack, unet, cond, uncond, frames=12)
    (options,) = _node(pack, "CinematicContextOptions").build(6, 2, "standard_static", "pyramid")
    assert _max_diff(_sampler(pack, unet, cond, uncond, frames=12, context_options=options), plain) > 1e-3


@pytest.mark.parametrize("schedule,stride", [("standard_static", 1), ("standard_uniform", 2), ("looped_uniform", 3),
                                             ("batched", 1)])
def test_windows_of_8_on_48_frames_never_show_the_unet_more_than_8(pack, unet, schedule, stride):
    (options,) = _node(pack, "CinematicContextOptions").build(8, 2, schedule, "pyramid", context_stride=stride)
    counter = FrameCounter(unet)
    try:
        out = _sampler(pack, unet, _cond(_rows(1)), _cond(_rows(2)), frames=48, steps=2, context_options=options)
    finally:
        counter.close()
    assert out.shape == (1, 4, 48, 4, 4) and torch.isfinite(out).all()
    assert counter.frames and max(counter.frames) <= 8, counter.frames
    expected = sum(len(context_windows(48, options, step)) for step in range(2))
    assert expected >= 2 * 6  # 48 / 8 windows at least
    assert len(counter.frames) == expected  # cond and uncond batched: one call per window per step


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_every_frame_is_covered_by_some_window(schedule):
    for frames, length, stride, closed_loop, step in itertools.product(
            [1, 2, 3, 5, 8, 15, 16, 17, 31, 48, 64, 100], [1, 2, 4, 8, 16], [1, 2, 3, 4], [False, True],
            [0, 1, 2, 3, 7]):
        for overlap in sorted({0, length // 4, length - 1}):
            options = ContextOptions(length, overlap, schedule, "pyramid", stride, closed_loop)
            windows = context_windows(frames, options, step)
            covered = {f for w in windows for f in w}
            case = (frames, length, overlap, stride, closed_loop, step)
            assert covered == set(range(frames)), case
            for w in windows:
                assert len(w) <= max(length, 1) and len(set(w)) == len(w), (case, w)
                assert all(0 <= f < frames for f in w), (case, w)
            if frames <= length:
                assert windows == [list(range(frames))], case


def test_fuse_weights():
    opts = ContextOptions(8, 4, fuse_method="pyramid")
    assert fuse_weights(list(range(8)), 20, opts).tolist() == [1, 2, 3, 4, 4, 3, 2, 1]
    assert fuse_weights(list(range(5)), 20, opts.with_(context_length=5, context_overlap=2)).tolist() == [1, 2, 3, 2, 1]
    assert fuse_weights(list(range(8)), 20, opts.with_(fuse_method="flat")).tolist() == [1] * 8
    relative = fuse_weights(list(range(8)), 20, opts.with_(fuse_method="relative"))
    assert relative.argmax() in (3, 4) and relative.min() > 0 and torch.equal(relative, relative.flip(0))
    linear = opts.with_(fuse_method="overlap-linear")
    first, middle, last = (fuse_weights(list(range(s, s + 8)), 20, linear) for s in (0, 4, 12))
    assert first[:4].tolist() == [1] * 4 and first[4:].tolist() == pytest.approx([0.8, 0.6, 0.4, 0.2])
    assert middle[:4].tolist() == pytest.approx([0.2, 0.4, 0.6, 0.8]) and last[4:].tolist() == [1] * 4
    # where two static windows overlap, the two ramps sum to 1
    assert (first[4:] + middle[:4]).tolist() == pytest.approx([1.0] * 4)


@pytest.mark.parametrize("fuse_method", ["pyramid", "relative", "flat", "overlap-linear"])
def test_windowed_step_is_the_weighted_average_of_whole_unet_calls_on_each_window(unet, fuse_method):
    """One windowed UNet evaluation by hand: each window is a plain UNet call on its frames and its own rows of a
    per-frame conditioning, all on the same latent; the outputs averaged per frame with the fuse weights."""
    from cinematic.samplers.context import WindowedUNet

    frames = 14
    options = ContextOptions(6, 2, "standard_static", fuse_method)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, frames, 8, 8, generator=gen)
    t = torch.tensor([500, 500])
    context = torch.randn(2 * frames, 77, 1024, generator=gen)  # per frame per video
    with torch.no_grad():
        got = WindowedUNet(unet, options)(x, t, context)
        total, weight = torch.zeros_like(x), torch.zeros(frames)
        for index, w in window_plan(frames, options):
            rows = context.reshape(2, frames, 77, 1024)[:, index].reshape(-1, 77, 1024)
            total[:, :, index] += unet(x[:, :, index], t, rows) * w[None, None, :, None, None]
            weight[index] += w
    assert _max_diff(got, total / weight[None, None, :, None, None]) <= TOL


# ---------------------------------------------------------------------------------------------- FreeNoise


def test_freenoise_reschedules_later_blocks_as_permutations_of_earlier_frames():
    options = ContextOptions(16, 4, freenoise=True)
    noise = make_noise((1, 4, 45, 4, 4), seed=11)
    out = freenoise_noise(noise, options, seed=11)
    assert torch.equal(out[:, :, :16], noise[:, :, :16])  # the first window keeps the seed's noise
    assert torch.equal(noise, make_noise((1, 4, 45, 4, 4), seed=11))  # the input is left alone
    start, permutations = 16, []
    while start < 45:
        count = min(12, 45 - start)
        source = out[:, :, start - 16:start - 16 + count]
        perm = []
        for f in range(start, start + count):
            matches = [j for j in range(count) if torch.equal(out[:, :, f], source[:, :, j])]
            assert len(matches) == 1, (f, matches)
            perm.append(matches[0])
        assert sorted(perm) == list(range(count))  # a permutation of the frames one window earlier
        permutations.append(perm)
        start += count
    assert any(p != sorted(p) for p in permutations)  # shuffled, not copied in order
    assert torch.equal(freenoise_noise(noise, options, seed=11), out)  # same seed, same noise
    other = freenoise_noise(noise, options, seed=12)
    assert torch.equal(other[:, :, :16], out[:, :, :16]) and not torch.equal(other, out)
    short = make_noise((1, 4, 16, 4, 4), seed=3)
    assert torch.equal(freenoise_noise(short, options, seed=3), short)


def test_freenoise_sampler_starts_from_the_rescheduled_noise(pack, unet):
    cond, uncond = _rows(1), _rows(2)
    (options,) = _node(pack, "CinematicContextOptions").build(8, 2, "standard_static", "pyramid", freenoise=True)
    got = _sampler(pack, unet, _cond(cond), _cond(uncond), frames=14, context_options=options)
    noise = freenoise_noise(make_noise((1, 4, 14, 4, 4), 7), options, 7)
    with torch.no_grad():
        expected = sample(unet, torch.zeros(1, 4, 14, 4, 4), cond, uncond, seed=7, steps=2, cfg=5.0,
                          sampler="euler", schedule="karras", noise=noise, context=options)
        plain_noise = sample(unet, torch.zeros(1, 4, 14, 4, 4), cond, uncond, seed=7, steps=2, cfg=5.0,
                             sampler="euler", schedule="karras", context=options)
    assert _max_diff(got, expected) <= TOL
    assert _max_diff(got, plain_noise) > 1e-3


def test_freenoise_temporal_attention_windows(pack, unet):
    """FreeNoise's own mode: the UNet sees every frame in one call; only the temporal attention blocks run per
    window (hook on one of them); one window of every frame is the plain model."""
    frames = 12
    gen = torch.Generator().manual_seed(1)
    x, t, ctx = torch.randn(1, 4, frames, 8, 8, generator=gen), torch.tensor([300]), torch.randn(1, 77, 1024)
    temporal = next(m for m in unet.modules() if isinstance(m, TemporalTransformer))
    lengths = []
    handle = temporal.transformer_blocks[0].register_forward_pre_hook(lambda m, a: lengths.append(a[0].shape[1]))
    options = ContextOptions(6, 2, freenoise=True, freenoise_mode="noise + temporal attention windows")
    try:
        with torch.no_grad():
            plain = unet(x, t, ctx)
            whole = unet(x, t, ctx, transformer_options={TEMPORAL_WINDOWS: (frames, [(list(range(frames)),
                                                                                      torch.ones(frames))])})
            lengths.clear()
            windowed = unet(x, t, ctx, transformer_options={TEMPORAL_WINDOWS: (frames, window_plan(frames, options))})
    finally:
        handle.remove()
    assert _max_diff(whole, plain) <= TOL
    assert set(lengths) == {6} and len(lengths) == len(context_windows(frames, options))
    assert _max_diff(windowed, plain) > 1e-4

    counter = FrameCounter(unet)
    try:
        out = _sampler(pack, unet, _cond(_rows(1)), _cond(_rows(2)), frames=frames, context_options=options)
    finally:
        counter.close()
    assert counter.frames == [frames] * 2 and torch.isfinite(out).all()


# ---------------------------------------------------------------------------------------------- rows


def test_rows_of_a_conditioning():
    c = torch.arange(2.0)[:, None, None].expand(2, 3, 4)
    three = rows_for_latent(c, batch=3, frames=5)
    assert three[:, 0, 0].tolist() == [0, 1, 0]  # as core's repeat_to_batch_size
    frames = torch.arange(5.0)[:, None, None].expand(5, 3, 4)
    per_frame = rows_for_latent(frames, batch=2, frames=5)
    assert per_frame[:, 0, 0].tolist() == [0, 1, 2, 3, 4] * 2  # the same rows for every video
    both = torch.arange(10.0)[:, None, None].expand(10, 3, 4)
    assert torch.equal(rows_for_latent(both, batch=2, frames=5), both)
    with pytest.raises(ConditioningRowsError, match=r"120 rows.*1 video.*64 frames"):
        rows_for_latent(torch.zeros(120, 77, 1024), batch=1, frames=64)
    # a per-frame positive and a per-video negative are batched in one layout
    cond, uncond = match_layouts(frames, c[:1], batch=2, frames=5)
    assert cond.shape[0] == uncond.shape[0] == 10 and uncond[:, 0, 0].tolist() == [0] * 10


def test_sampler_repeats_per_video_rows_like_core(pack, unet):
    """Two rows on three videos: video 2 follows row 0 (before, every video got row 0)."""
    c = _rows(1, rows=2)
    got = _sampler(pack, unet, _cond(c), _cond(_rows(2)), frames=2, batch=3)
    explicit = _sampler(pack, unet, _cond(c[[0, 1, 0]]), _cond(_rows(2)), frames=2, batch=3)
    first_only = _sampler(pack, unet, _cond(c[[0, 0, 0]]), _cond(_rows(2)), frames=2, batch=3)
    assert _rel(got, explicit) <= TOL
    assert _rel(got[1], first_only[1]) > 1e-3 and _rel(got[2], first_only[2]) <= TOL


def test_sampler_refuses_a_schedule_of_another_length(pack, unet):
    with pytest.raises(ValueError, match=r"120 rows.*64 frames.*set the schedule's frames to 64"):
        _sampler(pack, unet, _cond(torch.zeros(120, 77, 1024)), _cond(_rows(2)), frames=64, steps=1)


# ---------------------------------------------------------------------------------------------- prompt travel


def test_parse_schedule():
    assert parse_schedule("0: a cat\n\n# comment\n24:  a dog running ") == [(0, "a cat"), (24, "a dog running")]
    assert parse_schedule('"16": "b, c",\n"0": "a",') == [(0, "a"), (16, "b, c")]
    for bad, needle in [("a cat", "not a keyframe"), ("0: a\n0: b", "has a keyframe already"), ("", "no keyframes"),
                        ("-3: x", "negative")]:
        with pytest.raises(PromptScheduleError, match=needle):
            parse_schedule(bad)


def test_schedule_rows_interpolate_between_keyframes(pack, text_encoder):
    (conditioning,) = _node(pack, "CinematicPromptSchedule").encode(
        text_encoder, "2: a red cat\n10: a blue dog", 14, pre_text="photo of", app_text="at night")
    rows, pooled = conditioning[0][0], conditioning[0][1]["pooled_output"]
    assert rows.shape == (14, 77, 1024) and pooled.shape == (14, 1024)
    ends, ends_pooled = text_encoder.encode(["photo of a red cat at night", "photo of a blue dog at night"])
    for k in range(14):
        w = min(max((k - 2) / 8, 0.0), 1.0)
        expected = (1 - w) * ends[0] + w * ends[1]
        assert _max_diff(rows[k], expected) <= TOL, k
        assert _max_diff(pooled[k], (1 - w) * ends_pooled[0] + w * ends_pooled[1]) <= TOL, k
    assert _max_diff(rows[0], rows[2]) == 0 and _max_diff(rows[13], rows[10]) == 0


def test_schedule_of_one_prompt_is_the_single_prompt_result(pack, unet, text_encoder):
    (single,) = _node(pack, "CinematicTextEncode").encode(text_encoder, "a panda playing guitar")
    (schedule,) = _node(pack, "CinematicPromptSchedule").encode(
        text_encoder, "0: a panda playing guitar\n5: a panda playing guitar\n9: a panda playing guitar", 10)
    (negative,) = _node(pack, "CinematicTextEncode").encode(text_encoder, "")
    assert schedule[0][0].shape[0] == 10
    a = _sampler(pack, unet, single, negative, frames=10)
    b = _sampler(pack, unet, schedule, negative, frames=10)
    assert _rel(b, a) <= TOL


def test_fizznodes_shaped_per_frame_conditioning_reaches_each_frame(pack, unet):
    """A BatchPromptSchedule-shaped CONDITIONING ([F, 77, 1024] + pooled [F, 1024]). With the temporal layers off
    the frames are independent, so frame k of the per-frame run equals frame k of a run on row k alone; with
    windows the rows are sliced with the frames the same way."""
    frames = 8
    rows = _rows(5, rows=frames)
    fizz = [[rows, {"pooled_output": torch.randn(frames, 1024)}]]
    (off,) = _node(pack, "CinematicTemporalStrength").apply(VideoUNet(unet), 0.0, 0.0)
    (windows,) = _node(pack, "CinematicContextOptions").build(4, 1, "standard_static", "pyramid")
    negative = _cond(_rows(2))
    travel = _sampler(pack, off, fizz, negative, frames=frames)
    travel_windowed = _sampler(pack, off, fizz, negative, frames=frames, context_options=windows)
    for k in (0, 3, 7):
        alone = _sampler(pack, off, _cond(rows[k:k + 1]), negative, frames=frames)
        assert _rel(travel[:, :, k], alone[:, :, k]) <= TOL, k
        assert _rel(travel_windowed[:, :, k], alone[:, :, k]) <= TOL, k
    first_row = _sampler(pack, off, _cond(rows[:1]), negative, frames=frames)
    assert _max_diff(travel[:, :, 5], first_row[:, :, 5]) > 1e-3
    # and with the temporal layers on, the per-frame run is accepted too
    assert torch.isfinite(_sampler(pack, unet, fizz, negative, frames=frames, context_options=windows)).all()


def test_per_frame_positive_and_per_video_negative_share_one_call(pack, unet):
    counter = FrameCounter(unet)
    try:
        _sampler(pack, unet, _cond(_rows(1, rows=6)), _cond(_rows(2)), frames=6, steps=2)
    finally:
        counter.close()
    assert len(counter.frames) == 2


# ---------------------------------------------------------------------------------------------- FreeInit


def test_freeinit_filter():
    for name in ("butterworth", "gaussian"):
        gain = low_pass_filter(8, 16, 16, FreeInitOptions(filter=name))
        assert gain[0, 0, 0] == 1 and gain.min() >= 0 and gain.max() <= 1
        assert gain[4, 8, 8] < 1e-2  # the highest frequency is cut
        x = torch.randn(1, 4, 8, 16, 16)
        assert _max_diff(mix_frequencies(x, x, gain), x) <= 1e-5  # low + high of the same signal = the signal
    butter = low_pass_filter(8, 16, 16, FreeInitOptions(d_s=0.25, d_t=0.25))
    # at the cut-off radius (0.25 of the band along one spatial axis: 2 of 16 bins) the butterworth gain is 1/2
    assert butter[0, 2, 0].item() == pytest.approx(0.5)


def test_freeinit_restarts_from_the_low_frequencies_of_the_last_result():
    """The re-initialisation by the formula: run i+1 starts at latent L(result_i) and noise L(noise) + (1-L)(fresh),
    i.e. at x = L(result_i + c * noise) + c * (1-L)(fresh): the result re-noised with the *same* initial noise, low
    frequencies kept, fresh high frequencies from the seed (rescheduled like the initial noise under FreeNoise)."""
    from cinematic.samplers.freeinit import fresh_noise, low_pass, sample_freeinit

    shape = (1, 4, 8, 6, 6)
    noise = make_noise(shape, 3)
    calls, results = [], [torch.randn(shape, generator=torch.Generator().manual_seed(i)) for i in range(3)]

    def run(latent, start_noise, callback):
        calls.append((latent, start_noise))
        return results[len(calls) - 1]

    options = FreeInitOptions(iterations=3, filter="gaussian", d_s=0.3, d_t=0.2)
    gain = low_pass_filter(8, 6, 6, options)
    flip = lambda n: n.flip(2)  # noqa: E731  (any reschedule)
    out = sample_freeinit(run, torch.zeros(shape), noise, options, seed=3, steps_per_run=1, reschedule=flip)
    assert torch.equal(out, results[2]) and len(calls) == 3
    assert torch.equal(calls[0][1], noise) and not calls[0][0].any()
    for i in (1, 2):
        latent, start = calls[i]
        assert _max_diff(latent, low_pass(results[i - 1], gain)) <= 1e-6
        assert _max_diff(start, mix_frequencies(noise, flip(fresh_noise(shape, 3, i)), gain)) <= 1e-6
    assert not torch.equal(fresh_noise(shape, 3, 1), fresh_noise(shape, 3, 2))
    assert torch.equal(fresh_noise(shape, 3, 1), fresh_noise(shape, 3, 1))


def test_freeinit_one_iteration_is_plain_sampling_and_two_cost_twice(pack, unet):
    cond, uncond = _cond(_rows(1)), _cond(_rows(2))
    plain = _sampler(pack, unet, cond, uncond, frames=6)
    (once,) = _node(pack, "CinematicFreeInit").build(1, "butterworth", 0.25, 0.25)
    assert torch.equal(_sampler(pack, unet, cond, uncond, frames=6, freeinit=once), plain)
    (twice,) = _node(pack, "CinematicFreeInit").build(2, "gaussian", 0.25, 0.25)
    counter = FrameCounter(unet)
    try:
        out = _sampler(pack, unet, cond, uncond, frames=6, freeinit=twice)
    finally:
        counter.close()
    assert len(counter.frames) == 2 * 2
    assert _max_diff(out, plain) > 1e-3 and torch.isfinite(out).all()


def test_freeinit_progress_counts_every_iteration(pack, unet, monkeypatch):
    from cinematic.nodes import comfy_env

    seen = []

    class Recorder:
        def __init__(self, total, what):
            seen.append(("total", total))
            self.wants_preview = False

        def update(self, value, preview=None):
            seen.append(value)

        def close(self):
            pass

    monkeypatch.setattr(comfy_env, "Progress", Recorder)
    (three,) = _node(pack, "CinematicFreeInit").build(3, "butterworth", 0.25, 0.25)
    _sampler(pack, unet, _cond(_rows(1)), _cond(_rows(2)), frames=4, steps=2, freeinit=three)
    assert seen == [("total", 6), 1, 2, 3, 4, 5, 6]


# ---------------------------------------------------------------------------------------------- headless command


def test_make_video_with_windows_freenoise_and_a_prompt_schedule(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    import imageio_ffmpeg

    script = Path(__file__).resolve().parents[1] / "scripts" / "make_video.py"
    schedule = tmp_path / "schedule.txt"
    schedule.write_text("0: a cat walking\n4: a dog running\n")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "CINEMATIC_MODELS_DIR": str(tmp_path / "none"),
           "OMP_NUM_THREADS": "1"}
    out = tmp_path / "long.mp4"
    base = [sys.executable, str(script), "photo of", "--out", str(out), "--frames", "6", "--width", "32",
            "--height", "32", "--steps", "2"]
    proc = subprocess.run(base + ["--context-length", "4", "--context-overlap", "1", "--freenoise",
                                  "--prompt-schedule", str(schedule)], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "context windows of 4 frames over 6" in proc.stdout + proc.stderr
    assert imageio_ffmpeg.count_frames_and_secs(str(out))[0] == 6
    for extra, needle in [(["--context-length", "4", "--context-overlap", "4"], "--context-overlap must be"),
                          (["--freenoise"], "--freenoise needs context windows"),
                          (["--prompt-schedule", str(tmp_path / "missing.txt")], "is not a file")]:
        proc = subprocess.run(base + extra, capture_output=True, text=True, env=env)
        assert proc.returncode == 2 and needle in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
