"""Generation: a model folder + Danbooru tags -> PNGs that carry their generation parameters.

Python API (used by evaluation and the demo):

    gen = load_generator("runs/x/model")                     # config.json + model.safetensors + vocab.json
    images = generate(gen, "1girl, solo, gothic, dark, masterpiece", negative="worst quality", seed=1, n=4,
                      size=(1024, 1024), style={2: 0.7, 5: 0.3})
    images[0].save("a.png", pnginfo=png_info(images[0]))      # or save_images(images, "out/")

`vamp generate --model DIR --tags "…" …` is a thin layer over `generate_files`. Every user input and the
output folder are checked (`check_request`, `check_out_dir`) before the weights are loaded or anything is
computed, and each batch's PNGs are written as soon as they are decoded. Image i of a request uses
noise seeded with seed + i, so the "Seed" written into image i regenerates it alone (n = 1). The PNG's
parameters are A1111's infotext (generation/infotext.py); quality words, sampler names and the style mixer
are read by generation/prompts.py.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
import tempfile
import unicodedata
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from vampdiffusion.atomic import atomic_write, sha256_file
from vampdiffusion.config import Config, ConfigError, config_from_dict
from vampdiffusion.latents.latent_space import channel_affine, to_stored_space
from vampdiffusion.diffusion.guidance import guided_predictor
from vampdiffusion.diffusion.samplers import SAMPLER_NAMES, SAMPLERS, sample
from vampdiffusion.generation.infotext import PARAMETERS_KEY, build_infotext, infotext_params
from vampdiffusion.generation.prompts import (DEFAULT_QUALITY, StyleMix, check_style, mix_weights, number_text,
                                              parse_style, prompt_file_lines, prompt_tag_ids, quality_words_of,
                                              resolve_sampler, sampler_choices, split_quality, style_text)
from vampdiffusion.diffusion.schedule import NoiseSchedule
from vampdiffusion.latents.vae import VAE_FACTOR
from vampdiffusion.models.dit import CONFIG_NAME, VOCAB_NAME, WEIGHTS_NAME

log = logging.getLogger("vampdiffusion.generate")


# ----------------------------------------------------------------------------
# The request and its checks (before any compute)
# ----------------------------------------------------------------------------

@dataclass
class Request:
    """One prompt's generation settings; None fields take the model's config.sample defaults."""
    tags: str
    quality: int | None = None     # tier 0..3; None = the prompt's quality word (prompts.QUALITY_WORDS), else 3
    style: int | StyleMix | str | None = None  # expert K, a mix {2: 0.7, 5: 0.3} or "2:0.7 5:0.3"; None = routed
    steps: int | None = None
    sampler: str | None = None     # ddim | euler | dpmpp2m, or A1111's DDIM | Euler | DPM++ 2M
    cfg_scale: float | None = None
    cfg_rescale: float | None = None
    seed: int = 0
    n: int = 1
    size: tuple[int, int] | None = None  # (width, height) in pixels; None = latents.resolution square
    negative_quality: int | None = None  # tier of the unguided branch; -1 = the prompt's tier; None = the
    #                                      negative prompt's quality word, else sample.negative_quality
    negative: str = ""             # negative prompt: its tags replace [BOS][EOS] in CFG's unconditional branch
    model_hash: str | None = None  # the Model hash of the PNG the request was read from (a mismatch is warned)


def parse_size(text: str) -> tuple[int, int]:
    """'1024x768' -> (1024, 768) = (width, height)."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", text)
    if not m:
        raise ValueError(f"size must look like WIDTHxHEIGHT, e.g. 1024x1024, got {text!r}")
    return int(m.group(1)), int(m.group(2))


