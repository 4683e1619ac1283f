"""The training loop (docs/training.md): phase 1, 2 or 3 on one process or many (torchrun).

    train(cfg, phase=1, data_dir=LATENTS, run_dir=RUN)                      # the Python API
    vamp train --config v1 --phase 2 --data LATENTS --out runs/p2 --init-from runs/p1 --resume

Before the model is built: the latent dataset is verified (training/preflight.py), the newest usable
checkpoint is found (an unusable one is moved aside, never written over), and the planner's memory estimate
is compared with the device's. SIGTERM / SIGINT write a checkpoint and return EXIT_PREEMPTED (75).

One optimizer step = `grad_accum` micro-batches of `micro_batch` images on each of the world's
processes. Randomness of the loss (timesteps, noise, tag dropout) is drawn from a generator seeded
by (seed, step, slot), slot = micro-step · world + rank, so a resumed run draws exactly what the
uninterrupted run drew, and a run's noise does not depend on how the global batch is split.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vampdiffusion import __version__
from vampdiffusion.atomic import atomic_write_bytes, atomic_write_json
from vampdiffusion.config import Config, ConfigError, PhaseConfig, config_from_dict, config_to_dict, save_config_yaml
from vampdiffusion.latents.latent_space import channel_affine, channel_stats, standardise
from vampdiffusion.data.vocab import TagVocab, parse_prompt
from vampdiffusion.diffusion.loss import training_loss
from vampdiffusion.diffusion.schedule import NoiseSchedule
from vampdiffusion.models.dit import CONFIG_NAME, LIVE_WEIGHTS_NAME, VOCAB_NAME, WEIGHTS_NAME, VampDiT
from vampdiffusion.models.moe import is_expert_or_router
from vampdiffusion.training import checkpoint as ckpt
from vampdiffusion.training import distributed as D
from vampdiffusion.training.ema import EMA
from vampdiffusion.training.metrics import MetricsLogger, device_peak_flops, grad_norm, mfu, routing_scalars
from vampdiffusion.training.optim import lr_at, make_optimizer, set_lr
from vampdiffusion.training.samples import SampleGrid
from vampdiffusion.training.preflight import check_memory, verify_data
from vampdiffusion.training.signals import EXIT_PREEMPTED, StopRequest

log = logging.getLogger("vampdiffusion.train")


# ----------------------------------------------------------------------------
# Setup
# ----------------------------------------------------------------------------

def setup_logging(run_dir: Path, is_main: bool) -> None:
    log.setLevel(logging.INFO if is_main else logging.WARNING)
    log.propagate = False
    for h in list(log.handlers):
        log.removeHandler(h)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(fmt)
    log.addHandler(stream)
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        file = logging.FileHandler(run_dir / "train.log")
        file.setFormatter(fmt)
        log.addHandler(file)


def read_data_description(cfg: Config, data_dir: Path) -> dict:
    """Fit the config to the dataset: model.vocab_size from vocab.json, the VAE from dataset.json."""
    vocab_path = data_dir / VOCAB_NAME
    if not vocab_path.is_file():
        raise FileNotFoundError(f"{vocab_path} not found: --data must be a latent folder written by "
                                f"`vamp data encode` (index.parquet, shards/, vocab.json, dataset.json)")
    n = len(TagVocab.load(vocab_path))
    if cfg.model.vocab_size != n:
        log.info("model.vocab_size set to %d from %s (config said %d)", n, vocab_path, cfg.model.vocab_size)
        cfg.model.vocab_size = n
    desc_path = data_dir / "dataset.json"
    desc = json.loads(desc_path.read_text()) if desc_path.is_file() else {}
    for key, field in (("vae", "vae"), ("vae_path", "vae_path"), ("scaling_factor", "scaling_factor")):
        if key in desc and desc[key] != getattr(cfg.latents, field):
            log.info("latents.%s set to %r from %s (config said %r)", field, desc[key], desc_path,
                     getattr(cfg.latents, field))
            setattr(cfg.latents, field, type(getattr(cfg.latents, field))(desc[key]))
    lc = cfg.latents
    if lc.normalize == "channel" and not lc.channel_mean and not lc.channel_std:
        if desc.get("channel_mean") and desc.get("channel_std"):
            mean, std, source = desc["channel_mean"], desc["channel_std"], str(desc_path)
        else:  # dataset.json without the statistics: measure them
            (mean, std), source = channel_stats(data_dir), f"the training latents of {data_dir}"
        lc.channel_mean, lc.channel_std = [float(m) for m in mean], [float(v) for v in std]
        log.info("latents.normalize=channel: mean %s, std %s (from %s)", lc.channel_mean, lc.channel_std, source)
    channel_affine(lc, cfg.model.in_channels)  # a bad setting fails here, not at the first step
    return desc


def adopt_init_latent_space(cfg: Config, init_from: str) -> None:
    """A phase started from another run's weights works in that run's latent space: its channel statistics,
    never freshly measured ones; a different latents.normalize is an error."""
    p = Path(init_from)
    found = [c for c in (p / "model" / CONFIG_NAME, p / CONFIG_NAME, ckpt.init_weights_path(init_from).parent / CONFIG_NAME)
             if c.is_file()]
    if not found:
        return
    saved = config_from_dict({"latents": json.loads(found[0].read_text()).get("latents", {})}).latents
    if saved.normalize != cfg.latents.normalize:
        raise ConfigError(f"--init-from {init_from} was trained with latents.normalize={saved.normalize!r} "
                          f"({found[0]}), this run has {cfg.latents.normalize!r}; use --set "
                          f"latents.normalize={saved.normalize}")
    if saved.normalize == "channel" and not cfg.latents.channel_mean and not cfg.latents.channel_std:
        cfg.latents.channel_mean, cfg.latents.channel_std = saved.channel_mean, saved.channel_std


def set_trainable(model: torch.nn.Module, phase: PhaseConfig) -> None:
    """Phase 2 trains only the expert FFNs and routers; phases 1 and 3 train everything."""
    for name, p in model.named_parameters():
        p.requires_grad_(phase.trainable == "all" or is_expert_or_router(name))


# ----------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------

def make_data(cfg: Config, data_dir: Path, phase: PhaseConfig, info: D.DistInfo):
    """This rank's endless micro-batch stream of the phase's rows (tier-3 oversampling, curated top-K)."""
    from vampdiffusion.latents.loader import make_loader

    loader = make_loader(data_dir, cfg, phase, rank=info.rank, world_size=info.world_size)
    rows = int((loader.sampler.weights > 0).sum())
    log.info("data: %d of %d training rows in phase (tier-3 weight %.1f, curated top-K %s), %d batches per epoch "
             "per rank", rows, len(loader.dataset), phase.oversample_q3, phase.curate_top_k or "off",
             loader.batches_per_epoch())
    return loader


# ----------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------

@dataclass
class Progress:
    step: int = 0                 # optimizer steps done
    images_seen: int = 0          # images consumed by completed optimizer steps (global)
    nonfinite_total: int = 0      # skipped optimizer steps
    nonfinite_in_a_row: int = 0


def slot_seed(seed: int, step: int, slot: int) -> int:
    return (seed * 1_000_003 + step) * 4096 + slot


def autocast_context(cfg: Config, device: torch.device):
    if device.type == "cuda" and cfg.train.precision == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def parameter_groups(model: torch.nn.Module) -> dict[str, list[torch.nn.Parameter]]:
    """router / experts / backbone (everything else) for the gradient-norm report (docs/evaluation.md)."""
    groups: dict[str, list[torch.nn.Parameter]] = {"router": [], "experts": [], "backbone": []}
    for name, p in model.named_parameters():
        key = "router" if ".router." in name else "experts" if is_expert_or_router(name) else "backbone"
        groups[key].append(p)
    return groups


def flops_per_image(cfg: Config, phase: PhaseConfig, latent_hw: tuple[int, int]) -> float:
    """Model FLOPs of one training image (active experts only, no recompute) from the planner: the MFU numerator."""
    from vampdiffusion.models.planner import frozen_backbone_training_flops_per_image, training_flops_per_image
    if phase.trainable == "experts":
        return frozen_backbone_training_flops_per_image(cfg.model, latent_hw)
    return training_flops_per_image(cfg.model, latent_hw)


class Trainer:
    def __init__(self, cfg: Config, phase_id: int, data_dir: Path, run_dir: Path, info: D.DistInfo):
        self.cfg, self.phase_id, self.data_dir, self.run_dir, self.info = cfg, phase_id, data_dir, run_dir, info
        self.phase = cfg.train.phase(phase_id)
        self.device = info.device
        self.progress = Progress()

    # -- state ----------------------------------------------------------------

    def build(self, init_from: str | None, resume_state: dict | None) -> None:
        cfg, info = self.cfg, self.info
        torch.manual_seed(cfg.train.seed)          # the same initial weights on every rank (FSDP2 shards them)
        self.model = VampDiT(cfg.model)
        torch.manual_seed(cfg.train.seed + info.rank)
        if resume_state is not None:
            ckpt.check_architecture(self.model.state_dict(), resume_state["model"], "the checkpoint")
            self.model.load_state_dict(resume_state["model"])
        elif init_from is not None:
            path = ckpt.load_init_weights(self.model, init_from)
            log.info("phase %d starts from %s (fresh optimizer and schedule)", self.phase_id, path)
        set_trainable(self.model, self.phase)
        self.model.to(self.device)
        self.sharded = cfg.train.distributed == "fsdp" and info.world_size > 1
        if self.sharded:  # before the optimizer and the EMA: their tensors are the DTensor shards
            D.shard_fsdp(self.model, info)
        self.trainable = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        self.optimizer = make_optimizer(self.trainable, cfg.train, lr=lr_at(0, self.phase))
        self.ema = EMA(self.model, cfg.train.ema_decay, cfg.train.ema_warmup)
        self.schedule = NoiseSchedule(cfg.diffusion)
        affine = channel_affine(cfg.latents, cfg.model.in_channels)   # latents.normalize, on the device once
        self.latent_affine = None if affine is None else tuple(a.to(self.device) for a in affine)
        self.loader = make_data(cfg, self.data_dir, self.phase, info)
        if resume_state is not None:
            if resume_state.get("sharded", False) != self.sharded:
                raise ValueError("the checkpoint was written with train.distributed="
                                 f"{'fsdp' if resume_state.get('sharded') else 'ddp'}; resume with the same setting")
            D.load_optimizer_and_ema(self.model, self.optimizer, self.ema, resume_state, self.sharded, self.device)
            self.loader.load_state_dict(resume_state["data"])
            self.progress = Progress(**resume_state["progress"])
            rng = resume_state["rng"]
            if len(rng) == info.world_size:
                ckpt.set_rng_state(rng[info.rank])
            else:
                log.warning("checkpoint was written by %d processes, this run has %d: global RNG states reseeded "
                            "(the loss noise and data order still follow the step)", len(rng), info.world_size)
        self.batches = iter(self.loader)
        # the routing of the latest forward, for the logged statistics; a permanent hook (adding and
        # removing one per logging step would make torch.compile recompile)
        self.last_aux = None
        self.model.register_forward_hook(lambda module, args, out: setattr(self, "last_aux", out[1]))
        self.wrapped = self.model if self.sharded else D.wrap_ddp(self.model, info)
        if cfg.train.compile and cfg.train.compile_scope == "blocks":
            self.model.compile_blocks()         # regional: inside DDP / FSDP2 units, one compile per block kind
        elif cfg.train.compile:
            self.wrapped = torch.compile(self.wrapped)
        n_train = sum(p.numel() for _, p in self.trainable)
        n_all = sum(p.numel() for p in self.model.parameters())
        log.info("model: %.2fM parameters, %.2fM trainable in phase %d (%s)", n_all / 1e6, n_train / 1e6,
                 self.phase_id, self.phase.trainable)

    def full_states(self) -> tuple[dict, dict, dict]:
        return D.full_states(self.model, self.ema, self.sharded, self.info.is_main)

    def save_checkpoint(self) -> None:
        """Full checkpoint + model/ export, written by rank 0 (every rank takes part in gathering)."""
        rng = D.gather_objects(ckpt.rng_state())
        live, ema_export, ema_state = self.full_states()
        optimizer = D.optimizer_state(self.model, self.optimizer, self.sharded)
        if self.info.is_main:
            state = {
                "version": __version__, "phase": self.phase_id, "world_size": self.info.world_size,
                "sharded": self.sharded, "model": live, "ema": ema_state, "optimizer": optimizer,
                "data": self.loader.state_dict(), "progress": vars(self.progress).copy(), "rng": rng,
                "config": config_to_dict(self.cfg), "lr_schedule": {"step": self.progress.step},
            }
            path = ckpt.save_checkpoint(self.run_dir, self.progress.step, state, self.cfg.train.keep_last)
            self.export_model(live, ema_export)
            log.info("checkpoint %s (and model/ export)", path)
        D.barrier()

    def save_ema_weights(self) -> None:
        _, ema_export, _ = self.full_states()
        if self.info.is_main:
            ckpt.save_ema_weights(self.run_dir, self.progress.step, ema_export, self.cfg.train.keep_last_ema)

    def export_model(self, live: dict, ema_export: dict) -> Path:
        """RUN_DIR/model/: config.json (full Config), model.safetensors (EMA), model_live.safetensors, vocab.json."""
        folder = self.run_dir / "model"
        meta = {"format": "pt", "step": str(self.progress.step), "phase": str(self.phase_id)}
        ckpt.save_safetensors(folder / LIVE_WEIGHTS_NAME, live, meta)
        ckpt.save_safetensors(folder / WEIGHTS_NAME, ema_export, meta)
        atomic_write_bytes(folder / VOCAB_NAME, (self.data_dir / VOCAB_NAME).read_bytes())
        atomic_write_json(folder / CONFIG_NAME, config_to_dict(self.cfg))
        return folder

    # -- one optimizer step ---------------------------------------------------

    def train_step(self, want_stats: bool):
        """Accumulate grad_accum micro-batches, clip, check finiteness, step.

        Returns (finite, stop, sums, aux, norms): whether the update was applied, whether any rank asked to stop,
        the micro-step sums of the loss terms, the routing of the last forward (logging steps only) and the
        gradient norms by parameter group (logging steps only)."""
        cfg, info = self.cfg, self.info
        accum = cfg.train.grad_accum
        sums: dict[str, torch.Tensor] = {}
        generator = torch.Generator()
        for m in range(accum):
            batch = {k: v.to(self.device, non_blocking=True) for k, v in next(self.batches).items()}
            batch["latent"] = standardise(batch["latent"], self.latent_affine)
            generator.manual_seed(slot_seed(cfg.train.seed, self.progress.step, m * info.world_size + info.rank))
            last = m == accum - 1
            with D.gradient_sync(self.wrapped, sync=last), autocast_context(cfg, self.device):
                loss, metrics = training_loss(self.wrapped, batch, self.schedule, cfg.diffusion,
                                              self.phase.lambda_spec, generator)
                (loss / accum).backward()
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + (v.detach() if torch.is_tensor(v) else torch.tensor(float(v)))
            sums["loss"] = sums.get("loss", 0.0) + loss.detach()
        norms = {}
        if want_stats:
            for key, params in parameter_groups(self.model).items():
                norms[f"grad_norm/{key}"] = grad_norm(params)
        total_norm = torch.nn.utils.clip_grad_norm_([p for _, p in self.trainable], cfg.train.grad_clip)
        if hasattr(total_norm, "full_tensor"):  # FSDP2: a replicated DTensor
            total_norm = total_norm.full_tensor()
        # one host sync per step: skip the update when the loss or any gradient is not finite
        bad = (~torch.isfinite(sums["loss"]) | ~torch.isfinite(total_norm)).float().reshape(1)
        stop_flag = torch.full((1,), 1.0 if self.stop.requested else 0.0, device=bad.device)
        flags = D.all_reduce_max(torch.cat([bad, stop_flag])).cpu()              # agreed by every rank
        finite, stop = flags[0].item() == 0.0, flags[1].item() > 0
        if finite:
            set_lr(self.optimizer, lr_at(self.progress.step, self.phase))
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if finite:
            self.ema.update(self.model)
        norms["grad_norm/total"] = float(total_norm) if want_stats else float("nan")
        return finite, stop, sums, (self.last_aux if want_stats else None), norms

    # -- the loop -------------------------------------------------------------

    def run(self) -> int:
        cfg, info, phase = self.cfg, self.info, self.phase
        tcfg = cfg.train
        global_batch = tcfg.micro_batch * tcfg.grad_accum * info.world_size
        logger = MetricsLogger(self.run_dir, tcfg.wandb, config_to_dict(cfg), self.run_dir.name) if info.is_main else None
        grid = SampleGrid(cfg, self.run_dir, self.tokenize, self.load_vae) if tcfg.sample_every > 0 else None
        latent_hw = self.latent_hw()
        flops = flops_per_image(cfg, phase, latent_hw)
        peak = device_peak_flops(self.device, tcfg.peak_tflops * 1e12) * info.world_size
        bar = None
        if info.is_main:
            from tqdm import tqdm
            bar = tqdm(total=phase.steps, initial=self.progress.step, desc=f"phase {self.phase_id}",
                       unit="step", dynamic_ncols=True, file=sys.stderr)
        self.stop = StopRequest().install()
        window_start, window_steps = time.perf_counter(), 0
        window: dict[str, torch.Tensor] = {}
        try:
            while self.progress.step < phase.steps:
                step_to_be = self.progress.step + 1
                want_stats = step_to_be % tcfg.log_every == 0 or step_to_be == phase.steps
                finite, stop, sums, aux, norms = self.train_step(want_stats)
                if not finite:
                    if self.skipped_step(step_to_be):
                        return 1
                    if not stop:
                        continue
                else:
                    self.progress.nonfinite_in_a_row = 0
                    self.progress.step += 1
                    self.progress.images_seen += global_batch
                    window_steps += 1
                    for k, v in sums.items():
                        window[k] = window.get(k, 0.0) + v / tcfg.grad_accum
                step = self.progress.step
                if bar is not None:
                    bar.update(1 if finite else 0)
                if finite and want_stats:
                    self.log_window(logger, bar, window, window_steps, window_start, global_batch, flops, peak,
                                    aux, norms)
                    window, window_steps, window_start = {}, 0, time.perf_counter()
                if finite:
                    self.periodic_outputs(step, grid, logger, latent_hw)
                if stop:
                    self.save_checkpoint()
                    log.info("stopped by %s at step %d (exit code %d); continue with the same command and --resume",
                             self.stop.signal_name or "a signal on another rank", step, EXIT_PREEMPTED)
                    return EXIT_PREEMPTED
                if finite and (step % tcfg.ckpt_every == 0 or step == phase.steps):
                    self.save_checkpoint()
            log.info("phase %d finished: %d steps, %d images, %d skipped non-finite steps; model in %s",
                     self.phase_id, self.progress.step, self.progress.images_seen, self.progress.nonfinite_total,
                     self.run_dir / "model")
            return 0
        finally:
            self.stop.uninstall()
            if bar is not None:
                bar.close()
            if logger is not None:
                logger.close()

    def skipped_step(self, step_to_be: int) -> bool:
        """Count a step skipped for a non-finite loss or gradient; True when train.max_nonfinite in a row end the run."""
        p = self.progress
        p.nonfinite_total += 1
        p.nonfinite_in_a_row += 1
        log.warning("step %d: non-finite loss or gradient, update skipped (%d in a row, %d in all)",
                    step_to_be, p.nonfinite_in_a_row, p.nonfinite_total)
        if p.nonfinite_in_a_row < self.cfg.train.max_nonfinite:
            return False
        log.error("stopping: %d non-finite steps in a row (train.max_nonfinite). Lower the learning rate, check the "
                  "data for NaN latents, or resume from an earlier checkpoint.", p.nonfinite_in_a_row)
        return True

    def periodic_outputs(self, step: int, grid: SampleGrid | None, logger, latent_hw: tuple[int, int]) -> None:
        """EMA-only weights every train.ema_every steps, the sample grid every train.sample_every and at the end."""
        tcfg = self.cfg.train
        if tcfg.ema_every > 0 and step % tcfg.ema_every == 0:
            self.save_ema_weights()
        if grid is not None and (step % tcfg.sample_every == 0 or step == self.phase.steps):
            self.sample_grid(grid, logger, latent_hw)

    def log_window(self, logger, bar, window, steps, start, global_batch, flops, peak, aux, norms) -> None:
        elapsed = time.perf_counter() - start
        images_per_s = steps * global_batch / max(elapsed, 1e-9)
        keys = sorted(window)
        totals = D.all_reduce_sum(torch.stack([torch.as_tensor(window[k], dtype=torch.float32).to(self.device)
                                               for k in keys])).cpu() / self.info.world_size   # mean over ranks
        scalars = {k: float(v) / max(steps, 1) for k, v in zip(keys, totals.tolist())}
        scalars = {(k if k == "loss" else "loss/" + k): v for k, v in scalars.items()}
        scalars.update(norms)
        scalars["lr"] = self.optimizer.param_groups[0]["lr"]
        scalars["images_per_s"] = images_per_s
        scalars["model_tflops_per_s"] = flops * images_per_s / 1e12      # all ranks together
        scalars["mfu"] = mfu(flops, images_per_s, peak)
        scalars["images_seen"] = self.progress.images_seen
        scalars["nonfinite_total"] = self.progress.nonfinite_total
        if aux is not None:
            routing, warnings = routing_scalars(aux, self.cfg.eval.collapse_threshold)
            scalars.update(routing)
            for w in warnings:
                log.warning("step %d: %s", self.progress.step, w)
                if logger is not None:
                    logger.event(self.progress.step, "collapse", w)
        if logger is not None:
            logger.write(self.progress.step, scalars)
        if bar is not None:
            bar.set_postfix(loss=f"{scalars.get('loss', float('nan')):.4f}", lr=f"{scalars['lr']:.2e}",
                            img_s=f"{images_per_s:.1f}", refresh=False)

    # -- samples --------------------------------------------------------------

    def latent_hw(self) -> tuple[int, int]:
        """The grid's latent size: the most common bucket of the dataset."""
        ds = self.loader.dataset
        return tuple(int(x) for x in ds.bucket_shapes[np.bincount(ds.bucket).argmax()])

    def tokenize(self, prompts: list[str]) -> torch.Tensor:
        """(len(prompts), max_tags) tag ids of the grid prompts; unknown tags are named in the log."""
        vocab = TagVocab.load(self.data_dir / VOCAB_NAME)
        L = self.cfg.model.max_tags
        for p in prompts:
            unknown = vocab.unknown(parse_prompt(p))
            if unknown:
                log.warning("sample prompt %r: tags not in the vocabulary (they become [UNK]): %s", p, unknown)
        return torch.tensor([vocab.pad(vocab.encode_prompt(p, L), L) for p in prompts], dtype=torch.long)

    def load_vae(self):
        from vampdiffusion.latents.vae import load_vae
        return load_vae(self.cfg.latents, device=self.device)

    def sample_grid(self, grid: SampleGrid, logger, latent_hw) -> None:
        """Every rank samples (the model's balance statistics are collectives); rank 0 decodes and saves."""
        names = self.ema.names
        params = dict(self.model.named_parameters())
        live = {n: params[n].detach().clone() if self.sharded else params[n].detach().to("cpu", copy=True)
                for n in names}
        with torch.no_grad():
            for n in names:
                params[n].copy_(self.ema.shadow[n])
        self.model.eval()
        try:
            if self.info.is_main:
                result = grid.make(self.model, self.progress.step, latent_hw, self.device)
                if result is not None:
                    path, image = result
                    log.info("sample grid %s", path)
                    if logger is not None:
                        logger.image(self.progress.step, "samples/grid", image)
            elif self.info.world_size > 1:
                from vampdiffusion.training.samples import sample_grid_latents
                sample_grid_latents(self.model, grid.tag_ids, self.cfg, latent_hw, self.device)
        finally:
            with torch.no_grad():
                for n in names:
                    params[n].copy_(live[n])
            self.model.train()


