"""The demo model's training machinery (scripts/train_demo_model.py is the command): its configs, the three
models at small size, one training step of each stage, the latent normalisation, and writing the single file."""

from __future__ import annotations

import copy
import functools
import importlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

import demo_data


@dataclass(frozen=True)
class Config:
    size: int = 64
    frames: int = 16
    vae_ch: int = 32
    vae_mult: tuple = (1, 1, 2, 2)
    vae_blocks: int = 1
    unet_channels: int = 32
    unet_mult: tuple = (1, 2)
    unet_res_blocks: int = 1
    unet_attention: tuple = (0, 1)
    head_dim: int = 32
    text_width: int = 128
    text_layers: int = 2
    vae_steps: int = 1500
    vae_batch: int = 16
    vae_lr: float = 1e-3
    #: the blob's pixels weigh this much more than the background's in the VAE's loss (the background is ~94% of
    #: the pixels; unweighted, a short run decodes yellow as green)
    vae_fg_weight: float = 10.0
    #: the VAE's rate falls (cosine, to 5%) over its last 40% of steps, and its gradients are clipped: at a constant
    #: 1e-3 a run ended on a loss spike and decoded a quarter of the colours wrong
    vae_decay_from: float = 0.6
    vae_clip: float = 1.0
    bank: int = 1024
    unet_steps: int = 3000
    unet_batch: int = 16
    unet_lr: float = 5e-4
    warmup: int = 100
    offset_noise: float = 0.1
    drop_prompt: float = 0.1
    ema: float = 0.999
    #: from this UNet step on, `focus_share` of each batch draws its timestep from [focus_t, 1000) instead of the
    #: whole range: the prompt decides the direction only where the noise still hides the blob's track, and with
    #: uniform timesteps 1500 steps learnt colour and motion but not the prompt's direction (34%, chance 25%)
    focus_from: int = 1500
    focus_t: int = 500
    focus_share: float = 0.5


CONFIGS = {
    "demo": Config(),
    # for tests: seconds, not minutes
    "micro": Config(size=32, frames=4, unet_attention=(1,), text_width=64, text_layers=1, vae_steps=2,
                    vae_batch=2, bank=4, unet_steps=2, unet_batch=2, warmup=1),
}


def generator(seed: int, stage: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + stage * 100_003 + step)


def lr_at(step: int, base: float, warmup: int) -> float:
    return base * min(1.0, (step + 1) / max(warmup, 1))


def vae_lr_at(step: int, cfg: Config) -> float:
    """Warm-up, constant, then a cosine fall to 5% over the last (1 - vae_decay_from) of the VAE's steps."""
    start = cfg.vae_decay_from * cfg.vae_steps
    if step < start:
        return lr_at(step, cfg.vae_lr, cfg.warmup)
    done = (step - start) / max(cfg.vae_steps - start, 1)
    return cfg.vae_lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(done, 1.0))))


# -------------------------------------------------------------------------------------------------- models


def prompt_tokens(pack) -> tuple[torch.Tensor, torch.Tensor]:
    return _prompt_tokens(pack.__name__)