def with_defaults(req: Request, cfg: Config) -> Request:
    """Every None filled: tiers from the quality words, then the config's sample section; the sampler
    name resolved (A1111 names accepted); the style parsed into None or {expert: weight}."""
    s = cfg.sample
    sampler = s.sampler if req.sampler is None else req.sampler
    key, warning = resolve_sampler(sampler)
    if warning:
        log.warning(warning)
    return dataclasses.replace(
        req, quality=resolve_tier(req.quality, req.tags, False, DEFAULT_QUALITY),
        style=parse_style(req.style), steps=s.steps if req.steps is None else req.steps,
        sampler=key or sampler, cfg_scale=s.cfg_scale if req.cfg_scale is None else req.cfg_scale,
        cfg_rescale=s.cfg_rescale if req.cfg_rescale is None else req.cfg_rescale,
        size=(cfg.latents.resolution,) * 2 if req.size is None else tuple(req.size),
        negative_quality=resolve_tier(req.negative_quality, req.negative, True, s.negative_quality))


def resolve_tier(explicit: int | None, prompt: str, negative: bool, default: int) -> int:
    """An explicit tier wins (a quality word that names another is warned about), else the prompt's quality
    word, else the default."""
    _, word_tier = split_quality(prompt, lowest=negative)
    if explicit is None:
        return default if word_tier is None else word_tier
    if word_tier is not None and word_tier != explicit:
        log.warning("%s %s names tier %d, but the %s tier was given as %d; using %d",
                    "negative prompt word(s)" if negative else "prompt word(s)",
                    ", ".join(quality_words_of(prompt)), word_tier,
                    "negative quality" if negative else "quality", explicit, explicit)
    return explicit


def check_request(req: Request, cfg: Config) -> None:
    """Raise ValueError naming the problem and the fix; `req` has its defaults filled in."""
    m, T = cfg.model, cfg.diffusion.num_timesteps
    if not 0 <= req.quality < m.num_quality_tiers:
        raise ValueError(f"quality must be 0..{m.num_quality_tiers - 1} (3 = Ultra), got {req.quality}")
    check_style(parse_style(req.style), m.num_style_experts, m.style_top_k)
    if not 1 <= req.steps <= T:
        raise ValueError(f"steps must be in 1..{T} (the model's diffusion.num_timesteps), got {req.steps}")
    if req.sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {sampler_choices()}, got {req.sampler!r}")
    if not (math.isfinite(req.cfg_scale) and req.cfg_scale >= 0):
        raise ValueError(f"cfg scale must be a finite number >= 0 (1 = no guidance), got {req.cfg_scale}")
    if not 0 <= req.cfg_rescale <= 1:
        raise ValueError(f"cfg rescale must be in 0..1 (0 = plain CFG), got {req.cfg_rescale}")
    if not -1 <= req.negative_quality < m.num_quality_tiers:
        raise ValueError(f"negative quality must be -1 (the prompt's tier) or 0..{m.num_quality_tiers - 1}, "
                         f"got {req.negative_quality}")
    if req.n < 1:
        raise ValueError(f"n (images per prompt) must be >= 1, got {req.n}")
    if (problem := prompt_problem(req.tags)) is not None:
        raise ValueError(f"prompt {req.tags!r} {problem}")
    if (problem := prompt_problem(req.negative)) is not None:
        raise ValueError(f"negative prompt {req.negative!r} {problem}")
    if not (0 <= req.seed and req.seed + req.n - 1 < 2 ** 63):
        raise ValueError(f"seed must be in 0..2^63-1 (image i uses seed + i), got {req.seed}")
    multiple = VAE_FACTOR * m.patch_size
    largest = VAE_FACTOR * m.patch_size * m.max_grid
    w, h = req.size
    if w < multiple or h < multiple or w % multiple or h % multiple:
        raise ValueError(f"size {w}x{h} must be a positive multiple of {multiple} on each side "
                         f"({VAE_FACTOR}x VAE x patch {m.patch_size}), e.g. {multiple * max(1, round(w / multiple))}"
                         f"x{multiple * max(1, round(h / multiple))}")
    if w > largest or h > largest:
        raise ValueError(f"size {w}x{h} is beyond the model's position tables (model.max_grid={m.max_grid} "
                         f"tokens per side = {largest} pixels); use at most {largest}x{largest}")