def train(cfg: Config, phase_id: int, data_dir: Path, run_dir: Path, init_from: str | None = None,
          resume: bool = False, force_restart: bool = False) -> int:
    """0 when the phase finished, 1 when it stopped on non-finite steps, EXIT_PREEMPTED (75) when a signal
    stopped it after a checkpoint. Bad input (damaged data, unusable checkpoints, a model that cannot fit) is a
    ValueError / FileNotFoundError / ConfigError naming the problem and the fix."""
    info = D.init_distributed()
    try:
        setup_logging(run_dir, info.is_main)
        cfg.train.phase(phase_id)
        if not data_dir.is_dir():
            raise FileNotFoundError(f"--data {data_dir} is not a folder (a latent dataset from `vamp data encode`)")
        if info.is_main:
            for p in ckpt.remove_stale_temp_files(run_dir):
                log.info("removed %s (a write interrupted by the previous run's end)", p.relative_to(run_dir))
        verify_data(data_dir, run_dir, info)
        resume_state = resume_point(run_dir, phase_id, resume, force_restart, info)
        if init_from is not None and resume_state is None:
            adopt_init_latent_space(cfg, init_from)
        read_data_description(cfg, data_dir)
        check_memory(cfg, cfg.train.phase(phase_id), data_dir, info)
        if resume_state is not None and "config" in resume_state:
            _warn_config_changes(config_from_dict(resume_state["config"]), cfg)
        if info.is_main:
            save_config_yaml(cfg, run_dir / "config.yaml")
        trainer = Trainer(cfg, phase_id, data_dir, run_dir, info)
        trainer.build(init_from if resume_state is None else None, resume_state)
        return trainer.run()
    finally:
        D.shutdown_distributed()


