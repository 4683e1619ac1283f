"""diffusers: `VampDiffusionPipeline`, a `diffusers.DiffusionPipeline` over a VampDiffusion model folder.

    from vampdiffusion.generation.pipeline import VampDiffusionPipeline
    pipe = VampDiffusionPipeline.from_pretrained("vamp-diffusers")          # written by `vamp export diffusers`
    image = pipe("1girl, solo, gothic, dark, masterpiece", negative_prompt="worst quality",
                 generator=torch.Generator().manual_seed(1)).images[0]

Registered modules: `transformer` (VampDiTModel: the DiT as a ModelMixin/ConfigMixin whose constructor
kwargs are the ModelConfig fields), `tokenizer` (VampTagTokenizer: vocab.json), `scheduler` (diffusers'
DDIM / Euler / DPM-Solver++ configured for v-prediction, zero terminal SNR, trailing spacing; swap it with
`pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)`) and `vae` (AutoencoderTiny or
AutoencoderKL). Latents the model saw standardised per channel (latents.normalize=channel) are mapped back
with the pipeline's `latents_mean` / `latents_std` before decoding.

`DiffusionPipeline.from_pretrained(folder)` cannot load it: diffusers looks the pipeline class named in
model_index.json up in its own namespace (or runs remote code), so load with
`VampDiffusionPipeline.from_pretrained(folder)`; its components then load through diffusers' own loader.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from pathlib import Path

import torch
from diffusers import (DDIMScheduler, DiffusionPipeline, DPMSolverMultistepScheduler, EulerDiscreteScheduler,
                       ImagePipelineOutput, ModelMixin, SchedulerMixin)
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.image_processor import VaeImageProcessor
from diffusers.utils.torch_utils import randn_tensor

from vampdiffusion.config import Config, ModelConfig
from vampdiffusion.data.vocab import VOCAB_NAME, TagVocab
from vampdiffusion.diffusion.guidance import guided_predictor
from vampdiffusion.generation.prompts import (DEFAULT_QUALITY, check_style, parse_style, prompt_tag_ids,
                                              resolve_sampler, split_quality)
from vampdiffusion.latents.vae import VAE_FACTOR
from vampdiffusion.models.dit import VampDiT

__all__ = ["VampDiTModel", "VampTagTokenizer", "VampDiffusionPipeline", "export_diffusers", "make_scheduler",
           "ModelMixin", "SchedulerMixin"]  # the last two: diffusers finds each component's loader by them here

BETA_SCHEDULES = {"linear": "linear", "scaled_linear": "scaled_linear", "cosine": "squaredcos_cap_v2"}


# ----------------------------------------------------------------------------
# The DiT as a diffusers model
# ----------------------------------------------------------------------------

class VampDiTModel(ModelMixin, ConfigMixin):
    """VampDiT under diffusers' save_pretrained / from_pretrained; config.json holds the ModelConfig fields."""

    def _init(self, **kwargs):
        super(VampDiTModel, self).__init__()
        self.dit = VampDiT(ModelConfig(**kwargs))

    # diffusers reads a model's config keys from its __init__ signature: the ModelConfig fields, one source
    _init.__signature__ = inspect.Signature(
        [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        + [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default)
           for f in dataclasses.fields(ModelConfig)])
    __init__ = register_to_config(_init)
    del _init

    def forward(self, x, t, tag_ids, quality, style_override=None):
        return self.dit(x, t, tag_ids, quality, style_override)

    @classmethod
    def from_vampdit(cls, model: VampDiT) -> "VampDiTModel":
        with torch.device("meta"):  # the DiT is replaced at once: no random init of weights
            wrapper = cls(**dataclasses.asdict(model.cfg))
        wrapper.dit = model
        return wrapper


# ----------------------------------------------------------------------------
# The tag tokenizer
# ----------------------------------------------------------------------------

TOKENIZER_CONFIG = "tokenizer_config.json"


class VampTagTokenizer(SchedulerMixin):
    """Danbooru tags -> padded ids ([BOS] tags by frequency [EOS] [PAD]…); quality words are left out.

    A SchedulerMixin only because diffusers saves and loads a pipeline component through a base class it
    knows, and this one is neither a torch module nor a transformers tokenizer; it holds no scheduler state."""

    def __init__(self, vocab: TagVocab, max_tags: int):
        self.vocab, self.max_tags = vocab, max_tags

    def __call__(self, prompt: str) -> list[int]:
        return prompt_tag_ids(self.vocab, prompt, self.max_tags)[0]

    def unknown(self, prompt: str) -> list[str]:
        return self.vocab.unknown(split_quality(prompt)[0])

    def save_pretrained(self, save_directory, **kwargs) -> None:
        d = Path(save_directory)
        d.mkdir(parents=True, exist_ok=True)
        self.vocab.save(d / VOCAB_NAME)
        (d / TOKENIZER_CONFIG).write_text(json.dumps({"max_tags": self.max_tags}) + "\n")

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, subfolder: str | None = None, **kwargs):
        d = Path(pretrained_model_name_or_path) / (subfolder or "")
        if not (d / VOCAB_NAME).is_file():
            raise FileNotFoundError(f"{d} holds no {VOCAB_NAME}: not the tokenizer folder of a VampDiffusion "
                                    f"pipeline (write one with `vamp export diffusers MODEL OUT`)")
        max_tags = json.loads((d / TOKENIZER_CONFIG).read_text())["max_tags"]
        return cls(TagVocab.load(d / VOCAB_NAME), int(max_tags))