def prompt_problem(prompt: str) -> str | None:
    """Why a prompt cannot be used, or None. Lone surrogates (bytes that were not UTF-8, smuggled in by
    Python's surrogateescape) cannot be written into the PNG's parameters, and control characters are never
    part of a tag; both are refused here rather than after sampling."""
    for i, ch in enumerate(prompt):
        kind = unicodedata.category(ch)
        if kind == "Cs":
            return (f"holds U+{ord(ch):04X} at position {i}, a byte that was not UTF-8 text; "
                    f"pass the prompt as UTF-8 (re-save the prompt file or fix the shell's encoding)")
        if kind == "Cc" and not ch.isspace():
            return (f"holds the control character U+{ord(ch):04X} at position {i}; "
                    f"remove it (tags are printable text separated by commas)")
    return None


def read_model_config(model_dir: str | Path) -> Config:
    """The full Config of a model folder, checking that the folder holds what generation needs."""
    d = Path(model_dir)
    if not d.is_dir():
        raise FileNotFoundError(f"model folder {d} not found; pass the folder written by a training run's "
                                f"export or VampDiT.save_pretrained ({CONFIG_NAME}, {WEIGHTS_NAME}, {VOCAB_NAME})")
    missing = [n for n in (CONFIG_NAME, WEIGHTS_NAME, VOCAB_NAME) if not (d / n).is_file()]
    if missing:
        raise FileNotFoundError(f"model folder {d} lacks {', '.join(missing)}; a model folder holds "
                                f"{CONFIG_NAME}, {WEIGHTS_NAME} and {VOCAB_NAME}")
    try:
        values = json.loads((d / CONFIG_NAME).read_text())
        return config_from_dict(values)
    except (json.JSONDecodeError, ConfigError) as e:
        raise ValueError(f"{d / CONFIG_NAME} is not a VampDiffusion config: {e}") from None


# ----------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------

@dataclass
class LoadedModel:
    """Everything a generation needs, loaded once."""
    model: torch.nn.Module
    cfg: Config
    vocab: object                  # data.vocab.TagVocab
    vae: object                    # data.vae.VAE
    schedule: NoiseSchedule
    model_hash: str                # sha256[:10] of model.safetensors
    device: torch.device
    model_name: str = ""           # the model folder's name (the PNG's "Model")


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The torch device to run on, refused up front (not mid-load) when this machine does not have it."""
    if device is None:
        return default_device()
    try:
        d = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device {device!r} is not a device name; use cpu or cuda (cuda:N for GPU N)") from None
    if d.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device {device} asked for, but PyTorch sees no CUDA GPU on this machine; "
                             f"use --device cpu, or leave --device out (cuda when available)")
        if d.index is not None and d.index >= count:
            raise ValueError(f"device {device} asked for, but this machine has {count} CUDA GPU(s) "
                             f"(cuda:0..cuda:{count - 1})")
    elif d.type != "cpu":
        raise ValueError(f"device {device}: generation runs on cpu or cuda")
    return d


def load_generator(model_dir: str | Path, vae_path: str | None = None,
                   device: str | torch.device | None = None) -> LoadedModel:
    """Load the model folder's weights (a training run exports its EMA weights there), vocab and VAE.

    `vae_path` replaces the config's latents.vae_path (e.g. a local copy of the weights); without it, a
    latents.vae_path that does not exist on this machine falls back to $VAMP_TAESDXL, then the hub id.
    """
    from vampdiffusion.data.vocab import TagVocab
    from vampdiffusion.models.dit import VampDiT

    d = Path(model_dir)
    device = resolve_device(device)
    cfg = read_model_config(d)
    try:
        channel_affine(cfg.latents, cfg.model.in_channels)
    except ConfigError as e:
        raise ConfigError(f"{d / CONFIG_NAME}: {e}") from None
    vocab = TagVocab.load(d / VOCAB_NAME)
    if len(vocab) != cfg.model.vocab_size:
        raise ValueError(f"{d / VOCAB_NAME} has {len(vocab)} tokens but {d / CONFIG_NAME} says model.vocab_size="
                         f"{cfg.model.vocab_size}: it is not the vocabulary these weights were trained with; copy the "
                         f"vocab.json of the model's training dataset into {d}")
    model = VampDiT.from_pretrained(d, device=device).eval().requires_grad_(False)
    vae = load_model_vae(cfg, vae_path, device, d / CONFIG_NAME)
    return LoadedModel(model=model, cfg=cfg, vocab=vocab, vae=vae, schedule=NoiseSchedule(cfg.diffusion),
                       model_hash=sha256_file(d / WEIGHTS_NAME)[:10], device=device, model_name=d.resolve().name)


def load_model_vae(cfg: Config, vae_path: str | None, device: torch.device, config_path: Path):
    """The model's VAE from the first source of vae_sources() that has it; says which one it used."""
    from vampdiffusion.latents.vae import HUB_SOURCE, load_vae, missing_vae_error, vae_sources
    named = ("--vae-path", "latents.vae_path")  # sources asked for by name: their own error is the answer
    tried = []
    for what, path in vae_sources(cfg.latents, vae_path):
        try:
            vae = load_vae(dataclasses.replace(cfg.latents, vae_path=path), device=device,
                           use_env=what != HUB_SOURCE)
        except FileNotFoundError as e:
            if what in named:
                raise
            tried.append(f"{what} {path}: {str(e).split(' (')[0]}")
            continue
        if what in named:
            log.info("VAE: %s from %s (%s)", cfg.latents.vae, vae.source, what)
        else:
            log.warning("%s: latents.vae_path %s does not exist on this machine; using the %s VAE from %s (%s)",
                        config_path, cfg.latents.vae_path, cfg.latents.vae, vae.source, what)
        cfg.latents.vae_path = path
        return vae
    raise missing_vae_error(cfg.latents, tried)