def resume_point(run_dir: Path, phase_id: int, resume: bool, force_restart: bool, info: D.DistInfo) -> dict | None:
    """The checkpoint state to continue from, or None to start at step 0. A checkpoint that cannot be used is
    moved aside, never written over: the run's next checkpoints reuse its step numbers."""
    if not ckpt.list_checkpoints(run_dir):
        if resume:
            log.info("--resume: no checkpoint in %s, starting phase %d from the beginning", run_dir, phase_id)
        return None
    if not (resume or force_restart):
        raise ValueError(f"{run_dir} already holds checkpoints; pass --resume to continue that run, "
                         f"or choose a new --out")
    found, rejected = ckpt.scan_checkpoints(run_dir, ckpt.REQUIRED_KEYS)
    if found is None:
        if not force_restart:
            raise ValueError(unusable_message(run_dir, phase_id, rejected))
        set_aside(run_dir, rejected, info)
        log.warning("--force-restart: starting phase %d from step 0", phase_id)
        return None
    state, path = found
    if not resume:
        raise ValueError(f"{run_dir} holds a usable checkpoint ({path.name}); pass --resume to continue it, or choose "
                         f"a new --out (--force-restart moves only unusable checkpoints aside)")
    if rejected:
        set_aside(run_dir, rejected, info)
    if state["phase"] != phase_id:
        raise ValueError(f"{path} is a phase-{state['phase']} checkpoint; this is --phase {phase_id}. "
                         f"Resume with --phase {state['phase']}, or start phase {phase_id} in a new "
                         f"--out with --init-from {run_dir}")
    log.info("resuming from %s (step %d)", path, state["progress"]["step"])
    return state