@functools.lru_cache(maxsize=None)
def _prompt_tokens(pack_name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, rows): the sorted token ids that demo_data.all_prompts() use (the only rows of the token table that
    training touches, and the only ones written), and those prompts as indices into `ids` [P, 77]. The text tower
    trains on this compact table; the file stores it with its ids (text_encoder.TOKEN_ROW_IDS)."""
    te = importlib.import_module(f"{pack_name}.model_loaders.text_encoder")
    tokens = te.Tokenizer()(demo_data.all_prompts())
    ids = tokens.unique()
    return ids, torch.searchsorted(ids, tokens)


def build_models(cfg: Config, pack, ids: torch.Tensor):
    """The three models; the text tower's token table has a row for each of `ids` (prompt_tokens')."""
    from transformers import CLIPTextConfig, CLIPTextModel

    mods = _modules(pack)
    unet3d, vae_mod, te = mods["model_loaders.unet3d"], mods["model_loaders.vae"], mods["model_loaders.text_encoder"]
    unet = unet3d.UNet3D(unet3d.UNet3DConfig(
        model_channels=cfg.unet_channels, channel_mult=cfg.unet_mult, num_res_blocks=cfg.unet_res_blocks,
        attention_levels=cfg.unet_attention, context_dim=cfg.text_width, input_temporal_heads=1,
        head_dim=cfg.head_dim))
    vae = vae_mod.AutoencoderKL(vae_mod.VAEConfig(ch=cfg.vae_ch, ch_mult=cfg.vae_mult, num_res_blocks=cfg.vae_blocks))
    text = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(ids), hidden_size=cfg.text_width, intermediate_size=4 * cfg.text_width,
        num_hidden_layers=cfg.text_layers, num_attention_heads=cfg.text_width // te.HEAD_WIDTH,
        max_position_embeddings=te.CONTEXT_LENGTH, hidden_act="gelu", layer_norm_eps=1e-5,
        bos_token_id=int(torch.searchsorted(ids, te.SOT)), eos_token_id=int(torch.searchsorted(ids, te.EOT)),
        pad_token_id=0))
    return unet, vae, text


def _modules(pack):
    names = ("model_loaders.text_encoder", "model_loaders.vae", "model_loaders.checkpoint", "model_loaders.unet3d",
             "model_loaders.unet_loader", "samplers.schedule")
    return {name: importlib.import_module(f"{pack.__name__}.{name}") for name in names}


# -------------------------------------------------------------------------------------------------- stages


def vae_step(vae, opt, cfg: Config, seed: int, step: int) -> float:
    g = generator(seed, 1, step)
    x = demo_data.random_frames(cfg.vae_batch, g, cfg.size)
    for group in opt.param_groups:
        group["lr"] = vae_lr_at(step, cfg)
    mean, logvar = vae.quant_conv(vae.encoder(x)).chunk(2, dim=1)
    logvar = logvar.clamp(-30, 20)
    z = mean + (0.5 * logvar).exp() * torch.randn(mean.shape, generator=g)
    rec = vae.decoder(vae.post_quant_conv(z))
    kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).sum(dim=(1, 2, 3)).mean()
    background = torch.tensor(demo_data.BACKGROUND).view(1, 3, 1, 1) * 2 - 1
    weight = 1 + (cfg.vae_fg_weight - 1) * ((x - background).abs().amax(dim=1, keepdim=True) > 0.05).float()
    error = rec - x
    loss = ((error.abs() + error.pow(2)) * weight).mean() / weight.mean() + 1e-6 * kl
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(vae.parameters(), cfg.vae_clip)
    opt.step()
    return loss.item()


@torch.no_grad()
def encode_clips(vae, clips: torch.Tensor) -> torch.Tensor:
    """[N, 3, F, H, W] -> posterior means [N, 4, F, h, w]."""
    n, _, f = clips.shape[:3]
    frames = clips.transpose(1, 2).reshape(n * f, clips.shape[1], *clips.shape[-2:])
    mean = torch.cat([vae.quant_conv(vae.encoder(chunk)).chunk(2, dim=1)[0] for chunk in frames.split(64)])
    return mean.reshape(n, f, *mean.shape[1:]).transpose(1, 2).contiguous()


@torch.no_grad()
def vae_check(vae, cfg: Config, seed: int, clips: int = 16) -> dict:
    """demo_data's evaluation on the VAE's reconstructions of fresh clips: what the UNet3D can reach at best."""
    video, combos = demo_data.random_clips(clips, generator(seed, 4, 0), cfg.frames, cfg.size)
    z = encode_clips(vae, video)
    n, c, f, h, w = z.shape
    frames = vae.decoder(vae.post_quant_conv(z.transpose(1, 2).reshape(n * f, c, h, w)))
    frames = ((frames.clamp(-1, 1) + 1) / 2).reshape(n, f, 3, cfg.size, cfg.size).permute(0, 1, 3, 4, 2)
    return demo_data.summarise([demo_data.judge_video(v, combo) for v, combo in zip(frames, combos)])


@torch.no_grad()
def normalise_latents(vae, cfg: Config, seed: int, scale_factor: float) -> dict:
    """Fold a per-channel affine map into quant_conv / post_quant_conv so that encoded latents have mean 0 and
    std 1 / scale_factor per channel; decoding is unchanged (exactly, up to float rounding)."""
    clips, _ = demo_data.random_clips(16, generator(seed, 2, 0), cfg.frames, cfg.size)
    z = encode_clips(vae, clips).transpose(0, 1).reshape(vae.config.embed_dim, -1)
    m, s = z.mean(dim=1), z.std(dim=1)
    k = 1.0 / (s * scale_factor)
    e = vae.config.embed_dim
    qw, qb = vae.quant_conv.weight, vae.quant_conv.bias
    qw[:e] *= k.view(-1, 1, 1, 1)
    qb[:e] = (qb[:e] - m) * k
    qb[e:] += 2 * k.log()  # log-variance of the scaled posterior
    pw, pb = vae.post_quant_conv.weight, vae.post_quant_conv.bias
    pb += (pw[:, :, 0, 0] @ m)
    pw /= k.view(1, -1, 1, 1)
    return {"mean": m.tolist(), "std": s.tolist()}


def unet_step(unet, text, opt, params, ema, cfg: Config, seed: int, step: int, bank, prompts, schedule) -> float:
    latents, combo_ids, token_table = bank["latents"], bank["combos"], prompts
    g = generator(seed, 3, step)
    for group in opt.param_groups:
        group["lr"] = lr_at(step, cfg.unet_lr, cfg.warmup)
    pick = torch.randint(latents.shape[0], (cfg.unet_batch,), generator=g)
    x0 = latents[pick] * 0.18215
    phrasing = torch.randint(len(demo_data.PHRASINGS), (cfg.unet_batch,), generator=g)
    row = 1 + combo_ids[pick] * len(demo_data.PHRASINGS) + phrasing  # all_prompts() order; row 0 is ""
    row = torch.where(torch.rand(cfg.unet_batch, generator=g) < cfg.drop_prompt, 0, row)
    t = torch.randint(schedule.num_timesteps, (cfg.unet_batch,), generator=g)
    if step >= cfg.focus_from:
        high = torch.randint(cfg.focus_t, schedule.num_timesteps, (cfg.unet_batch,), generator=g)
        t = torch.where(torch.arange(cfg.unet_batch) < round(cfg.unet_batch * cfg.focus_share), high, t)
    noise = torch.randn(x0.shape, generator=g)
    noise = noise + cfg.offset_noise * torch.randn(*x0.shape[:2], 1, 1, 1, generator=g)
    ab = schedule.alphas_cumprod[t].float().view(-1, 1, 1, 1, 1)
    xt = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
    context = text(input_ids=token_table[row]).last_hidden_state
    loss = F.mse_loss(unet(xt, t, context), noise)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    decay = min(cfg.ema, (1 + step) / (10 + step))
    with torch.no_grad():
        for name, p in _named(unet, text):
            ema[name].lerp_(p.detach(), 1 - decay)
    return loss.item()


def _named(unet, text):
    yield from (("unet." + k, v) for k, v in unet.named_parameters())
    yield from (("text." + k, v) for k, v in text.named_parameters())


# -------------------------------------------------------------------------------------------------- writing


def write_single_file(path: Path, cfg: Config, unet, text, vae, ema, pack, card: dict) -> int:
    from safetensors.torch import save_file

    mods = _modules(pack)
    te, ckpt = mods["model_loaders.text_encoder"], mods["model_loaders.checkpoint"]
    unet, text = copy.deepcopy(unet), copy.deepcopy(text)
    with torch.no_grad():
        for name, p in _named(unet, text):
            p.copy_(ema[name])
    encoder = te.TextEncoder(text, None)  # only its weights are written
    wrapped = mods["model_loaders.vae"].VAE(vae)
    sd = ckpt.single_file_state_dict(unet, encoder, wrapped, dtype=torch.float16)
    sd["text_encoder." + te.TOKEN_ROW_IDS] = prompt_tokens(pack)[0]
    metadata = {"cinematic_format": ckpt.SINGLE_FILE_FORMAT, "dtype": "fp16",
                mods["model_loaders.unet_loader"].HEAD_DIM_METADATA: str(cfg.head_dim),
                "cinematic_demo_model": json.dumps(card, sort_keys=True)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(sd, str(tmp), metadata=metadata)
    tmp.replace(path)
    return path.stat().st_size