# ----------------------------------------------------------------------------
# Prompts, sampling, decoding
# ----------------------------------------------------------------------------

def tokenize(gen: LoadedModel, prompt: str) -> tuple[list[int], list[str]]:
    """prompts.prompt_tag_ids with the model's vocabulary and max_tags."""
    return prompt_tag_ids(gen.vocab, prompt, gen.cfg.model.max_tags)


def initial_noise(seeds: list[int], shape: tuple[int, int, int]) -> torch.Tensor:
    """x_T (B, C, h, w): image i is N(0, I) from a CPU generator seeded with seeds[i] (device-independent)."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds])


@torch.no_grad()
def sample_latents(gen: LoadedModel, tag_ids: torch.Tensor, quality: torch.Tensor, seeds: list[int],
                   size: tuple[int, int], steps: int, sampler: str, cfg_scale: float, cfg_rescale: float,
                   style: torch.Tensor | None = None, negative_quality: int = -1,
                   negative_tag_ids: torch.Tensor | None = None, progress=None) -> torch.Tensor:
    """tag_ids (B, L), quality (B,), one seed per image -> clean latents (B, C, H/8, W/8), stored space (scaled).

    style: (B,) forced experts or (B, N_S) mixing weights (style_tensor); negative_tag_ids (B, L): the
    negative prompt (None: [BOS][EOS]); progress(step, steps) after each sampler step."""
    w, h = size
    x_T = initial_noise(seeds, (gen.cfg.model.in_channels, h // VAE_FACTOR, w // VAE_FACTOR)).to(gen.device)
    predict_v = guided_predictor(gen.model, tag_ids.to(gen.device), quality.to(gen.device), cfg_scale,
                                 cfg_rescale, None if style is None else style.to(gen.device), negative_quality,
                                 None if negative_tag_ids is None else negative_tag_ids.to(gen.device))
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if gen.device.type == "cuda" else nullcontext()
    with autocast:
        x0 = sample(sampler, lambda x, t: predict_v(x, t).float(), x_T, gen.schedule, steps,
                    gen.cfg.sample.alpha_bar_min, progress)
    return to_stored_space(x0.float(), gen.cfg.latents)


def style_tensor(style: StyleMix | None, B: int, num_experts: int) -> torch.Tensor | None:
    """None (routed); one expert -> (B,) long (gate 1); two -> (B, N_S) mixing weights (normalised)."""
    if style is None:
        return None
    weights = mix_weights(style)
    if len(weights) == 1:
        return torch.full((B,), next(iter(weights)), dtype=torch.long)
    dense = torch.zeros(B, num_experts)
    for expert, weight in weights.items():
        dense[:, expert] = weight
    return dense


@torch.no_grad()
def decode(gen: LoadedModel, latents: torch.Tensor) -> list[Image.Image]:
    """Scaled latents (B, C, h, w) -> RGB PIL images (8h x 8w)."""
    x = gen.vae.decode(latents.to(gen.device)).float().cpu()             # (B, 3, H, W) in [-1, 1]
    pixels = ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)      # (B, 3, H, W)
    return [Image.fromarray(p.permute(1, 2, 0).numpy()) for p in pixels]


def parameters_text(prompt: str, req: Request, seed: int, model_hash: str, model_name: str = "") -> str:
    """A1111 infotext of image `seed` of a request with its defaults filled in (generation/infotext.py)."""
    w, h = req.size
    fields = [("Steps", req.steps), ("Sampler", SAMPLER_NAMES[req.sampler]), ("CFG scale", number_text(req.cfg_scale)),
              ("Seed", seed), ("Size", f"{w}x{h}"), ("Model hash", model_hash or None), ("Model", model_name or None),
              ("Quality tier", req.quality), ("Style experts", style_text(parse_style(req.style))),
              ("CFG rescale", number_text(req.cfg_rescale)), ("Negative quality", req.negative_quality)]
    return build_infotext(prompt.strip(), req.negative.strip(), fields)


def parse_parameters(text: str) -> dict[str, str]:
    """Infotext -> {'prompt': …, 'Negative prompt': … (when there is one), 'Steps': '28', …}, values unquoted."""
    params = infotext_params(text)
    out = {"prompt": params.pop("Prompt")}
    negative = params.pop("Negative prompt")
    if negative:
        out["Negative prompt"] = negative
    return {**out, **params}


def generate(gen: LoadedModel, tags: str, quality: int | None = None, style: int | StyleMix | str | None = None,
             steps: int | None = None, sampler: str | None = None, cfg_scale: float | None = None,
             cfg_rescale: float | None = None, seed: int = 0, n: int = 1, size: tuple[int, int] | None = None,
             batch_size: int = 4, negative_quality: int | None = None, negative: str = "",
             progress=None) -> list[Image.Image]:
    """n images of one prompt; image i uses seed + i. Each image's .info['parameters'] holds its settings.

    None settings take the model's config (sample section; size: the latents.resolution square); quality
    None: the prompt's quality word, else 3. progress(step, steps) counts sampler steps over all batches."""
    req = with_defaults(Request(tags, quality, style, steps, sampler, cfg_scale, cfg_rescale, seed, n, size,
                                negative_quality, negative), gen.cfg)
    check_request(req, gen.cfg)
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    warn_request(gen, req)
    return [image for batch in image_batches(gen, req, batch_size, progress) for image in batch]


