"""Typed configuration: dataclasses with defaults, YAML presets, `--set a.b=v` overrides.

Every number of the model's specification (the docs/ pages) is a default here, never a literal inside a
function. Presets ship inside the package (`vampdiffusion/configs/`): `v1` spells out every V1 default, `tiny`
shrinks the sizes for a CPU, `small` (d 384, depth 12) for the 256-px demo on one GPU.
A config is checked once, when it is built: an unknown key, a wrong type, a value outside its `Literal`
choices or outside its range (`RANGES`) is a `ConfigError` naming the key and what it accepts.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

# the choices of the string fields, one home each (code that needs the list uses typing.get_args)
MoEDispatch = Literal["grouped", "loop"]
StyleRouting = Literal["image", "token"]
StyleFFN = Literal["moe", "dense"]
BetaSchedule = Literal["linear", "scaled_linear", "cosine"]
TimestepSampling = Literal["uniform", "lognormal", "logit_normal"]
LossWeighting = Literal["none", "min_snr"]
SamplerName = Literal["ddim", "euler", "dpmpp2m"]
VAEBackend = Literal["sdxl", "taesdxl"]
LatentNormalize = Literal["none", "channel"]
BucketKind = Literal["aspect", "square"]
EncodePrecision = Literal["bf16", "fp16", "fp32"]
TrainPrecision = Literal["bf16", "fp32"]
Trainable = Literal["all", "experts"]
CompileScope = Literal["blocks", "model"]
Distributed = Literal["ddp", "fsdp"]


# ----------------------------------------------------------------------------
# Sections
# ----------------------------------------------------------------------------

@dataclass
class ModelConfig:
    in_channels: int = 4              # latent channels of the SDXL-space VAE
    patch_size: int = 2               # p: p×p latent patch per token
    hidden_size: int = 1024           # d: DiT width
    depth: int = 28                   # L: number of DiT blocks
    num_heads: int = 16               # H: attention heads (d / H = 64 per head)
    mlp_ratio: float = 4.0            # FFN hidden = mlp_ratio * d
    max_grid: int = 128               # rows/cols of the learned position tables R and C (tokens per side)
    timestep_freq_dim: int = 256      # width of the sinusoidal timestep features
    vocab_size: int = 120_000         # tag vocabulary incl. 4 special tokens (set from vocab.json when training)
    max_tags: int = 128               # tag sequence length incl. [BOS]/[EOS]: prepare, loader, encoder, generation
    enc_dim: int = 640                # d_enc: tag encoder width
    enc_depth: int = 12               # tag encoder layers
    enc_heads: int = 10               # tag encoder heads
    enc_mlp_ratio: float = 4.0        # tag encoder FFN ratio
    num_style_experts: int = 8        # N_S
    style_top_k: int = 2              # experts per image in style MoE blocks
    style_routing: StyleRouting = "image"  # "image": one decision per image from [e_tag ; e_t] | "token": per token from [LN(x_n) ; e_tag ; e_t]
    style_ffn: StyleFFN = "moe"       # "moe": style MoE blocks | "dense": one FFN of style_top_k experts' width there, no router (the dense twin)
    num_quality_experts: int = 4      # N_Q
    num_quality_tiers: int = 4        # quality tiers 0..3 (rows of the quality embedding)
    moe_dispatch: MoEDispatch = "grouped"  # "grouped" (torch._grouped_mm on stacked weights; bmm fallback) or "loop" (per-image reference)
    gradient_checkpointing: bool = False  # recompute each block in backward


@dataclass
class DiffusionConfig:
    num_timesteps: int = 1000         # T
    beta_schedule: BetaSchedule = "linear"  # β_t of docs/diffusion.md
    beta_start: float = 0.00085       # first beta of linear / scaled_linear
    beta_end: float = 0.012           # last beta of linear / scaled_linear (before zero-SNR rescale)
    zero_terminal_snr: bool = True    # Lin et al. 2023 Algorithm 1
    timestep_sampling: TimestepSampling = "uniform"  # uniform chosen by measurement (docs/diffusion.md)
    lognormal_mean: float = -1.2      # P_mean of ln sigma (EDM)
    lognormal_std: float = 1.2        # P_std of ln sigma (EDM)
    logit_normal_mean: float = 0.0    # m of t/T = sigmoid(N(m, s^2))
    logit_normal_std: float = 1.0     # s of t/T = sigmoid(N(m, s^2))
    loss_weighting: LossWeighting = "none"  # "none" (plain L_v) | "min_snr": w_t = min(1, γ / (SNR_t + 1)) on L_v
    min_snr_gamma: float = 5.0        # γ of min_snr: caps the x0-error weight (SNR + 1) that L_v implies at γ
    cfg_dropout: float = 0.1          # probability of replacing the tags by the empty sequence in training
    lambda_style: float = 0.01        # λ_S: style load-balancing weight
    lambda_quality: float = 0.01      # λ_Q: quality load-balancing weight


@dataclass
class SampleConfig:
    sampler: SamplerName = "dpmpp2m"  # trailing spacing for every sampler
    steps: int = 28                   # sampling steps
    cfg_scale: float = 6.0            # classifier-free guidance scale w
    cfg_rescale: float = 0.7          # guidance rescale φ (Lin et al. §3.4)
    negative_quality: int = -1        # tier of the unconditional branch: -1 = the prompt's tier (plain CFG); 0 = "worst quality" negative
    alpha_bar_min: float = 2.0 ** -24  # clamp of alpha_bar_T where sigma_T = inf would break a sampler


@dataclass
class DataConfig:
    min_side: int = 512               # stage 1: min(w, h) >= min_side
    min_pixels: int = 768 * 768       # stage 1: w*h >= min_pixels
    min_score_tag: int = 3            # stage 2: score_tag (per-year decile 0..9) >= this
    min_aesthetic: float = 4.5        # stage 3: LAION aesthetic score >= this
    aesthetic_weights: str = ""       # path to sac+logos+ava1-l14-linearMSE.pth; "" = use the column or SKIP
    min_general_tags: int = 10        # stage 4: number of general tags >= this
    phash_distance: int = 8           # stage 5: pairs with Hamming distance < this are duplicates
    phash_blocks: int = 10            # b of the pigeonhole search (b - (phash_distance-1) blocks must agree)
    aesthetic_clip_model: str = "ViT-L-14"     # open_clip model of the LAION aesthetic predictor
    aesthetic_clip_pretrained: str = "openai"  # open_clip pretrained tag or local weights file of that model
    quality_tier_starts: list[int] = field(default_factory=lambda: [3, 4, 6, 8])  # lowest score_tag of tiers 0..3 (Draft..Ultra)
    unscored_tier: int = 3            # quality tier of posts with neither a score nor an aesthetic value (a user's own images)
    min_style_matches: int = 2        # style label needs max_i |tags ∩ C_i| >= this
    style_clusters: str = ""          # YAML of style cluster tag sets; "" = the file shipped in the package
    vocab_min_count: int = 100        # a tag enters the vocabulary when it is on >= this many kept images
    eval_fraction: float = 0.01       # share of rows held out (fixed hash of the id)
    workers: int = 0                  # image decoding processes; 0 = one per core


@dataclass
class LatentConfig:
    vae: VAEBackend = "sdxl"          # "sdxl" (AutoencoderKL) | "taesdxl" (AutoencoderTiny)
    vae_path: str = "madebyollin/sdxl-vae-fp16-fix"  # hub id or local folder / file
    scaling_factor: float = 0.13025   # latents are stored multiplied by this (TAESD-XL: 1.0)
    normalize: LatentNormalize = "none"  # "channel": the model sees (z − mean_c) / std_c per channel (EDM2-style)
    channel_mean: list[float] = field(default_factory=list)  # per-channel statistics of the stored latents; empty:
    channel_std: list[float] = field(default_factory=list)   # taken from the dataset's dataset.json when training
    resolution: int = 1024            # target side of the square bucket, pixels
    buckets: BucketKind = "aspect"    # "aspect" (≈ equal area, sides multiple of 64) | "square"
    bucket_step: int = 64             # bucket sides are multiples of this
    max_aspect: float = 2.0           # largest long/short side ratio of a bucket
    shard_size: int = 1000            # latents per shard
    batch_size: int = 16              # images per VAE call
    workers: int = 2                  # image decoding processes
    precision: EncodePrecision = "bf16"  # encode autocast on GPU (CPU always fp32)
    tag_shuffle: bool = False         # loader: shuffle tag order after the first keep_tokens tags
    keep_tokens: int = 0              # loader: tags after [BOS] that shuffle and dropout leave in place
    tag_dropout: float = 0.0          # loader: drop each tag after the first keep_tokens with this probability


@dataclass
class PhaseConfig:
    steps: int = 800_000              # optimizer steps of this phase
    lr: float = 1e-4                  # peak learning rate
    warmup_steps: int = 2000          # linear warm-up, then cosine decay
    lambda_spec: float = 0.0          # specialisation loss weight
    trainable: Trainable = "all"      # "experts": expert FFNs + routers only
    oversample_q3: float = 1.0        # sampling weight of quality-tier-3 rows
    curate_top_k: int = 0             # keep the top-K rows by z(aesthetic) + z(score_tag); 0 = all


def _phase1() -> PhaseConfig:
    return PhaseConfig(steps=800_000, lr=1e-4, lambda_spec=0.0, trainable="all")


def _phase2() -> PhaseConfig:
    return PhaseConfig(steps=200_000, lr=1e-5, lambda_spec=0.1, trainable="experts", oversample_q3=3.0)


def _phase3() -> PhaseConfig:
    return PhaseConfig(steps=150_000, lr=5e-6, lambda_spec=0.0, trainable="all", curate_top_k=500_000)


DEFAULT_SAMPLE_PROMPTS = ["gothic, dark, masterpiece", "1girl, solo, pastel colors", "monochrome, lineart",
                          "cyberpunk, neon lights"]


@dataclass
class TrainConfig:
    phase1: PhaseConfig = field(default_factory=_phase1)  # base pre-training
    phase2: PhaseConfig = field(default_factory=_phase2)  # expert specialisation
    phase3: PhaseConfig = field(default_factory=_phase3)  # joint fine-tune on the curated subset
    micro_batch: int = 32             # images per GPU per forward
    grad_accum: int = 4               # micro-steps per optimizer step
    adam_beta1: float = 0.9           # AdamW β1
    adam_beta2: float = 0.999         # AdamW β2
    adam_eps: float = 1e-8            # AdamW ε
    weight_decay: float = 0.01        # on ≥2-D weights only
    grad_clip: float = 1.0            # global-norm clipping
    ema_decay: float = 0.9999         # EMA decay per optimizer step
    ema_warmup: bool = False          # decay = min(ema_decay, (1+n)/(10+n)) so short runs get a usable EMA
    precision: TrainPrecision = "bf16"  # "bf16" autocast on CUDA | "fp32"
    compile: bool = False             # torch.compile the model
    compile_scope: CompileScope = "blocks"  # "blocks": each transformer block on its own (fast cold start) | "model": one graph
    ckpt_every: int = 5000            # full checkpoint every N optimizer steps
    ema_every: int = 1000             # EMA-only safetensors every M steps; 0 = none
    sample_every: int = 5000          # sample grid every N steps and at the end of the phase; 0 = none
    keep_last: int = 3                # full checkpoints kept
    log_every: int = 50               # scalar logging period
    max_nonfinite: int = 10           # stop after this many non-finite steps in a row
    seed: int = 0                     # global seed
    workers: int = 4                  # data loader workers
    distributed: Distributed = "ddp"  # "fsdp": FSDP2 fully_shard
    wandb: bool = False               # also log to Weights & Biases when installed
    keep_last_ema: int = 10           # EMA-only safetensors kept
    peak_tflops: float = 0.0          # per-device peak TFLOP/s for MFU; 0 = look up the CUDA device name
    sample_prompts: list[str] = field(default_factory=lambda: list(DEFAULT_SAMPLE_PROMPTS))  # grid rows (1-4); columns are tiers 0..3
    sample_prompts_file: str = ""     # kohya-style prompt file, one preview image per line ("prompt --n neg --w W --h H --d seed --s steps --l cfg --q tier"); "" = the grid of train.sample_prompts

    def phase(self, n: int) -> PhaseConfig:
        """The settings of training phase n (1, 2 or 3)."""
        if n not in (1, 2, 3):
            raise ConfigError(f"the phase must be 1, 2 or 3, got {n}")
        return getattr(self, f"phase{n}")


@dataclass
class EvalConfig:
    inception_weights: str = "pt_inception-2015-12-05-6726825d.pth"  # pytorch-fid port; missing = FID skipped
    clip_model: str = ""              # open_clip model name, e.g. "ViT-L-14"; "" = CLIP score skipped
    clip_weights: str = ""            # local open_clip weights file
    n_per_tier: int = 2500            # generated images per quality tier (10k in all); 0 = every held-out row once
    batch_size: int = 32              # generation batch
    collapse_threshold: float = 0.7   # alert when one style expert is the top-1 choice for more than this share of images
    seed: int = 0                     # seeds of the generated images and of the routing timesteps
    style_samples: int = 4            # generated images per style in the report's style grid
    grid_columns: int = 8             # prompts per row of the report's quality-tier grid
    oracle_min_accuracy: float = 0.95 # an oracle attribute is reported only when the oracle reads decoded real latents this well


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    data: DataConfig = field(default_factory=DataConfig)
    latents: LatentConfig = field(default_factory=LatentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# ----------------------------------------------------------------------------
# Ranges: (section.key, lowest, highest, whether the ends are allowed) -- None = unbounded
# ----------------------------------------------------------------------------

Range = tuple[float | None, float | None, str]  # (low, high, "[]" | "[)" | "(]" | "()")
RANGES: dict[str, Range] = {
    "model.patch_size": (1, None, "[]"), "model.hidden_size": (1, None, "[]"), "model.depth": (1, None, "[]"),
    "model.num_heads": (1, None, "[]"), "model.mlp_ratio": (0, None, "()"), "model.max_grid": (1, None, "[]"),
    "model.max_tags": (2, None, "[]"), "model.vocab_size": (5, None, "[]"), "model.enc_depth": (0, None, "[]"),
    "model.num_style_experts": (1, None, "[]"), "model.style_top_k": (1, None, "[]"),
    "model.num_quality_experts": (1, None, "[]"), "model.num_quality_tiers": (1, None, "[]"),
    "diffusion.num_timesteps": (2, None, "[]"), "diffusion.beta_start": (0, 1, "()"), "diffusion.beta_end": (0, 1, "()"),
    "diffusion.lognormal_std": (0, None, "()"), "diffusion.logit_normal_std": (0, None, "()"),
    "diffusion.min_snr_gamma": (0, None, "()"), "diffusion.cfg_dropout": (0, 1, "[]"),
    "diffusion.lambda_style": (0, None, "[]"), "diffusion.lambda_quality": (0, None, "[]"),
    "sample.steps": (1, None, "[]"), "sample.cfg_scale": (0, None, "[]"), "sample.cfg_rescale": (0, 1, "[]"),
    "sample.negative_quality": (-1, None, "[]"), "sample.alpha_bar_min": (0, 1, "()"),
    "data.min_side": (0, None, "[]"), "data.min_pixels": (0, None, "[]"), "data.phash_distance": (1, 64, "[]"),
    "data.phash_blocks": (1, 64, "[]"), "data.min_style_matches": (1, None, "[]"), "data.vocab_min_count": (1, None, "[]"),
    "data.eval_fraction": (0, 1, "[)"), "data.workers": (0, None, "[]"), "data.unscored_tier": (0, None, "[]"),
    "latents.scaling_factor": (0, None, "()"), "latents.resolution": (8, None, "[]"), "latents.bucket_step": (8, None, "[]"),
    "latents.max_aspect": (1, None, "[]"), "latents.shard_size": (1, None, "[]"), "latents.batch_size": (1, None, "[]"),
    "latents.workers": (0, None, "[]"), "latents.keep_tokens": (0, None, "[]"), "latents.tag_dropout": (0, 1, "[)"),
    "phase.steps": (1, None, "[]"), "phase.lr": (0, None, "()"), "phase.warmup_steps": (0, None, "[]"),
    "phase.lambda_spec": (0, None, "[]"), "phase.oversample_q3": (0, None, "[]"), "phase.curate_top_k": (0, None, "[]"),
    "train.micro_batch": (1, None, "[]"), "train.grad_accum": (1, None, "[]"), "train.adam_beta1": (0, 1, "[)"),
    "train.adam_beta2": (0, 1, "[)"), "train.adam_eps": (0, None, "()"), "train.weight_decay": (0, None, "[]"),
    "train.grad_clip": (0, None, "()"), "train.ema_decay": (0, 1, "[)"), "train.ckpt_every": (1, None, "[]"),
    "train.ema_every": (0, None, "[]"), "train.sample_every": (0, None, "[]"), "train.keep_last": (1, None, "[]"),
    "train.log_every": (1, None, "[]"), "train.max_nonfinite": (1, None, "[]"), "train.workers": (0, None, "[]"),
    "train.keep_last_ema": (1, None, "[]"), "train.peak_tflops": (0, None, "[]"), "train.seed": (0, None, "[]"),
    "eval.n_per_tier": (0, None, "[]"), "eval.batch_size": (1, None, "[]"), "eval.collapse_threshold": (0, 1, "()"),
    "eval.seed": (0, None, "[]"), "eval.style_samples": (0, None, "[]"), "eval.grid_columns": (1, None, "[]"),
    "eval.oracle_min_accuracy": (0, 1, "[]"),
}


class ConfigError(ValueError):
    """A config file or override names an unknown key, holds a wrong type or a value out of range."""


def _range_text(low: float | None, high: float | None, ends: str) -> str:
    lo = "-inf" if low is None else f"{low:g}"
    hi = "inf" if high is None else f"{high:g}"
    return f"{ends[0] if low is not None else '('}{lo}, {hi}{ends[1] if high is not None else ')'}"


def _in_range(v: float, low: float | None, high: float | None, ends: str) -> bool:
    if low is not None and (v < low or (ends[0] == "(" and v == low)):
        return False
    return not (high is not None and (v > high or (ends[1] == ")" and v == high)))


def _check_values(obj: Any, where: str) -> None:
    """Every float finite, every bounded number inside its range (RANGES; phases share `phase.*`)."""
    for f in dataclasses.fields(obj):
        value, key = getattr(obj, f.name), f"{where}.{f.name}" if where else f.name
        if dataclasses.is_dataclass(value):
            _check_values(value, key)
            continue
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, float) and not math.isfinite(v):
                raise ConfigError(f"{key} must be a finite number, got {v}")
        bounds = RANGES.get(key) or RANGES.get("phase." + f.name if where.startswith("train.phase") else "")
        if bounds and isinstance(value, (int, float)) and not isinstance(value, bool) and not _in_range(value, *bounds):
            raise ConfigError(f"{key} must be in {_range_text(*bounds)}, got {value}")


def _check_relations(cfg: Config) -> None:
    """Constraints between keys."""
    m, d = cfg.model, cfg.data
    if m.style_top_k > m.num_style_experts:
        raise ConfigError(f"model.style_top_k={m.style_top_k} must be <= model.num_style_experts={m.num_style_experts}")
    if m.style_routing == "token" and m.style_ffn == "dense":
        raise ConfigError("model.style_routing=token needs model.style_ffn=moe: the dense twin has no style router to "
                          "route tokens; set one of them back (style_routing=image or style_ffn=moe)")
    for width, heads in (("hidden_size", "num_heads"), ("enc_dim", "enc_heads")):
        if getattr(m, width) % getattr(m, heads):
            raise ConfigError(f"model.{width}={getattr(m, width)} must be divisible by model.{heads}={getattr(m, heads)}")
    if cfg.eval.n_per_tier == 1:
        raise ConfigError("eval.n_per_tier must be >= 2 (FID needs two images), or 0 for every held-out row once; got 1")
    starts = d.quality_tier_starts
    if len(starts) != m.num_quality_tiers or starts != sorted(set(starts)) or not all(0 <= s <= 9 for s in starts):
        raise ConfigError(f"data.quality_tier_starts must be {m.num_quality_tiers} increasing score_tags in 0..9 "
                          f"(the lowest score_tag of each tier), e.g. [3, 4, 6, 8]; got {starts}")
    if d.phash_blocks <= d.phash_distance - 1:
        raise ConfigError(f"data.phash_blocks ({d.phash_blocks}) must exceed data.phash_distance - 1 ({d.phash_distance - 1})")
    if not 1 <= len(cfg.train.sample_prompts) <= 4 or not all(p.strip() for p in cfg.train.sample_prompts):
        raise ConfigError(f"train.sample_prompts must hold 1-4 non-empty prompts, got {cfg.train.sample_prompts}")
    if d.unscored_tier >= m.num_quality_tiers:
        raise ConfigError(f"data.unscored_tier must be 0..{m.num_quality_tiers - 1}, got {d.unscored_tier}")
    if cfg.sample.negative_quality >= m.num_quality_tiers:
        raise ConfigError(f"sample.negative_quality must be -1 or 0..{m.num_quality_tiers - 1}, got {cfg.sample.negative_quality}")


def validate(cfg: Config) -> Config:
    """Raise ConfigError on the first value a run cannot use; returns cfg."""
    _check_values(cfg, "")
    _check_relations(cfg)
    return cfg


# ----------------------------------------------------------------------------
# Loading, overriding, saving
# ----------------------------------------------------------------------------

def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, typ: Any, where: str) -> Any:
    """Check `value` against the annotated type; ints are accepted for floats."""
    if dataclasses.is_dataclass(typ):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
        return _build(typ, value, where)
    if typing.get_origin(typ) is Literal:
        choices = typing.get_args(typ)
        if value not in choices:
            raise ConfigError(f"{where} must be one of {', '.join(map(repr, choices))}; got {value!r}")
        return value
    if typing.get_origin(typ) is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        (item,) = typing.get_args(typ)
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if typ is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if typ is float and isinstance(value, str):  # YAML 1.1 reads 3e-5 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if typ is bool:
        if isinstance(value, bool):
            return value
    elif typ in (int, str) and isinstance(value, typ) and not isinstance(value, bool):
        return value
    raise ConfigError(f"{where}: expected {getattr(typ, '__name__', typ)}, got {type(value).__name__} {value!r}")


def _build(cls: type, values: dict, where: str) -> Any:
    types_ = _field_types(cls)
    unknown = sorted(set(values) - set(types_))
    if unknown:
        raise ConfigError(f"{where or 'config'}: unknown key(s) {unknown}; valid keys: {sorted(types_)}")
    obj = cls()
    for key, value in values.items():
        setattr(obj, key, _coerce(value, types_[key], f"{where}.{key}" if where else key))
    return obj


def config_from_dict(values: dict) -> Config:
    """Build and validate a Config from a (possibly partial) nested dict; missing keys keep defaults."""
    return validate(_build(Config, values or {}, ""))


def config_to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def apply_override(cfg: Config, assignment: str) -> Config:
    """Apply one `a.b.c=value` override in place (value parsed as YAML: 8, 1e-4, true, [3, 4, 6, 8], "x")."""
    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r} must look like section.key=value, e.g. model.depth=8")
    path, raw = assignment.split("=", 1)
    keys = path.strip().split(".")
    obj: Any = cfg
    for i, key in enumerate(keys):
        types_ = _field_types(type(obj))
        if key not in types_:
            where = ".".join(keys[:i]) or "config"
            raise ConfigError(f"{where}: unknown key {key!r}; valid keys: {sorted(types_)}")
        if i == len(keys) - 1:
            if dataclasses.is_dataclass(types_[key]):
                raise ConfigError(f"{path} is a section; set one of its keys: {sorted(_field_types(types_[key]))}")
            try:
                value = yaml.safe_load(raw)
            except yaml.YAMLError:
                value = raw
            setattr(obj, key, _coerce(value, types_[key], path))
        else:
            obj = getattr(obj, key)
            if not dataclasses.is_dataclass(obj):
                raise ConfigError(f"{'.'.join(keys[:i + 1])} is a value, not a section")
    return cfg


PRESET_DIR = Path(__file__).resolve().parent / "configs"   # installed with the package


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A preset name (`v1`, `tiny`) or a YAML file path -> the file to read."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    preset = PRESET_DIR / f"{p.name.removesuffix('.yaml')}.yaml"
    if p.suffix in ("", ".yaml") and len(p.parts) == 1 and preset.is_file():
        return preset
    raise ConfigError(f"config {name_or_path} not found: give a YAML file or a preset name ({', '.join(preset_names())})")


def read_yaml(path: Path, what: str = "config", fix: str = "fix the file") -> Any:
    """A YAML file's value; a file that is not UTF-8 or not YAML is a ConfigError naming the place and `fix`."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{what} {path}: byte {e.start} is not UTF-8; save the file as UTF-8, or {fix}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{what} {path} is not valid YAML ({where}{problem}); {fix}") from None


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a preset or YAML file (defaults when path is None), apply `--set` overrides, validate."""
    values: dict = {}
    if path is not None:
        p = resolve_config_path(path)
        values = read_yaml(p) or {}
        if not isinstance(values, dict):
            raise ConfigError(f"{p}: top level must be a mapping of sections, got {type(values).__name__}")
    try:
        cfg = _build(Config, values, "")
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    for o in overrides:
        apply_override(cfg, o)
    return validate(cfg)


def save_config_yaml(cfg: Config, path: str | Path) -> None:
    from vampdiffusion.atomic import atomic_write_text
    atomic_write_text(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


__all__ = [
    "Config", "ConfigError", "DataConfig", "DiffusionConfig", "EvalConfig", "LatentConfig",
    "ModelConfig", "PhaseConfig", "SampleConfig", "TrainConfig", "apply_override", "config_from_dict",
    "config_to_dict", "load_config", "preset_names", "read_yaml", "resolve_config_path", "save_config_yaml",
    "validate",
]
