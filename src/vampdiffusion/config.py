"""Typed configuration: dataclasses with defaults, YAML presets, `--set a.b=v` overrides.

Every number of SPEC.md is a default here, never a literal inside a function.
`configs/v1.yaml` spells out every SPEC default; `configs/tiny.yaml` shrinks the sizes.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


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
    max_tags: int = 128               # tag sequence length incl. [BOS]/[EOS]
    enc_dim: int = 640                # d_enc: tag encoder width
    enc_depth: int = 12               # tag encoder layers
    enc_heads: int = 10               # tag encoder heads
    enc_mlp_ratio: float = 4.0        # tag encoder FFN ratio
    num_style_experts: int = 8        # N_S
    style_top_k: int = 2              # experts per image in style MoE blocks
    num_quality_experts: int = 4      # N_Q
    num_quality_tiers: int = 4        # quality tiers 0..3 (rows of the quality embedding)
    moe_dispatch: str = "grouped"     # "grouped" (torch._grouped_mm on stacked weights; bmm fallback) or "loop" (per-image reference)
    gradient_checkpointing: bool = False  # recompute each block in backward


@dataclass
class DiffusionConfig:
    num_timesteps: int = 1000         # T
    beta_schedule: str = "linear"     # "linear" | "scaled_linear" | "cosine"
    beta_start: float = 0.00085       # first beta of linear / scaled_linear
    beta_end: float = 0.012           # last beta of linear / scaled_linear (before zero-SNR rescale)
    zero_terminal_snr: bool = True    # Lin et al. 2023 Algorithm 1
    timestep_sampling: str = "uniform"  # "uniform" | "lognormal" | "logit_normal" (uniform chosen by measurement, docs/diffusion.md)
    lognormal_mean: float = -1.2      # P_mean of ln sigma (EDM)
    lognormal_std: float = 1.2        # P_std of ln sigma (EDM)
    logit_normal_mean: float = 0.0    # m of t/T = sigmoid(N(m, s^2))
    logit_normal_std: float = 1.0     # s of t/T = sigmoid(N(m, s^2))
    loss_weighting: str = "none"      # "none" (plain L_v) | "min_snr": w_t = min(1, γ / (SNR_t + 1)) on L_v
    min_snr_gamma: float = 5.0        # γ of min_snr: caps the x0-error weight (SNR + 1) that L_v implies at γ
    cfg_dropout: float = 0.1          # probability of replacing the tags by the empty sequence in training
    lambda_style: float = 0.01        # λ_S: style load-balancing weight
    lambda_quality: float = 0.01      # λ_Q: quality load-balancing weight


@dataclass
class SampleConfig:
    sampler: str = "dpmpp2m"          # "ddim" | "euler" | "dpmpp2m"
    steps: int = 28                   # sampling steps, trailing spacing
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
    quality_tier_starts: str = "3,4,6,8"  # lowest score_tag of quality tiers 0,1,2,3 (Draft..Ultra)
    min_style_matches: int = 2        # style label needs max_i |tags ∩ C_i| >= this
    style_clusters: str = ""          # YAML of style cluster tag sets; "" = the file shipped in the package
    vocab_min_count: int = 100        # a tag enters the vocabulary when it is on >= this many kept images
    max_tags: int = 128               # [BOS] tags… [EOS] length
    eval_fraction: float = 0.01       # share of rows held out (fixed hash of the id)
    workers: int = 2                  # image decoding processes


@dataclass
class LatentConfig:
    vae: str = "sdxl"                 # "sdxl" (AutoencoderKL) | "taesdxl" (AutoencoderTiny)
    vae_path: str = "madebyollin/sdxl-vae-fp16-fix"  # hub id or local folder / file
    scaling_factor: float = 0.13025   # latents are stored multiplied by this (TAESD-XL: 1.0)
    normalize: str = "none"           # "none" | "channel": the model sees (z − mean_c) / std_c per channel (EDM2-style)
    channel_mean: list[float] = field(default_factory=list)  # per-channel statistics of the stored latents; empty:
    channel_std: list[float] = field(default_factory=list)   # taken from the dataset's dataset.json when training
    resolution: int = 1024            # target side of the square bucket, pixels
    buckets: str = "aspect"           # "aspect" (≈ equal area, sides multiple of 64) | "square"
    bucket_step: int = 64             # bucket sides are multiples of this
    max_aspect: float = 2.0           # largest long/short side ratio of a bucket
    shard_size: int = 1000            # latents per shard
    batch_size: int = 16              # images per VAE call
    workers: int = 2                  # image decoding processes
    precision: str = "bf16"           # encode autocast on GPU: "bf16" | "fp16" | "fp32" (CPU always fp32)
    tag_shuffle: bool = False         # loader: shuffle tag order after the first keep_tokens tags
    keep_tokens: int = 0              # loader: tags after [BOS] that shuffle and dropout leave in place
    tag_dropout: float = 0.0          # loader: drop each tag after the first keep_tokens with this probability


@dataclass
class PhaseConfig:
    steps: int = 800_000              # optimizer steps of this phase
    lr: float = 1e-4                  # peak learning rate
    warmup_steps: int = 2000          # linear warm-up, then cosine decay
    lambda_spec: float = 0.0          # specialisation loss weight
    trainable: str = "all"            # "all" | "experts" (expert FFNs + routers only)
    oversample_q3: float = 1.0        # sampling weight of quality-tier-3 rows
    curate_top_k: int = 0             # keep the top-K rows by z(aesthetic) + z(score_tag); 0 = all


def _phase1() -> PhaseConfig:
    return PhaseConfig(steps=800_000, lr=1e-4, lambda_spec=0.0, trainable="all")


def _phase2() -> PhaseConfig:
    return PhaseConfig(steps=200_000, lr=1e-5, lambda_spec=0.1, trainable="experts", oversample_q3=3.0)


def _phase3() -> PhaseConfig:
    return PhaseConfig(steps=150_000, lr=5e-6, lambda_spec=0.0, trainable="all", curate_top_k=500_000)


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
    precision: str = "bf16"           # "bf16" autocast on CUDA | "fp32"
    compile: bool = False             # torch.compile the model
    compile_scope: str = "blocks"     # "blocks": each transformer block on its own (fast cold start) | "model": one graph
    ckpt_every: int = 5000            # full checkpoint every N optimizer steps
    ema_every: int = 1000             # EMA-only safetensors every M steps
    sample_every: int = 5000          # 4×4 sample grid every N steps
    keep_last: int = 3                # full checkpoints kept
    log_every: int = 50               # scalar logging period
    max_nonfinite: int = 10           # stop after this many non-finite steps in a row
    seed: int = 0                     # global seed
    workers: int = 4                  # data loader workers
    distributed: str = "ddp"          # "ddp" | "fsdp" (FSDP2 fully_shard)
    wandb: bool = False               # also log to Weights & Biases when installed
    keep_last_ema: int = 10           # EMA-only safetensors kept
    peak_tflops: float = 0.0          # per-device peak TFLOP/s for MFU; 0 = look up the CUDA device name
    sample_prompts: str = "gothic, dark, masterpiece; 1girl, solo, pastel colors; monochrome, lineart; cyberpunk, neon lights"  # grid rows, ';'-separated; columns are quality tiers 0..3


@dataclass
class EvalConfig:
    inception_weights: str = "pt_inception-2015-12-05-6726825d.pth"  # pytorch-fid port; missing = FID skipped
    clip_model: str = ""              # open_clip model name, e.g. "ViT-L-14"; "" = CLIP score skipped
    clip_weights: str = ""            # local open_clip weights file
    n_per_tier: int = 2500            # generated images per quality tier (10k in all); 0 = every held-out row once
    batch_size: int = 32              # generation batch
    collapse_threshold: float = 0.7   # alert when a style expert's share f_i exceeds this
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
# Loading, overriding, saving
# ----------------------------------------------------------------------------

class ConfigError(ValueError):
    """A config file or override names an unknown key or holds a wrong type."""


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, typ: Any, where: str) -> Any:
    """Check `value` against the annotated type; ints are accepted for floats."""
    if dataclasses.is_dataclass(typ):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
        return _build(typ, value, where)
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
    elif typ is float and isinstance(value, float):
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
    """Build a Config from a (possibly partial) nested dict; missing keys keep defaults."""
    return _build(Config, values or {}, "")


def config_to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def apply_override(cfg: Config, assignment: str) -> Config:
    """Apply one `a.b.c=value` override in place; value is parsed as YAML (8, 1e-4, true, "x")."""
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
            setattr(obj, key, _coerce(yaml.safe_load(raw), types_[key], path))
        else:
            obj = getattr(obj, key)
            if not dataclasses.is_dataclass(obj):
                raise ConfigError(f"{'.'.join(keys[:i + 1])} is a value, not a section")
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML preset (or defaults when path is None) and apply `--set` overrides."""
    values: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            presets = sorted(x.name for x in PRESET_DIR.glob("*.yaml")) if PRESET_DIR.is_dir() else []
            raise ConfigError(f"config file {p} not found (presets in {PRESET_DIR}: {presets})")
        values = yaml.safe_load(p.read_text()) or {}
        if not isinstance(values, dict):
            raise ConfigError(f"{p}: top level must be a mapping of sections, got {type(values).__name__}")
    try:
        cfg = config_from_dict(values)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    for o in overrides:
        apply_override(cfg, o)
    return cfg


def save_config_yaml(cfg: Config, path: str | Path) -> None:
    from vampdiffusion.atomic import atomic_write_text
    atomic_write_text(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def config_json(cfg: Any) -> str:
    return json.dumps(config_to_dict(cfg), indent=2, sort_keys=True)


# configs/ sits at the repository root; an installed wheel falls back to defaults.
PRESET_DIR = Path(__file__).resolve().parents[2] / "configs"

__all__ = [
    "Config", "ConfigError", "DataConfig", "DiffusionConfig", "EvalConfig", "LatentConfig",
    "ModelConfig", "PhaseConfig", "SampleConfig", "TrainConfig", "apply_override",
    "config_from_dict", "config_json", "config_to_dict", "load_config", "save_config_yaml",
]