def warn_request(gen: LoadedModel, req: Request) -> None:
    """Once per request: the tags the model does not know, and a size outside the buckets it was trained on."""
    from vampdiffusion.latents.buckets import bucket_set
    for what, prompt in (("", req.tags), ("negative prompt: ", req.negative)):
        _, unknown = tokenize(gen, prompt)
        if unknown:
            log.warning("%sunknown tags (not in the model's vocabulary, they become [UNK]): %s", what,
                        ", ".join(unknown))
    if req.model_hash and req.model_hash != gen.model_hash:
        log.warning("the parameters come from the model with hash %s, this model's is %s: the image will differ",
                    req.model_hash, gen.model_hash)
    trained = bucket_set(gen.cfg.latents)
    if tuple(req.size) not in trained:
        log.warning("size %dx%d is not a size the model was trained on (latents.buckets=%s: %s); expect worse "
                    "images, or use one of those", *req.size, gen.cfg.latents.buckets,
                    ", ".join(f"{w}x{h}" for w, h in trained))


def image_batches(gen: LoadedModel, req: Request, batch_size: int, progress=None):
    """The images of a request already passed through with_defaults + check_request, one list per batch as
    each is decoded (a caller that writes them keeps at most one batch in memory). progress(step, steps)
    counts sampler steps over the whole request."""
    ids, _ = tokenize(gen, req.tags)
    negative_ids = tokenize(gen, req.negative)[0] if req.negative.strip() else None
    starts = range(0, req.n, batch_size)
    for k, start in enumerate(starts):
        seeds = list(range(req.seed + start, req.seed + min(req.n, start + batch_size)))
        B = len(seeds)
        tag_ids = torch.tensor([ids] * B, dtype=torch.long)
        negative = None if negative_ids is None else torch.tensor([negative_ids] * B, dtype=torch.long)
        quality = torch.full((B,), req.quality, dtype=torch.long)
        style = style_tensor(parse_style(req.style), B, gen.cfg.model.num_style_experts)
        on_step = None if progress is None else (lambda i, n, k=k: progress(k * n + i, len(starts) * n))
        latents = sample_latents(gen, tag_ids, quality, seeds, req.size, req.steps, req.sampler,
                                 req.cfg_scale, req.cfg_rescale, style, req.negative_quality, negative, on_step)
        images = decode(gen, latents)
        for image, s in zip(images, seeds):
            image.info[PARAMETERS_KEY] = parameters_text(req.tags, req, s, gen.model_hash, gen.model_name)
        yield images