# ----------------------------------------------------------------------------
# Schedulers
# ----------------------------------------------------------------------------

def make_scheduler(cfg: Config, sampler: str):
    """diffusers' scheduler for one of the repo's samplers, on the model's noise schedule (v-prediction,
    zero terminal SNR, trailing spacing): the same steps as diffusion/samplers.py (tests/test_samplers.py)."""
    d = cfg.diffusion
    key, _ = resolve_sampler(sampler)
    kw = dict(num_train_timesteps=d.num_timesteps, beta_start=d.beta_start, beta_end=d.beta_end,
              beta_schedule=BETA_SCHEDULES[d.beta_schedule], prediction_type="v_prediction",
              rescale_betas_zero_snr=d.zero_terminal_snr, timestep_spacing="trailing")
    if key == "ddim":
        return DDIMScheduler(**kw, set_alpha_to_one=True, clip_sample=False)
    if key == "euler":
        return EulerDiscreteScheduler(**kw, final_sigmas_type="zero")
    if key == "dpmpp2m":
        return DPMSolverMultistepScheduler(**kw, algorithm_type="dpmsolver++", solver_order=2, final_sigmas_type="zero")
    raise ValueError(f"sampler must be one of ddim, euler, dpmpp2m (DDIM, Euler, DPM++ 2M), got {sampler!r}")


# ----------------------------------------------------------------------------
# The pipeline
# ----------------------------------------------------------------------------

