"""Text to video without the ComfyUI server, through the pack's own node classes.

    python scripts/make_video.py "a panda playing guitar" --out panda.mp4

Weights are looked up in CINEMATIC_MODELS_DIR (default ./models), under text2video/: a model folder in the original
ModelScope layout or the diffusers layout, or a single .safetensors (see the README). Without any, the built-in demo
model runs instead (model_loaders/builtin_demo.py): trained here on coloured circles and squares moving left, right,
up or down, at 64x64, it makes a real video of prompts like "a red circle moving right" on any CPU in seconds.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

from pack_loader import load_pack


FORMATS = ("mp4", "webm", "gif", "webp")  # nodes.video.FORMATS, checked here before the pack (and torch) is imported
MAX_SEED = 0xFFFFFFFFFFFFFFFF  # the sampler widget's range
DEFAULT_SIZE = 256  # width and height with real weights (the built-in demo model runs at its own 64x64)


def _number_errors(args) -> list[str]:
    """Every numeric argument checked before anything is loaded (a bad one must not cost a model load or a run)."""
    errors = []
    for name in ("width", "height"):
        value = getattr(args, name)
        if value is not None and (value <= 0 or value % 8):
            errors.append(f"--{name} must be a positive multiple of 8 (the VAE works on 8x8 blocks), got {value}")
    if args.frames < 1:
        errors.append(f"--frames must be at least 1, got {args.frames}")
    if args.steps < 1:
        errors.append(f"--steps must be at least 1, got {args.steps}")
    if not (math.isfinite(args.cfg) and args.cfg >= 0):
        errors.append(f"--cfg must be a number >= 0 (the original uses 9), got {args.cfg}")
    if not (math.isfinite(args.fps) and args.fps > 0):
        errors.append(f"--fps must be a number > 0, got {args.fps}")
    if not 0 <= args.seed <= MAX_SEED:
        errors.append(f"--seed must be between 0 and {MAX_SEED}, got {args.seed}")
    if not 0 <= args.image_strength <= 1:
        errors.append(f"--image-strength must be between 0 and 1, got {args.image_strength}")
    if args.falloff < 0:
        errors.append(f"--falloff must be 0 or more, got {args.falloff}")
    if args.resample < 0:
        errors.append(f"--resample must be 0 or more, got {args.resample}")
    if args.image and args.extend:
        errors.append("--image and --extend do not go together: give one")
    if args.extend and not 1 <= args.overlap < args.frames:
        errors.append(f"--overlap must be between 1 and --frames - 1 = {args.frames - 1}, got {args.overlap}")
    for path in (args.image or []) + ([args.extend] if args.extend else []):
        if not path.is_file():
            errors.append(f"{path} is not a file")
    if args.frames_per_batch < 1:
        errors.append(f"--frames-per-batch must be at least 1, got {args.frames_per_batch}")
    fmt = args.out.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        errors.append(f"--out must end in one of .{', .'.join(FORMATS)} (got {args.out.name})")
    return errors


def parse_args(argv):
    p = argparse.ArgumentParser(description="Make a video from a prompt with the ModelScope text-to-video model.")
    p.add_argument("prompt", help="what the video should show (English)")
    p.add_argument("--out", type=Path, default=Path("video.mp4"), help="output file (.mp4, .webm, .gif or .webp)")
    p.add_argument("--negative", default="", help="negative prompt (the original: empty)")
    p.add_argument("--model", help="entry of models/text2video to use (default: the first one found)")
    p.add_argument("--context-length", type=int, default=0, help="long clips: frames per context window (16 as "
                   "trained; 0, the default, runs the whole clip at once); memory follows the window")
    p.add_argument("--context-overlap", type=int, default=4, help="frames shared by neighbouring windows")
    p.add_argument("--context-schedule", default="standard_static", help="standard_static, standard_uniform, "
                   "looped_uniform or batched")
    p.add_argument("--freenoise", action="store_true", help="FreeNoise: later frames start from shuffled copies of "
                   "earlier frames' noise (with --context-length)")
    p.add_argument("--prompt-schedule", type=Path, metavar="FILE", help="prompt travel: a text file with one "
                   "`N: prompt` keyframe per line over the --frames frames; the positional prompt is put before "
                   "every keyframe's prompt (give \"\" for none)")
    p.add_argument("--image", type=Path, action="append", metavar="PATH", help="image-to-video: hold this image on "
                   "the --keyframes frames (repeat --image for one image per keyframe); resized to --width x --height")
    p.add_argument("--keyframes", default="0", help='frames of the --image(s), comma-separated, negative from the '
                   'end: "0" (first, default), "-1" (last), "0,-1" (a loop)')
    p.add_argument("--image-strength", type=float, default=1.0, help="how long the images are held: 1 the whole "
                   "schedule (default), lower lets the model move them")
    p.add_argument("--falloff", type=int, default=0, help="also hold this many frames around each keyframe, weaker "
                   "with distance")
    p.add_argument("--extend", type=Path, metavar="VIDEO", help="continue this video: its last --overlap frames are "
                   "held and --frames new ones made; the written file holds the whole (its frames resized to "
                   "--width x --height)")
    p.add_argument("--overlap", type=int, default=4, help="frames of --extend's video that start the new part")
    p.add_argument("--resample", type=int, default=0, help="with --image/--extend: redo each step this many more "
                   "times (RePaint) so new frames agree with held ones; each costs a pass per step")
    p.add_argument("--models-dir", type=Path, help="folder holding text2video/ (default: $CINEMATIC_MODELS_DIR or ./models)")
    p.add_argument("--width", type=int, help="a positive multiple of 8 (default 256; the built-in demo model: 64)")
    p.add_argument("--height", type=int, help="a positive multiple of 8 (default 256; the built-in demo model: 64)")
    p.add_argument("--frames", type=int, default=16, help="at least 1")
    p.add_argument("--steps", type=int, default=50, help="at least 1")
    p.add_argument("--cfg", type=float, default=9.0, help=">= 0")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sampler", default="ddim")
    p.add_argument("--scheduler", default="modelscope")
    p.add_argument("--fps", type=float, default=8.0, help="> 0")
    p.add_argument("--weight-dtype", default="default", choices=["default", "fp32", "fp16", "bf16"])
    p.add_argument("--frames-per-batch", type=int, default=4, help="frames decoded at once (memory, not result)")
    args = p.parse_args(argv)
    errors = _number_errors(args)
    if errors:
        p.error("; ".join(errors))  # one `error:` line, exit status 2
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    from frame_inputs import held_frames_latent, keyframe_error, read_inputs

    early_error = _long_clip_error(args) or keyframe_error(args)
    if early_error:
        print(f"error: {early_error}", file=sys.stderr)
        return 2
    if args.models_dir:
        os.environ["CINEMATIC_MODELS_DIR"] = str(args.models_dir)
    pack = load_pack()
    from cinematic.model_loaders import builtin_demo, builtin_tiny
    from cinematic.model_loaders.safe_load import ModelFileError
    from cinematic.nodes import comfy_env
    from cinematic.nodes.video import VideoWriteError, write_video
    import torch
    from cinematic.samplers.registry import SAMPLERS, SCHEDULES

    nodes = pack.NODE_CLASS_MAPPINGS
    fmt = args.out.suffix.lower().lstrip(".")
    for flag, value, registry in (("--sampler", args.sampler, SAMPLERS), ("--scheduler", args.scheduler, SCHEDULES)):
        if value not in registry:
            print(f"error: {flag} must be one of {', '.join(registry)} (got {value!r})", file=sys.stderr)
            return 2
    start = time.time()
    try:
        available = comfy_env.list_models(comfy_env.TEXT2VIDEO, include_folders=True, files_in_model_folders=False)
        model = args.model or (available[0] if available else None)
        demo = (model is None and builtin_demo.available()) or model == builtin_demo.NAME
        if demo:
            model = builtin_demo.NAME
            where = comfy_env.models_root() / comfy_env.TEXT2VIDEO
            _builtin_demo_note(args, builtin_demo, where, named=bool(args.model))
        args.width, args.height = args.width or DEFAULT_SIZE, args.height or DEFAULT_SIZE
        inputs = read_inputs(args) if args.image or args.extend else None  # a bad file fails before any model load
        if demo:
            unet, text, vae = builtin_demo.load(args.weight_dtype)
        elif model is None:
            where = comfy_env.models_root() / comfy_env.TEXT2VIDEO
            print(f"NOTE: no model weights found in {where}, and the built-in demo model\n"
                  f"      {builtin_demo.PATH} is missing (reinstall the pack to get it back).\n"
                  "      Running a tiny built-in model with RANDOM weights: the video will be noise.", file=sys.stderr)
            unet, text, vae = builtin_tiny.build()
            if args.steps > builtin_tiny.MAX_STEPS:
                print(f"      (the stand-in runs {builtin_tiny.MAX_STEPS} steps instead of {args.steps}: its output is "
                      "noise either way)", file=sys.stderr)
                args.steps = builtin_tiny.MAX_STEPS
            model = "builtin-tiny-random"
        else:
            print(f"loading {model} ...", file=sys.stderr)
            unet, text, vae = nodes["CinematicCheckpointLoader"]().load(model, args.weight_dtype)
        if args.prompt_schedule:
            (positive,) = nodes["CinematicPromptSchedule"]().encode(
                text, args.prompt_schedule.read_text(encoding="utf-8"), args.frames, pre_text=args.prompt)
        else:
            (positive,) = nodes["CinematicTextEncode"]().encode(text, args.prompt)
        (negative,) = nodes["CinematicTextEncode"]().encode(text, args.negative)
        held = None
        if args.image or args.extend:
            latent, held = held_frames_latent(args, nodes, vae, inputs)
        else:
            (latent,) = nodes["CinematicEmptyVideoLatent"]().generate(args.width, args.height, args.frames, 1)
        long_clip = {}
        if args.context_length:
            (long_clip["context_options"],) = nodes["CinematicContextOptions"]().build(
                args.context_length, args.context_overlap, args.context_schedule, "pyramid", freenoise=args.freenoise)
        (latent,) = nodes["CinematicSampler"]().sample(unet, positive, negative, latent, args.seed, args.steps,
                                                       args.cfg, args.sampler, args.scheduler, 1.0, **long_clip,
                                                       resample=args.resample)
        (images,) = nodes["CinematicVAEDecode"]().decode(vae, latent, args.frames_per_batch)
        if held is not None:  # --extend: the original frames, then the new ones after the overlap
            images = torch.cat([held, images[args.overlap:]])
        prompt_meta = {"prompt": args.prompt, "negative": args.negative, "model": model,
                       "seed": args.seed, "steps": args.steps, "cfg": args.cfg, "sampler": args.sampler,
                       "scheduler": args.scheduler}
        if args.image or args.extend:
            prompt_meta.update(image=[str(p) for p in args.image or []], keyframes=args.keyframes,
                               image_strength=args.image_strength, extend=str(args.extend or ""),
                               overlap=args.overlap, resample=args.resample)
        write_video(images, args.out, args.fps, fmt, prompt=prompt_meta)
    except (ModelFileError, FileNotFoundError, ValueError, VideoWriteError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("cancelled; nothing was written", file=sys.stderr)
        return 130
    print(f"wrote {args.out} ({images.shape[0]} frames, {images.shape[2]}x{images.shape[1]}, "
          f"{time.time() - start:.1f}s)", file=sys.stderr)
    return 0


def _builtin_demo_note(args, builtin_demo, where: Path, named: bool) -> None:
    """Say that the built-in demo model runs, what it knows and at which size; set that size."""
    width, height, frames = builtin_demo.native_size()
    if not named:
        print(f"NOTE: no model weights found in {where}.", file=sys.stderr)
    print(f"NOTE: running the built-in demo model \"{builtin_demo.NAME}\" at its native {width}x{height}\n"
          f"      ({frames} frames as trained). It was trained here on synthetic clips of a red, green, blue or yellow\n"
          "      circle or square moving left, right, up or down: it follows the colour and shape, not yet the\n"
          "      direction; other prompts give a blob of some colour (model_loaders/data/cinematic-demo.md).",
          file=sys.stderr)
    if not named:
        print("      For real videos put text-to-video-ms-1.7b (or zeroscope_v2) there, e.g. the folder with\n"
              "      configuration.json, text2video_pytorch_model.pth, VQGAN_autoencoder.pth and\n"
              "      open_clip_pytorch_model.bin, or a diffusers folder (unet/, vae/, text_encoder/); see README.",
              file=sys.stderr)
    asked = (args.width or width, args.height or height)
    if asked != (width, height):
        print(f"      (--width/--height {asked[0]}x{asked[1]} ignored: the demo model only knows {width}x{height})",
              file=sys.stderr)
    args.width, args.height = width, height


def _long_clip_error(args) -> str | None:
    """The long-clip options, checked before anything is loaded."""
    if args.context_length < 0:
        return f"--context-length must be 0 (no windows) or more, got {args.context_length}"
    if args.context_length and not 0 <= args.context_overlap < args.context_length:
        return (f"--context-overlap must be between 0 and --context-length - 1 = {args.context_length - 1}, got "
                f"{args.context_overlap}")
    schedules = ("standard_static", "standard_uniform", "looped_uniform", "batched")
    if args.context_schedule not in schedules:
        return f"--context-schedule must be one of {', '.join(schedules)}, got {args.context_schedule!r}"
    if args.freenoise and not args.context_length:
        return "--freenoise needs context windows: give --context-length too (e.g. 16)"
    if args.prompt_schedule and not args.prompt_schedule.is_file():
        return f"--prompt-schedule {args.prompt_schedule} is not a file"
    return None


if __name__ == "__main__":
    sys.exit(main())