@torch.no_grad()
def expert_routing(gen: LoadedModel, tags: str, quality: int | None = None, style: int | StyleMix | str | None = None,
                   steps: int | None = None, negative: str = "", negative_quality: int | None = None,
                   cfg_scale: float | None = None) -> dict:
    """Which experts fire for a request: every router at each of the sampler's timesteps (routing depends on
    the tags, the tier, the style override and t only). The conditional branch's report at the top level;
    under "negative" the unconditional branch's (the negative prompt's tags, or [BOS][EOS], at the negative
    quality), or None at CFG scale 1 where that branch does not run. Per style block: the top-2 experts of
    each step, their set, the most frequent top-1 and the mean gate of every expert; per quality block the
    most frequent expert."""
    from vampdiffusion.diffusion.samplers import trailing_timesteps
    req = with_defaults(Request(tags, quality, style, steps, cfg_scale=cfg_scale, negative_quality=negative_quality,
                                negative=negative), gen.cfg)
    check_request(req, gen.cfg)
    ids, unknown = tokenize(gen, req.tags)
    ts = trailing_timesteps(gen.cfg.diffusion.num_timesteps, req.steps)
    report = {"prompt": tags, "quality": req.quality, "style": req.style, "unknown_tags": unknown, "timesteps": ts,
              **_branch_routing(gen, ids, req.quality, req.style, ts), "negative": None}
    if req.cfg_scale != 1:
        tier = req.quality if req.negative_quality < 0 else req.negative_quality
        report["negative"] = {"prompt": req.negative, "quality": tier,
                              **_branch_routing(gen, tokenize(gen, req.negative)[0], tier, req.style, ts)}
    return report


def _branch_routing(gen: LoadedModel, ids: list[int], quality: int, style: StyleMix | None, ts: list[int]) -> dict:
    n = len(ts)
    override = style_tensor(style, n, gen.cfg.model.num_style_experts)
    aux = gen.model.route(torch.tensor([ids] * n, device=gen.device), torch.tensor(ts, device=gen.device),
                          torch.full((n,), quality, dtype=torch.long, device=gen.device),
                          None if override is None else override.to(gen.device))
    s_exp, q_exp = aux.style_experts.cpu(), aux.quality_experts.cpu()               # (n_S, n, k), (n_Q, n)
    s_gates = aux.style_gates.float().cpu()                                          # (n_S, n, k)
    N = gen.cfg.model.num_style_experts
    gate_share = torch.zeros(len(s_exp), n, N).scatter_add_(2, s_exp, s_gates).mean(dim=1)  # (n_S, N_S)
    return {"style_blocks": list(aux.style_blocks), "quality_blocks": list(aux.quality_blocks),
            "style_top2": s_exp.tolist(),
            "style_top2_per_block": [sorted({int(e) for e in s_exp[i].flatten()}) for i in range(len(s_exp))],
            "style_top1_per_block": [int(torch.mode(s_exp[i, :, 0]).values) for i in range(len(s_exp))],
            "style_gate_per_block": gate_share.tolist(),
            "style_probs_mean": aux.style_probs.mean(dim=(0, 1)).tolist() if len(aux.style_blocks) else None,
            "quality_expert_per_block": [int(torch.mode(q_exp[i]).values) for i in range(len(q_exp))]}


