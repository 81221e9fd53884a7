"""Wall time of one 16-frame clip's sampling: 4 T2V-Turbo steps (lcm + t2v_turbo, one UNet pass each, cfg = w 7.5)
against 50 DDIM steps at cfg 9 (ddim + modelscope, two UNet passes each, batched), on the same full-size UNet3D.

    python benchmarks/turbo_vs_ddim.py                    # CPU: full-size random weights, 16 frames at 8x8 latent
    python benchmarks/turbo_vs_ddim.py --device cuda --size 256    # a GPU: 16 x 256 x 256 (32 x 32 latent)

Both runs use one module (text-to-video-ms-1.7b's architecture, random weights); the turbo run is a view of it with a
256-wide guidance embedding (as a T2V-Turbo LoRA adds; its LoRA deltas cost nothing per pass once merged). Prints
each run's wall time, its UNet passes (counted at the module), and the ratio. One warm-up pass first; the turbo and
DDIM runs are interleaved (turbo, DDIM, turbo) and the turbo time is the median of its two runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default=None, choices=["fp32", "fp16", "bf16"], help="default: fp16 on CUDA, else fp32")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=64, help="frame size in pixels (latent = size / 8); default 64")
    p.add_argument("--ddim-steps", type=int, default=50)
    p.add_argument("--turbo-steps", type=int, default=4)
    args = p.parse_args()

    from pack_loader import load_pack

    load_pack("cinematic")
    from cinematic.model_loaders.guidance_embedding import DEFAULT_GUIDANCE, GUIDANCE_SCALE
    from cinematic.model_loaders.ops import skip_init_ops
    from cinematic.model_loaders.unet3d import UNet3D, UNet3DConfig
    from cinematic.model_loaders.video_unet import VideoUNet
    from cinematic.samplers.sampling import sample

    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}.get(
        args.dtype, torch.float16 if args.device.startswith("cuda") else torch.float32)
    gen = torch.Generator().manual_seed(0)
    with torch.device("meta"):
        module = UNet3D(UNet3DConfig(), operations=skip_init_ops)
    module.load_state_dict({k: (torch.randn(v.shape, generator=gen) * 0.02
                                + (1.0 if v.ndim == 1 and k.endswith("weight") else 0)).to(dtype)
                            for k, v in module.state_dict().items()}, assign=True)
    module = module.eval().requires_grad_(False).to(args.device).match_weight_layout()
    with torch.no_grad():
        module.add_guidance_embedding(256).weight.normal_(0, 0.02, generator=None)
    base = VideoUNet(module)
    turbo = base.with_options(**{GUIDANCE_SCALE: DEFAULT_GUIDANCE})

    passes = []
    original = module.forward

    def counting(x, *a, **k):
        passes.append(x.shape[0])
        return original(x, *a, **k)

    module.forward = counting
    h = w = args.size // 8
    latent = torch.zeros(1, 4, args.frames, h, w)
    cgen = torch.Generator().manual_seed(1)
    cond, uncond = torch.randn(1, 77, 1024, generator=cgen), torch.randn(1, 77, 1024, generator=cgen)

    def sync():
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    def run(view, steps, cfg, sampler, schedule):
        passes.clear()
        sync()
        start = time.perf_counter()
        with torch.no_grad():
            sample(view, latent, cond, uncond, seed=0, steps=steps, cfg=cfg, sampler=sampler, schedule=schedule,
                   device=args.device, dtype=dtype)
        sync()
        return time.perf_counter() - start, len(passes), sum(passes)

    print(f"[turbo_vs_ddim] device {args.device}, {dtype}, threads {torch.get_num_threads()}, "
          f"{args.frames} frames at {args.size}x{args.size} (latent {h}x{w}), full-size UNet3D "
          f"({sum(v.numel() for v in module.parameters()) / 1e9:.2f} B parameters, random)")
    run(turbo, 1, DEFAULT_GUIDANCE, "lcm", "t2v_turbo")  # warm-up
    turbo_a = run(turbo, args.turbo_steps, DEFAULT_GUIDANCE, "lcm", "t2v_turbo")
    print(f"  turbo {args.turbo_steps} steps: {turbo_a[0]:.1f} s, {turbo_a[1]} UNet calls ({turbo_a[2]} batch rows)")
    ddim = run(base, args.ddim_steps, 9.0, "ddim", "modelscope")
    print(f"  ddim {args.ddim_steps} steps cfg 9: {ddim[0]:.1f} s, {ddim[1]} UNet calls ({ddim[2]} batch rows: "
          f"{ddim[2]} UNet passes of one video)")
    turbo_b = run(turbo, args.turbo_steps, DEFAULT_GUIDANCE, "lcm", "t2v_turbo")
    print(f"  turbo {args.turbo_steps} steps (again): {turbo_b[0]:.1f} s")
    turbo_time = statistics.median([turbo_a[0], turbo_b[0]])
    print(f"RESULT turbo {args.turbo_steps} steps {turbo_time:.1f} s ({turbo_a[2]} passes) vs ddim "
          f"{args.ddim_steps} steps cfg 9 {ddim[0]:.1f} s ({ddim[2]} passes): passes {ddim[2] / turbo_a[2]:.0f}x "
          f"fewer, wall time {ddim[0] / turbo_time:.1f}x faster")


if __name__ == "__main__":
    main()