class VampDiffusionPipeline(DiffusionPipeline):
    """Tags -> images with classifier-free guidance (one batched pass), a negative prompt, quality tiers
    (or quality words) and the style mixer, exactly as `vamp generate` samples."""

    model_cpu_offload_seq = "transformer->vae"

    def __init__(self, transformer: VampDiTModel, tokenizer: VampTagTokenizer, scheduler, vae,
                 latents_mean: list[float] | None = None, latents_std: list[float] | None = None,
                 resolution: int = 1024, default_steps: int = 28, default_guidance_scale: float = 6.0,
                 default_guidance_rescale: float = 0.7, default_negative_quality: int = -1):
        super().__init__()
        self.register_modules(transformer=transformer, tokenizer=tokenizer, scheduler=scheduler, vae=vae)
        self.register_to_config(latents_mean=latents_mean, latents_std=latents_std, resolution=resolution,
                                default_steps=default_steps, default_guidance_scale=default_guidance_scale,
                                default_guidance_rescale=default_guidance_rescale,
                                default_negative_quality=default_negative_quality)
        self.image_processor = VaeImageProcessor(vae_scale_factor=VAE_FACTOR)

    def to_stored_latents(self, x: torch.Tensor) -> torch.Tensor:
        """The model's latents -> what the VAE decodes (undoes latents.normalize=channel)."""
        mean, std = self.config.latents_mean, self.config.latents_std
        if mean is None:
            return x
        view = (1, -1, 1, 1)
        return x * torch.tensor(std, dtype=x.dtype, device=x.device).view(view) + \
            torch.tensor(mean, dtype=x.dtype, device=x.device).view(view)

    def _conditioning(self, prompts: list[str], negatives: list[str], quality, negative_quality, style, device):
        """Tag ids, negative tag ids (None when every negative is empty), tiers and the style override."""
        from vampdiffusion.generation.generate import resolve_tier, style_tensor
        cfg = self.transformer.dit.cfg
        tiers = [resolve_tier(quality, p, False, DEFAULT_QUALITY) for p in prompts]
        neg_words = [t for t in (split_quality(n, lowest=True)[1] for n in negatives) if t is not None]
        neg_tier = negative_quality if negative_quality is not None else (
            min(neg_words) if neg_words else self.config.default_negative_quality)
        mix = parse_style(style)
        check_style(mix, cfg.num_style_experts, cfg.style_top_k)
        tags = torch.tensor([self.tokenizer(p) for p in prompts], device=device)
        neg = None if not any(n.strip() for n in negatives) else torch.tensor([self.tokenizer(n) for n in negatives],
                                                                               device=device)
        override = style_tensor(mix, len(prompts), cfg.num_style_experts)
        return tags, neg, torch.tensor(tiers, device=device), neg_tier, None if override is None else override.to(device)

    @torch.no_grad()
    def __call__(self, prompt: str | list[str], negative_prompt: str | list[str] = "", quality: int | None = None,
                 negative_quality: int | None = None, style=None, num_inference_steps: int | None = None,
                 guidance_scale: float | None = None, guidance_rescale: float | None = None,
                 width: int | None = None, height: int | None = None, num_images_per_prompt: int = 1,
                 generator: torch.Generator | list[torch.Generator] | None = None,
                 latents: torch.Tensor | None = None, output_type: str = "pil", return_dict: bool = True):
        """`quality` None: each prompt's quality word, else 3; `style`: None (routed), an expert or a mix
        {2: 0.7, 5: 0.3}; `generator`: a list of CPU generators seeded s, s+1, … gives `vamp generate`'s
        images of seed s. output_type: "pil", "np", "pt" or "latent" (stored-space latents)."""
        c = self.config
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        negatives = [negative_prompt] * len(prompts) if isinstance(negative_prompt, str) else list(negative_prompt)
        prompts = [p for p in prompts for _ in range(num_images_per_prompt)]
        negatives = [n for n in negatives for _ in range(num_images_per_prompt)]
        device, dit = self._execution_device, self.transformer.dit
        tags, neg, tiers, neg_tier, override = self._conditioning(prompts, negatives, quality, negative_quality,
                                                                  style, device)
        w, h = width or c.resolution, height or c.resolution
        shape = (len(prompts), dit.cfg.in_channels, h // VAE_FACTOR, w // VAE_FACTOR)
        x = latents.to(device) if latents is not None else randn_tensor(shape, generator, device, torch.float32)
        predict_v = guided_predictor(dit, tags, tiers, c.default_guidance_scale if guidance_scale is None else guidance_scale,
                                     c.default_guidance_rescale if guidance_rescale is None else guidance_rescale,
                                     override, neg_tier, neg)
        self.scheduler.set_timesteps(num_inference_steps or c.default_steps, device=device)
        x = x * self.scheduler.init_noise_sigma
        for t in self.progress_bar(self.scheduler.timesteps):
            t_model = torch.full((x.shape[0],), int(round(float(t))), dtype=torch.long, device=device)
            v = predict_v(self.scheduler.scale_model_input(x, t), t_model).float()
            x = self.scheduler.step(v, t, x).prev_sample
        z = self.to_stored_latents(x)
        if output_type == "latent":
            images = z
        else:
            decoded = self.vae.decode(z.to(self.vae.dtype) / self.vae.config.scaling_factor).sample.clamp(-1, 1)
            images = self.image_processor.postprocess(decoded.float(), output_type=output_type)
        self.maybe_free_model_hooks()
        return ImagePipelineOutput(images=images) if return_dict else (images,)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """diffusers' loader; a folder that is not a VampDiffusion export is named in the error."""
        folder = Path(pretrained_model_name_or_path)
        if folder.is_dir() and not (folder / "model_index.json").is_file():
            raise FileNotFoundError(f"{folder} holds no model_index.json; write a pipeline folder with "
                                    f"`vamp export diffusers MODEL_DIR {folder}`")
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)


# ----------------------------------------------------------------------------
# Export
# ----------------------------------------------------------------------------

def export_diffusers(model_dir: str | Path, out_dir: str | Path, vae_path: str | None = None,
                     sampler: str | None = None) -> Path:
    """Write a model folder as a diffusers pipeline folder (model_index.json + one folder per component)."""
    from vampdiffusion.generation.generate import load_model_vae, read_model_config
    from vampdiffusion.models.dit import CONFIG_NAME
    model_dir, out = Path(model_dir), Path(out_dir)
    cfg = read_model_config(model_dir)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "model_index.json").is_file())):
        raise ValueError(f"{out} exists and is not an empty folder or an earlier export; pass a new folder")
    vocab = TagVocab.load(model_dir / VOCAB_NAME)
    model = VampDiT.from_pretrained(model_dir).eval()
    vae = load_model_vae(cfg, vae_path, torch.device("cpu"), model_dir / CONFIG_NAME).module
    vae = vae.to(memory_format=torch.contiguous_format)   # safetensors stores contiguous tensors
    vae.register_to_config(scaling_factor=cfg.latents.scaling_factor)
    normalized = cfg.latents.normalize == "channel"
    s = cfg.sample
    pipe = VampDiffusionPipeline(
        transformer=VampDiTModel.from_vampdit(model), tokenizer=VampTagTokenizer(vocab, cfg.model.max_tags),
        scheduler=make_scheduler(cfg, sampler or s.sampler), vae=vae,
        latents_mean=list(cfg.latents.channel_mean) if normalized else None,
        latents_std=list(cfg.latents.channel_std) if normalized else None, resolution=cfg.latents.resolution,
        default_steps=s.steps, default_guidance_scale=s.cfg_scale, default_guidance_rescale=s.cfg_rescale,
        default_negative_quality=s.negative_quality)
    pipe.save_pretrained(out)
    return out