def png_info(image: Image.Image) -> PngInfo:
    info = PngInfo()
    info.add_text(PARAMETERS_KEY, image.info[PARAMETERS_KEY])
    return info


def save_images(images: list[Image.Image], out_dir: str | Path, first_index: int | None = None) -> list[Path]:
    """Write out_dir/NNNNN-<seed>.png (atomically), numbering on from the files already there."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    index = next_index(out) if first_index is None else first_index
    paths = []
    for k, image in enumerate(images):
        seed = parse_parameters(image.info[PARAMETERS_KEY]).get("Seed", "0")
        path = out / f"{index + k:05d}-{seed}.png"
        atomic_write(path, lambda p, im=image: im.save(p, format="PNG", pnginfo=png_info(im)))
        paths.append(path)
    return paths


def next_index(out: Path) -> int:
    numbers = [int(m.group(1)) for p in out.glob("*.png") if (m := re.match(r"(\d{5,})-", p.name))]
    return max(numbers) + 1 if numbers else 0


# ----------------------------------------------------------------------------
# Requests to files
# ----------------------------------------------------------------------------

def read_prompts(path: str | Path) -> list[str]:
    """A prompt file: one prompt (comma-separated tags) per line; blank lines and # comments skipped."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"prompt file {p} {'is a folder' if p.is_dir() else 'not found'}; pass --prompts FILE "
                                f"(one comma-separated tag list per line)")
    prompts = []
    for number, line in prompt_file_lines(p, "prompt file"):
        if (problem := prompt_problem(line)) is not None:
            raise ValueError(f"{p}:{number}: the prompt {problem}")
        prompts.append(line)
    if not prompts:
        raise ValueError(f"prompt file {p} holds no prompt (one comma-separated tag list per line)")
    return prompts


def check_out_dir(out_dir: str | Path) -> Path:
    """The output folder, created and proven writable before any sampling (so no finished image is lost)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output folder {out} is a file; pass --out a folder (it is created when missing)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        raise ValueError(f"output folder {out} cannot be written ({e.strerror or e}); pass --out a folder "
                         f"you can write to") from None
    return out


def generate_files(model_dir: str | Path, requests: list[Request], out_dir: str | Path, batch_size: int = 4,
                   vae_path: str | None = None, device: str | None = None, progress=None) -> list[Path]:
    """Check every request and the output folder, then load the model once and write each batch's PNGs to
    out_dir as soon as they are decoded (an interrupted run keeps every finished image). `progress(0)` is
    called once sampling starts, then `progress(k)` after each k images are on disk."""
    cfg = read_model_config(model_dir)
    requests = [with_defaults(r, cfg) for r in requests]
    for req in requests:
        check_request(req, cfg)
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    out = check_out_dir(out_dir)
    gen = load_generator(model_dir, vae_path, device)
    if progress is not None:
        progress(0)
    paths: list[Path] = []
    for req in requests:
        warn_request(gen, req)
        for images in image_batches(gen, req, batch_size):
            paths += save_images(images, out)
            if progress is not None:
                progress(len(images))
    return paths


__all__ = ["LoadedModel", "PARAMETERS_KEY", "Request", "check_request", "decode", "expert_routing", "generate",
           "generate_files", "initial_noise", "image_batches", "load_generator", "parameters_text", "parse_parameters",
           "parse_size", "png_info", "prompt_problem", "read_model_config", "read_prompts", "resolve_device",
           "sample_latents", "save_images", "style_tensor", "tokenize", "with_defaults"]