def unusable_message(run_dir: Path, phase_id: int, rejected: list[tuple[Path, str]]) -> str:
    folder = run_dir / "checkpoints"
    lines = [f"none of the {len(rejected)} checkpoint(s) in {folder} is usable:"]
    lines += [f"  {path.name}: {reason}" for path, reason in rejected]
    lines.append(f"  to continue: pass --force-restart to move them into {folder}/unusable-<time>/ and start phase "
                 f"{phase_id} from step 0, or put a good checkpoint (with its .json sidecar) back into {folder}")
    return "\n".join(lines)


def set_aside(run_dir: Path, rejected: list[tuple[Path, str]], info: D.DistInfo) -> None:
    """Rank 0 moves the unusable checkpoints aside once every rank has finished reading the folder."""
    D.barrier()
    if info.is_main:
        folder = ckpt.move_aside(run_dir, [path for path, _ in rejected])
        log.warning("moved %d unusable checkpoint(s) to %s: %s", len(rejected), folder,
                    "; ".join(f"{path.name} ({reason})" for path, reason in rejected))
    D.barrier()


def _warn_config_changes(saved: Config, now: Config) -> None:
    a, b = config_to_dict(saved), config_to_dict(now)
    for section in a:
        for key in a[section]:
            if section != "model" and a[section][key] != b[section].get(key):
                log.warning("config changed since the checkpoint: %s.%s %r -> %r", section, key,
                            a[section][key], b[section][key])
