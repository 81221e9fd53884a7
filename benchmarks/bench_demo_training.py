"""Seconds per training step of the demo model's stages (scripts/train_demo_model.py), to size a run.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_demo_training.py [--config demo] [--steps 8] [--threads 1 2]

Times the VAE step, the UNet3D + text step and the latent-bank encoding (per clip) on random data of the config's
shapes; the first step of each is a discarded warm-up; prints the median and the load average (other jobs on the
machine slow every figure).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import demo_data  # noqa: E402
import demo_training as dt  # noqa: E402
from pack_loader import load_pack  # noqa: E402


def _median(fn, steps: int) -> float:
    times = []
    for step in range(steps + 1):
        start = time.perf_counter()
        fn(step)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", choices=sorted(dt.CONFIGS), default="demo")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()])
    args = p.parse_args(argv)
    pack = load_pack()
    cfg = dt.CONFIGS[args.config]
    schedule = dt._modules(pack)["samplers.schedule"].DiscreteSchedule()
    ids, tokens = dt.prompt_tokens(pack)
    torch.manual_seed(0)
    unet, vae, text = dt.build_models(cfg, pack, ids)
    vae_opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr)
    params = list(unet.parameters()) + list(text.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.unet_lr)
    ema = {name: p.detach().clone() for name, p in dt._named(unet, text)}
    clips, combos = demo_data.random_clips(8, torch.Generator().manual_seed(0), cfg.frames, cfg.size)
    index = {c: i for i, c in enumerate(demo_data.combos())}
    with torch.no_grad():
        bank = {"latents": dt.encode_clips(vae, clips), "combos": torch.tensor([index[c] for c in combos])}
    millions = [sum(p.numel() for p in m.parameters()) / 1e6 for m in (unet, vae, text)]
    print(f"config {args.config}: UNet3D {millions[0]:.2f} M, VAE {millions[1]:.2f} M, text {millions[2]:.2f} M "
          f"parameters; batches VAE {cfg.vae_batch} frames, UNet {cfg.unet_batch} clips of {cfg.frames}x{cfg.size}^2")
    for threads in args.threads:
        torch.set_num_threads(threads)
        load = os.getloadavg()[0]
        v = _median(lambda s: dt.vae_step(vae, vae_opt, cfg, 0, s), args.steps)
        u = _median(lambda s: dt.unet_step(unet, text, opt, params, ema, cfg, 0, s, bank, tokens, schedule),
                    args.steps)
        with torch.no_grad():
            e = _median(lambda s: dt.encode_clips(vae, clips), max(2, args.steps // 4)) / clips.shape[0]
        print(f"threads {threads} (load average {load:.1f}): VAE {v:.2f} s/step, UNet3D+text {u:.2f} s/step, "
              f"bank encoding {e:.2f} s/clip")
    return 0


if __name__ == "__main__":
    sys.exit(main())
