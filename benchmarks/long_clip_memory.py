"""Peak memory of sampling long clips with context windows on the CPU: flat in the clip length (the claim: 64 and 128
frames within 1.3x of 16 frames), against the whole clip at once for comparison.

    python benchmarks/long_clip_memory.py                     # tiny UNet3D, 32x32 latent (256x256 frames)
    python benchmarks/long_clip_memory.py --full --steps 1    # the full-size 1.41 B UNet3D (random weights; slow)

Each measurement runs in a fresh Python process: the model is built and warmed up, the peak-RSS counter is reset
(Linux: /proc/self/clear_refs, then VmHWM), and `samplers.sampling.sample` runs (DDIM, cfg 9: cond and uncond in one
batch of 2). "peak" is VmHWM minus the resident memory just before sampling: the UNet calls' activations plus the
sampler's latent-sized tensors, not the weights.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _build(full: bool):
    import torch

    from cinematic.model_loaders import builtin_tiny
    from cinematic.model_loaders.ops import skip_init_ops
    from cinematic.model_loaders.unet3d import UNet3D, UNet3DConfig

    if not full:
        torch.manual_seed(0)
        return UNet3D(builtin_tiny.UNET).eval().requires_grad_(False)
    with torch.device("meta"):
        model = UNet3D(UNet3DConfig(), operations=skip_init_ops)  # text-to-video-ms-1.7b's shapes
    gen = torch.Generator().manual_seed(0)
    weights = {k: torch.randn(v.shape, generator=gen) * 0.02 + (1.0 if v.ndim == 1 and k.endswith("weight") else 0)
               for k, v in model.state_dict().items()}
    model.load_state_dict(weights, assign=True)
    return model.eval().requires_grad_(False)


def measure(frames: int, windows: int, latent: int, steps: int, full: bool) -> dict:
    """One run in this process (called in a fresh subprocess by main)."""
    from pack_loader import load_pack

    load_pack()
    import torch

    from cinematic.samplers.context import ContextOptions
    from cinematic.samplers.sampling import sample

    unet = _build(full)
    gen = torch.Generator().manual_seed(1)
    cond, uncond = torch.randn(1, 77, 1024, generator=gen), torch.randn(1, 77, 1024, generator=gen)
    options = ContextOptions(context_length=windows, context_overlap=4) if windows else None
    with torch.inference_mode():
        unet(torch.zeros(2, 4, 2, 8, 8), torch.tensor([1, 1]), torch.zeros(2, 77, 1024))  # warm up the kernels
        x = torch.zeros(1, 4, frames, latent, latent)
        try:
            Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        except OSError:
            pass
        base = _status("VmRSS")
        start = time.perf_counter()
        out = sample(unet, x, cond, uncond, seed=0, steps=steps, cfg=9.0, sampler="ddim", schedule="modelscope",
                     context=options)
        seconds = time.perf_counter() - start
    assert torch.isfinite(out).all()
    return {"frames": frames, "windows": windows, "peak": _status("VmHWM") - base, "seconds": seconds,
            "threads": torch.get_num_threads()}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", default="16,64,128", help="clip lengths to measure")
    p.add_argument("--context-length", type=int, default=16, help="window length (overlap 4)")
    p.add_argument("--latent", type=int, default=32, help="latent height and width (32: 256x256 frames)")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--full", action="store_true", help="the full-size UNet3D (5.6 GB of fp32 weights) instead of "
                                                       "the tiny one")
    p.add_argument("--no-plain", action="store_true", help="skip the whole-clip comparison runs")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: frames:windows for one measurement
    args = p.parse_args()
    if args.one:
        frames, windows = map(int, args.one.split(":"))
        print(json.dumps(measure(frames, windows, args.latent, args.steps, args.full)))
        return

    def run(frames, windows):
        cmd = [sys.executable, __file__, "--one", f"{frames}:{windows}", "--latent", str(args.latent),
               "--steps", str(args.steps)] + (["--full"] if args.full else [])
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(proc.stderr[-2000:])
        return json.loads(proc.stdout.strip().splitlines()[-1])

    frames = [int(f) for f in args.frames.split(",")]
    model = "full-size 1.41 B" if args.full else "tiny (builtin stand-in)"
    print(f"UNet3D {model}, CPU, latent {args.latent}x{args.latent} ({args.latent * 8}x{args.latent * 8} frames), "
          f"DDIM {args.steps} steps, cfg 9 (batch 2)")
    print(f"{'frames':>6} {'mode':>22} {'peak MiB':>9} {'x 16-frame':>10} {'seconds':>8}")
    modes = [("windows", args.context_length)] + ([] if args.no_plain else [("whole clip", 0)])
    verdict = []
    for label, windows in modes:
        first = None
        for f in frames:
            r = run(f, windows)
            first = first or r["peak"]
            ratio = r["peak"] / first
            name = f"windows of {windows}, overlap 4" if windows else label
            print(f"{f:>6} {name:>22} {r['peak'] / 2**20:>9.1f} {ratio:>10.2f} {r['seconds']:>8.1f}", flush=True)
            if windows:
                verdict.append(ratio)
    flat = max(verdict) <= 1.3
    print(f"windowed peak over the first clip length: at most {max(verdict):.2f}x -> "
          f"{'flat (within 1.3x)' if flat else 'NOT flat'}")


if __name__ == "__main__":
    main()
