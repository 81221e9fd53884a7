"""Train the demo text-to-video model from scratch on synthetic clips (scripts/demo_data.py), with the pack's own
architectures at small size, and write it as the pack's single-file safetensors (unet., vae., text_encoder.).

    OMP_NUM_THREADS=2 .venv/bin/python scripts/train_demo_model.py --workdir demo-run --out cinematic-demo.safetensors

Stages, all in one run (scripts/demo_training.py holds the steps):
  1. the AutoencoderKL (8x downsampling) on single frames; its latents are then normalised (an exact
     re-parametrisation folded into quant_conv / post_quant_conv) so that latent x 0.18215 has unit variance per
     channel, as the sampler expects;
  2. a bank of clips encoded once (posterior means);
  3. the UNet3D and the text tower (transformers' CLIPTextModel, the structure the pack loads, fed by the pack's
     tokenizer) together: eps prediction on the scaled-linear schedule, offset noise, 10% empty prompts for
     classifier-free guidance, a constant learning rate after warm-up, an EMA of the weights (what is written).
Then the file is written (fp16), loaded back through the pack's checkpoint loader and evaluated
(demo_data.judge_video) over all 32 prompts x 4 seeds that training never used.

Seeded and resumable: every step draws its data and noise from a generator seeded by (seed, stage, step), and the
whole state (weights, optimisers, EMA, steps) is saved in --workdir every --save-every steps, on Ctrl-C and at the
end of each stage; the same command continues the run. Stopped and resumed, a run gives the same result as one run
(with the same thread count). --stop-after N stops (saved) after N steps of this invocation.

The run that ships (defaults: 1500 VAE steps at 16 frames, 1024 bank clips, 3000 UNet steps at 16 clips; the log
judges the EMA weights on one seed every 500 UNet steps, and the VAE's reconstructions when its stage ends):
    OMP_NUM_THREADS=2 nohup .venv/bin/python scripts/train_demo_model.py --workdir /work/demo-run \
        --out model_loaders/data/cinematic-demo.safetensors > /work/demo-run.log 2>&1 &
More UNet steps later: the same command with --unet-steps N (N larger); the file is rewritten and evaluated again.
Evaluate a file alone: --eval-only --out FILE [--eval-mp4 DIR] (the videos written as mp4 and read back).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import demo_data  # noqa: E402
import demo_training as dt  # noqa: E402
from pack_loader import load_pack  # noqa: E402

STATE = "state.pt"
BANK = "bank.pt"
#: fields that may change between a run and its resumption (more steps; the VAE rate's fall follows vae_steps)
_RESUMABLE = {"vae_steps", "unet_steps"}


def _same_run(saved: dict, cfg: dt.Config, seed: int) -> str | None:
    now = dict(asdict(cfg), seed=seed)
    diff = [k for k in now if k not in _RESUMABLE and json.dumps(saved.get(k)) != json.dumps(now[k])]
    return f"the run in the workdir differs in {', '.join(diff)}" if diff else None


def run(cfg: dt.Config, args, pack) -> int:
    mods = dt._modules(pack)
    schedule = mods["samplers.schedule"].DiscreteSchedule()
    torch.manual_seed(args.seed)
    token_ids, tokens = dt.prompt_tokens(pack)
    unet, vae, text = dt.build_models(cfg, pack, token_ids)
    vae_opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    params = list(unet.parameters()) + list(text.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.unet_lr, weight_decay=0.0)
    ema = {name: p.detach().clone() for name, p in dt._named(unet, text)}
    st = {"vae_step": 0, "unet_step": 0, "latent_stats": None, "seconds": 0.0, "log": []}
    args.workdir.mkdir(parents=True, exist_ok=True)
    state_path = args.workdir / STATE
    if state_path.is_file():
        saved = torch.load(state_path, weights_only=True)
        problem = _same_run(saved["config"], cfg, args.seed)
        if problem:
            print(f"error: {problem}; use another --workdir or the same settings", file=sys.stderr)
            return 2
        unet.load_state_dict(saved["unet"]), vae.load_state_dict(saved["vae"]), text.load_state_dict(saved["text"])
        vae_opt.load_state_dict(saved["vae_opt"]), opt.load_state_dict(saved["opt"])
        ema = saved["ema"]
        st = saved["progress"]
        if st["latent_stats"] is not None and cfg.vae_steps > st["vae_step"]:
            print(f"error: the VAE stage of this run ended at step {st['vae_step']} (its latents are normalised and "
                  "encoded); more VAE steps need a new --workdir", file=sys.stderr)
            return 2
        print(f"resumed: VAE step {st['vae_step']}, UNet step {st['unet_step']}", file=sys.stderr)

    clock = [time.time()]

    def save():
        now = time.time()
        st["seconds"] += now - clock[0]
        clock[0] = now
        tmp = state_path.with_name(STATE + ".tmp")
        torch.save({"config": dict(asdict(cfg), seed=args.seed), "unet": unet.state_dict(), "vae": vae.state_dict(),
                    "text": text.state_dict(), "vae_opt": vae_opt.state_dict(), "opt": opt.state_dict(), "ema": ema,
                    "progress": st}, tmp)
        tmp.replace(state_path)

    budget = args.stop_after or float("inf")
    done = 0

    def tick(stage: str, step: int, loss: float, every: int = 50):
        nonlocal done
        done += 1
        if step % every == 0 or step < 3:
            st["log"].append((stage, step, loss))
            print(f"{stage} step {step} loss {loss:.4f} ({st['seconds'] + time.time() - clock[0]:.0f}s)",
                  file=sys.stderr, flush=True)
        if step % args.save_every == 0:
            save()

    try:
        vae.train()
        while st["vae_step"] < cfg.vae_steps and done < budget:
            loss = dt.vae_step(vae, vae_opt, cfg, args.seed, st["vae_step"])
            st["vae_step"] += 1
            tick("vae", st["vae_step"], loss)
        if st["vae_step"] >= cfg.vae_steps and st["latent_stats"] is None:
            st["vae_check"] = dt.vae_check(vae, cfg, args.seed)
            print("VAE reconstructions judged as the samples will be:\n" + demo_data.format_table(st["vae_check"]),
                  file=sys.stderr)
            st["latent_stats"] = dt.normalise_latents(vae, cfg, args.seed, mods["model_loaders.vae"].SCALE_FACTOR)
            save()
        bank_path = args.workdir / BANK
        bank = None
        if st["latent_stats"] is not None:
            if bank_path.is_file():
                bank = torch.load(bank_path, weights_only=True)
            else:
                clips, combos = demo_data.random_clips(cfg.bank, dt.generator(args.seed, 2, 1), cfg.frames, cfg.size)
                index = {c: i for i, c in enumerate(demo_data.combos())}
                bank = {"latents": dt.encode_clips(vae, clips), "combos": torch.tensor([index[c] for c in combos])}
                torch.save(bank, bank_path)
        unet.train(), text.train()
        while bank is not None and st["unet_step"] < cfg.unet_steps and done < budget:
            loss = dt.unet_step(unet, text, opt, params, ema, cfg, args.seed, st["unet_step"], bank, tokens, schedule)
            st["unet_step"] += 1
            tick("unet", st["unet_step"], loss)
            if args.eval_every and st["unet_step"] % args.eval_every == 0 and st["unet_step"] < cfg.unet_steps:
                probe = args.workdir / "progress.safetensors"  # the EMA weights so far, judged on one seed
                dt.write_single_file(probe, cfg, unet, text, vae, ema, pack, {"config": asdict(cfg)})
                summary = evaluate(probe, pack, seeds=[1001], steps=10, cfg_scale=args.eval_cfg)
                st["log"].append(("eval", st["unet_step"], summary))
                print(f"UNet step {st['unet_step']}, one seed, 10 steps:\n{demo_data.format_table(summary)}",
                      file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        save()
        print(f"stopped at VAE step {st['vae_step']}, UNet step {st['unet_step']}; the same command continues",
              file=sys.stderr)
        return 130
    save()
    if st["unet_step"] < cfg.unet_steps:
        print(f"paused at VAE step {st['vae_step']}/{cfg.vae_steps}, UNet step {st['unet_step']}/{cfg.unet_steps} "
              f"({st['seconds']:.0f}s so far); the same command continues", file=sys.stderr)
        return 0
    card = {"config": asdict(cfg), "seed": args.seed, "train_seconds": round(st["seconds"], 1),
            "latent_stats": st["latent_stats"], "vae_check": st.get("vae_check")}
    size = dt.write_single_file(args.out, cfg, unet, text, vae, ema, pack, card)
    print(f"wrote {args.out} ({size / 1e6:.2f} MB) after {st['vae_step']} VAE + {st['unet_step']} UNet steps, "
          f"{st['seconds']:.0f}s of training", file=sys.stderr)
    if args.eval_steps:
        summary = evaluate(args.out, pack, seeds=range(1001, 1001 + args.eval_seeds), steps=args.eval_steps,
                           cfg_scale=args.eval_cfg, mp4_dir=args.eval_mp4)
        print(demo_data.format_table(summary))
    return 0


def evaluate(path: Path, pack, seeds=range(1001, 1005), steps: int = 25, cfg_scale: float = 7.0,
             sampler: str = "ddim", scheduler: str = "modelscope", frames: int | None = None,
             mp4_dir: Path | None = None) -> dict:
    """Load `path` through the pack's checkpoint loader, make every combo's video with each seed (the 32 prompts as
    one batch per seed) through the pack's nodes, and judge the decoded frames (8-bit; with `mp4_dir`, each video
    written there as an mp4 and read back)."""
    from importlib import import_module

    write_video = import_module(f"{pack.__name__}.nodes.video").write_video
    read_video_frames = import_module(f"{pack.__name__}.nodes.video_reader").read_video_frames

    load_checkpoint = import_module(f"{pack.__name__}.model_loaders.checkpoint").load_checkpoint
    video_unet = import_module(f"{pack.__name__}.model_loaders.video_unet")
    nodes = pack.NODE_CLASS_MAPPINGS
    unet, text, vae = load_checkpoint(path, "fp32")
    unet = video_unet.VideoUNet(unet)
    card = json.loads(import_module(f"{pack.__name__}.model_loaders.safe_load").safetensors_metadata(path)
                      .get("cinematic_demo_model", "{}"))
    size = card.get("config", {}).get("size", demo_data.SIZE)
    frames = frames or card.get("config", {}).get("frames", demo_data.FRAMES)
    combos = demo_data.combos()
    cond, pooled = text.encode([c.prompt() for c in combos])  # one row per video
    positive = [[cond, {"pooled_output": pooled}]]
    (negative,) = nodes["CinematicTextEncode"]().encode(text, "")
    results = []
    for seed in seeds:
        (latent,) = nodes["CinematicEmptyVideoLatent"]().generate(size, size, frames, len(combos))
        (latent,) = nodes["CinematicSampler"]().sample(unet, positive, negative, latent, seed, steps, cfg_scale,
                                                       sampler, scheduler, 1.0)
        (images,) = nodes["CinematicVAEDecode"]().decode(vae, latent, 64)
        for i, combo in enumerate(combos):
            video = images[i * frames:(i + 1) * frames]
            if mp4_dir is not None:  # through the file a user gets: H.264, read back by ffmpeg
                path = write_video(video, Path(mp4_dir) / f"{seed}-{i:02d}.mp4", 8.0, "mp4")
                video = read_video_frames(path)
            else:
                video = (video * 255).round() / 255  # 8 bits, as in a video file
            results.append(demo_data.judge_video(video, combo))
    return demo_data.summarise(results)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, help="checkpoints of this run (resumed when present); needed to train")
    p.add_argument("--out", type=Path, required=True, help="the single-file safetensors to write")
    p.add_argument("--config", choices=sorted(dt.CONFIGS), default="demo")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vae-steps", type=int, help="override the config's VAE steps (may grow on resume)")
    p.add_argument("--unet-steps", type=int, help="override the config's UNet steps (may grow on resume)")
    p.add_argument("--bank", type=int, help="override the config's number of encoded training clips")
    p.add_argument("--save-every", type=int, default=100)
    p.add_argument("--stop-after", type=int, default=0, help="stop (saved, resumable) after this many steps")
    p.add_argument("--eval-steps", type=int, default=25, help="sampling steps of the evaluation (0: skip it)")
    p.add_argument("--eval-seeds", type=int, default=4)
    p.add_argument("--eval-every", type=int, default=500, help="during the UNet stage, judge the EMA weights on one "
                   "seed every this many steps (0: never); the training itself is unchanged")
    p.add_argument("--eval-cfg", type=float, default=9.0, help="guidance scale of the evaluation (make_video's 9)")
    p.add_argument("--eval-only", action="store_true", help="only evaluate --out (no training)")
    p.add_argument("--eval-mp4", type=Path, help="judge the videos as mp4 files written to this folder")
    args = p.parse_args(argv)
    if args.eval_only:
        summary = evaluate(args.out, load_pack(), seeds=range(1001, 1001 + args.eval_seeds), steps=args.eval_steps,
                           cfg_scale=args.eval_cfg, mp4_dir=args.eval_mp4)
        print(demo_data.format_table(summary))
        return 0
    if args.workdir is None:
        p.error("--workdir is needed to train (or give --eval-only)")
    cfg = dt.CONFIGS[args.config]
    overrides = {k: v for k, v in (("vae_steps", args.vae_steps), ("unet_steps", args.unet_steps),
                                   ("bank", args.bank)) if v is not None}
    return run(replace(cfg, **overrides), args, load_pack())


if __name__ == "__main__":
    sys.exit(main())
