"""The training data stream: latents from memory-mapped shards, batched within one bucket, resumable.

- `LatentDataset`: map-style over `index.parquet` + `shards/*.npy` (one split). `dataset[i]` is one
  sample; `dataset.__getitems__(rows)` fetches a whole batch with one fancy index per shard.
- `BucketBatchSampler`: the batches of an epoch are a pure function of (seed, epoch, weights):
  each row appears floor(w) times plus once more with probability frac(w); rows are shuffled
  within their bucket, cut into batches, and the batches shuffled; rank r of W takes batches r, r+W, …
  (the list is padded with its own first batches to a multiple of W, so every rank runs the same
  number of steps). DataLoader workers receive whole batches, so nothing overlaps and nothing is lost.
- `LatentLoader`: endless iterator over epochs that counts the batches the trainer consumed, so
  `state_dict()` / `load_state_dict()` resume at exactly the next batch, whatever the prefetch depth.
- Tag augmentations (off by default): shuffle the tags after the first `keep_tokens`, per-tag dropout.
  [BOS] stays first and [EOS] last. The classifier-free-guidance empty-prompt dropout is NOT here:
  it lives in diffusion/loss.py.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from vampdiffusion.config import Config, LatentConfig, ModelConfig, PhaseConfig
from vampdiffusion.data.vocab import BOS, EOS, PAD
from vampdiffusion.latents.shards import open_shard, read_shards_json

INDEX_COLUMNS = ("id", "shard", "row", "latent_h", "latent_w", "tag_ids", "quality", "style", "split")
CURATION_COLUMNS = ("aesthetic", "score_tag")  # optional: phase-3 curation treats missing values as z = 0
MAX_OPEN_SHARDS = 256                          # memory maps kept open per process


# ----------------------------------------------------------------------------
# Dataset
# ----------------------------------------------------------------------------

def read_index(index_path: Path) -> tuple[pa.Table, list[str]]:
    """(the loader's columns, every column name) of index.parquet; a damaged file is a ValueError naming it."""
    try:
        names = pq.read_schema(index_path).names
        missing = [c for c in INDEX_COLUMNS if c not in names]
        if not missing:
            return pq.read_table(index_path, columns=[c for c in names if c in INDEX_COLUMNS + CURATION_COLUMNS]), names
    except Exception as e:  # pyarrow raises ArrowInvalid, OSError … on a truncated or foreign file
        raise ValueError(f"{index_path} is not a readable parquet file ({type(e).__name__}); "
                         f"check it with `vamp data verify {index_path.parent}`, re-run `vamp data encode`") from None
    raise ValueError(f"{index_path} lacks column(s) {missing}; re-run `vamp data encode` on a manifest "
                     f"written by `vamp data prepare`")


class LatentDataset(torch.utils.data.Dataset):
    """Rows of one split of a latent dataset folder. Shards are memory-mapped lazily in each process."""

    def __init__(self, root: str | Path, split: str | None = "train", max_tags: int = ModelConfig.max_tags,
                 num_styles: int = ModelConfig.num_style_experts, num_tiers: int = ModelConfig.num_quality_tiers):
        self.root = Path(root)
        self.max_tags, self.num_styles, self.num_tiers = max_tags, num_styles, num_tiers
        index_path = self.root / "index.parquet"
        if not index_path.is_file():
            raise FileNotFoundError(f"{index_path} not found: {root} is not a finished latent dataset; "
                                    f"run `vamp data encode --out {root}`")
        table, names = read_index(index_path)
        if split is not None:
            table = table.filter(pc.equal(table["split"], split))
            if table.num_rows == 0:
                fix = (" (prepare with data.eval_fraction > 0 and encode again; the evaluation reads the held-out "
                       "split)") if split == "eval" else ""
                raise ValueError(f"{index_path} has no rows with split == {split!r}{fix}")
        self.records = {r["shard"]: r for r in read_shards_json(self.root)}
        self.ids = table["id"].to_numpy()                                          # (N,)
        self.shard = table["shard"].to_numpy().astype(np.int64)                    # (N,)
        self.row = table["row"].to_numpy().astype(np.int64)                        # (N,)
        self.quality = table["quality"].to_numpy().astype(np.int64)                # (N,) 0..3
        self.style = table["style"].to_numpy().astype(np.int64)                    # (N,) -1..7
        nan = np.full(len(self.ids), np.nan)
        self.aesthetic = table["aesthetic"].to_numpy(zero_copy_only=False).astype(np.float64) if "aesthetic" in names else nan
        self.score_tag = table["score_tag"].to_numpy(zero_copy_only=False).astype(np.float64) if "score_tag" in names else nan
        shapes = np.stack([table["latent_h"].to_numpy(), table["latent_w"].to_numpy()], axis=1)
        self.bucket_shapes, self.bucket = np.unique(shapes, axis=0, return_inverse=True)  # (K, 2), (N,)
        self.bucket = self.bucket.reshape(-1)
        tags = table["tag_ids"].combine_chunks()
        offsets = tags.offsets.to_numpy().astype(np.int64)
        self.tag_offsets = offsets - offsets[0]                                    # (N+1,) CSR of tag ids
        self.tag_values = tags.flatten().to_numpy().astype(np.int32)
        self._shards: OrderedDict[int, np.ndarray] = OrderedDict()
        self._check()

    def _check(self) -> None:
        """Fail at load time, naming the shard or the row, rather than mid-training."""
        shards = np.unique(self.shard)
        for k in shards.tolist():
            if k not in self.records:
                raise FileNotFoundError(f"index.parquet names shard {k}, which {self.root}/shards.json does not list; "
                                        f"re-run `vamp data encode` to rebuild the dataset")
        # open_shard: a missing file or a shape unlike shards.json -> error naming the shard
        shapes = np.array([open_shard(self.root, self.records[k]).shape for k in shards.tolist()])  # (S, 4)
        of_row = shapes[np.searchsorted(shards, self.shard)]                                          # (N, 4)
        bad_row = self.row >= of_row[:, 0]
        if bad_row.any():
            i = int(np.flatnonzero(bad_row)[0])
            raise ValueError(f"index.parquet points at row {self.row[i]} of shard {self.shard[i]}, "
                             f"which has {of_row[i, 0]} rows; re-run `vamp data encode`")
        bad_shape = (self.bucket_shapes[self.bucket] != of_row[:, 2:]).any(axis=1)
        if bad_shape.any():
            i = int(np.flatnonzero(bad_shape)[0])
            raise ValueError(f"shard {self.shard[i]}: index.parquet says latents {self.bucket_shapes[self.bucket[i]].tolist()}, "
                             f"the shard holds {of_row[i, 2:].tolist()}; re-run `vamp data encode`")
        if ((self.quality < 0) | (self.quality >= self.num_tiers)).any():
            bad = self.ids[(self.quality < 0) | (self.quality >= self.num_tiers)][0]
            raise ValueError(f"quality must be 0..{self.num_tiers - 1}; id {bad} has another value")
        if ((self.style < -1) | (self.style >= self.num_styles)).any():
            bad = self.ids[(self.style < -1) | (self.style >= self.num_styles)][0]
            raise ValueError(f"style must be -1..{self.num_styles - 1}; id {bad} has another value")
        lengths = np.diff(self.tag_offsets)
        first = self.tag_values[np.minimum(self.tag_offsets[:-1], len(self.tag_values) - 1)]
        last = self.tag_values[np.maximum(self.tag_offsets[1:] - 1, 0)]
        bad = (lengths < 2) | (first != BOS) | (last != EOS)
        if bad.any():
            raise ValueError(f"tag_ids of {int(bad.sum())} row(s) are not [BOS] … [EOS] (e.g. id {self.ids[bad][0]}); "
                             f"re-run `vamp data prepare`")
        self.truncated = int((lengths > self.max_tags).sum())  # rows cut to max_tags (rarest tags dropped)

    def __len__(self) -> int:
        return len(self.ids)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_shards"] = OrderedDict()  # worker processes map the shards themselves
        return state

    def _array(self, k: int) -> np.ndarray:
        """Shard k memory-mapped; at most MAX_OPEN_SHARDS stay open (each holds a file descriptor)."""
        if k in self._shards:
            self._shards.move_to_end(k)
        else:
            if len(self._shards) >= MAX_OPEN_SHARDS:
                self._shards.popitem(last=False)
            self._shards[k] = open_shard(self.root, self.records[k])
        return self._shards[k]

    def tag_batch(self, rows: np.ndarray) -> np.ndarray:
        """(B, max_tags) int64: [BOS] tags… [EOS] padded with [PAD]; longer rows keep their first max_tags-1 ids + [EOS]."""
        L = self.max_tags
        starts = self.tag_offsets[rows]                                           # (B,)
        lengths = self.tag_offsets[rows + 1] - starts                             # (B,)
        pos = np.arange(L)[None, :]                                               # (1, L)
        gather = np.minimum(starts[:, None] + pos, len(self.tag_values) - 1)      # (B, L)
        out = np.where(pos < lengths[:, None], self.tag_values[gather], PAD).astype(np.int64)
        out[lengths > L, L - 1] = EOS
        return out

    def __getitems__(self, rows: list[int]) -> dict[str, torch.Tensor]:
        """One batch; all rows must share a bucket (BucketBatchSampler guarantees it)."""
        rows = np.asarray(rows, np.int64)
        buckets = np.unique(self.bucket[rows])
        if len(buckets) != 1:
            raise ValueError(f"a batch mixes latent sizes {self.bucket_shapes[buckets].tolist()}; use BucketBatchSampler")
        h, w = self.bucket_shapes[buckets[0]]
        latent = np.empty((len(rows), 4, h, w), np.float32)                       # (B, 4, h, w)
        shard = self.shard[rows]
        for k in np.unique(shard):
            sel = np.flatnonzero(shard == k)
            latent[sel] = self._array(int(k))[self.row[rows[sel]]]                # one fancy index per shard
        return {"latent": torch.from_numpy(latent),
                "tag_ids": torch.from_numpy(self.tag_batch(rows)),
                "quality": torch.from_numpy(self.quality[rows]),
                "style": torch.from_numpy(self.style[rows])}

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([i]).items()}


def batch_is_ready(batch: dict) -> dict:
    """collate_fn: `__getitems__` already returns a collated batch."""
    return batch


# ----------------------------------------------------------------------------
# Sampling weights: phase 2 oversampling, phase 3 curation
# ----------------------------------------------------------------------------

def zscore(x: np.ndarray) -> np.ndarray:
    """(x - mean) / std over the finite values; NaN (and a constant column) -> 0."""
    finite = np.isfinite(x)
    if not finite.any():
        return np.zeros_like(x, np.float64)
    mean, std = x[finite].mean(), x[finite].std()
    z = (x - mean) / std if std > 0 else np.zeros_like(x, np.float64)
    return np.where(finite, z, 0.0)


def curation_scores(aesthetic: np.ndarray, score_tag: np.ndarray) -> np.ndarray:
    # c = z(aesthetic) + z(score_tag)   (docs/training.md, phase 3; NaN aesthetic counts as z = 0)
    return zscore(np.asarray(aesthetic, np.float64)) + zscore(np.asarray(score_tag, np.float64))


def curate_top_k(aesthetic: np.ndarray, score_tag: np.ndarray, k: int) -> np.ndarray:
    """Row indices of the k best curation scores (ties -> lower row), in row order."""
    order = np.argsort(-curation_scores(aesthetic, score_tag), kind="stable")
    return np.sort(order[:k])


def phase_weights(dataset: LatentDataset, phase: PhaseConfig) -> np.ndarray:
    """(N,) sampling weight per row: QE-3 rows × oversample_q3; rows outside the curated top-K get 0."""
    weights = np.where(dataset.quality == dataset.num_tiers - 1, phase.oversample_q3, 1.0)
    if phase.curate_top_k > 0:
        keep = np.zeros(len(dataset), bool)
        keep[curate_top_k(dataset.aesthetic, dataset.score_tag, phase.curate_top_k)] = True
        weights = np.where(keep, weights, 0.0)
    return weights


# ----------------------------------------------------------------------------
# Batch sampler
# ----------------------------------------------------------------------------

class BucketBatchSampler(torch.utils.data.Sampler):
    """This rank's batches (lists of row indices, one bucket each): epoch `epoch` from batch `start`, then on."""

    def __init__(self, bucket: np.ndarray, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1,
                 weights: np.ndarray | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in 0..world_size-1, got rank {rank} of {world_size}")
        self.bucket = np.asarray(bucket)
        self.weights = np.ones(len(self.bucket)) if weights is None else np.asarray(weights, np.float64)
        if self.weights.shape != self.bucket.shape or (self.weights < 0).any() or not np.isfinite(self.weights).all():
            raise ValueError(f"weights must be {len(self.bucket)} finite values >= 0")
        if not (self.weights > 0).any():
            raise ValueError("every sampling weight is 0: no row to train on")
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.epoch, self.start = 0, 0
        self._cached: dict[int, list[np.ndarray]] = {}  # the last two epochs' batches (built once each)

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        """All ranks' batches of `epoch`, a pure function of (seed, epoch, weights, bucket, batch_size)."""
        if epoch not in self._cached:
            self._cached = {e: b for e, b in self._cached.items() if e == epoch - 1}
            self._cached[epoch] = self._make_epoch(epoch)
        return self._cached[epoch]

    def _make_epoch(self, epoch: int) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, epoch])
        whole = np.floor(self.weights)
        counts = (whole + (rng.random(len(self.weights)) < self.weights - whole)).astype(np.int64)  # E[count] = w
        rows = np.repeat(np.arange(len(self.weights)), counts)
        batches = []
        for b in np.unique(self.bucket[rows]):
            members = rng.permutation(rows[self.bucket[rows] == b])
            batches += [members[i:i + self.batch_size] for i in range(0, len(members), self.batch_size)]
        batches = [batches[i] for i in rng.permutation(len(batches))]
        pad = -len(batches) % self.world_size  # every rank gets the same number of batches
        return batches + batches[:pad]

    def rank_batches(self, epoch: int) -> list[np.ndarray]:
        return self.epoch_batches(epoch)[self.rank::self.world_size]

    def set_position(self, epoch: int, start: int) -> None:
        self.epoch, self.start = epoch, start

    def __iter__(self):
        """Endless: epoch `epoch` from batch `start`, then the following epochs from their first batch."""
        epoch, start = self.epoch, self.start
        while True:
            batches = self.rank_batches(epoch)
            if not batches:
                raise ValueError(f"epoch {epoch} has no batch: the sampling weights select no row")
            for batch in batches[start:]:
                yield batch.tolist()
            epoch, start = epoch + 1, 0


# ----------------------------------------------------------------------------
# Tag augmentations (vectorised over the batch)
# ----------------------------------------------------------------------------

def shuffle_tags(tag_ids: torch.Tensor, keep_tokens: int, generator: torch.Generator) -> torch.Tensor:
    """Shuffle each row's tags after [BOS] + the first keep_tokens tags; [EOS] and padding stay put."""
    B, L = tag_ids.shape
    pos = torch.arange(L).expand(B, L)                                           # (B, L)
    eos = (tag_ids == EOS).int().argmax(dim=1, keepdim=True)                     # (B, 1)
    first = 1 + keep_tokens
    movable = (pos >= first) & (pos < eos)
    # sort key: fixed positions keep key = position; movable ones get a random key inside [first, eos)
    span = (eos - first).clamp(min=0).float()
    key = torch.where(movable, first + torch.rand(B, L, generator=generator) * span, pos.float())
    return tag_ids.gather(1, key.argsort(dim=1, stable=True))


def drop_random_tags(tag_ids: torch.Tensor, p: float, keep_tokens: int, generator: torch.Generator) -> torch.Tensor:
    """Drop each tag after the first keep_tokens with probability p; the rest close up, [PAD] fills the end."""
    B, L = tag_ids.shape
    pos = torch.arange(L).expand(B, L)
    eos = (tag_ids == EOS).int().argmax(dim=1, keepdim=True)
    droppable = (pos >= 1 + keep_tokens) & (pos < eos)
    dropped = droppable & (torch.rand(B, L, generator=generator) < p)
    order = torch.where(dropped, pos + L, pos).argsort(dim=1, stable=True)     # kept first, in order
    out = tag_ids.gather(1, order)
    n_kept = L - dropped.sum(dim=1, keepdim=True)
    return torch.where(pos < n_kept, out, torch.full_like(out, PAD))


# ----------------------------------------------------------------------------
# Loader
# ----------------------------------------------------------------------------

class LatentLoader:
    """Endless stream of batches over epochs; `state_dict()` is the position after the last batch handed out."""

    def __init__(self, dataset: LatentDataset, sampler: BucketBatchSampler, workers: int = 0,
                 augment: LatentConfig | None = None):
        self.dataset, self.sampler, self.workers = dataset, sampler, workers
        self.augment = augment or LatentConfig()
        self.epoch, self.position = 0, 0  # batches of this epoch already handed to the trainer

    def batches_per_epoch(self) -> int:
        return len(self.sampler.rank_batches(self.epoch))

    def _augment(self, batch: dict) -> dict:
        cfg = self.augment
        if not cfg.tag_shuffle and cfg.tag_dropout <= 0:
            return batch
        seed = np.random.SeedSequence([self.sampler.seed, self.epoch, self.sampler.rank, self.position]).generate_state(1)[0]
        g = torch.Generator().manual_seed(int(seed))
        tags = batch["tag_ids"]
        if cfg.tag_dropout > 0:
            tags = drop_random_tags(tags, cfg.tag_dropout, cfg.keep_tokens, g)
        if cfg.tag_shuffle:
            tags = shuffle_tags(tags, cfg.keep_tokens, g)
        return dict(batch, tag_ids=tags)

    def __iter__(self):
        """One DataLoader (and one set of workers) for the whole run; the sampler runs on across epochs."""
        self.sampler.set_position(self.epoch, self.position)
        loader = torch.utils.data.DataLoader(
            self.dataset, batch_sampler=self.sampler, num_workers=self.workers, collate_fn=batch_is_ready,
            pin_memory=torch.cuda.is_available())
        for batch in loader:
            batch = self._augment(batch)
            self.position += 1
            if self.position == len(self.sampler.rank_batches(self.epoch)):
                self.epoch, self.position = self.epoch + 1, 0
            yield batch

    def state_dict(self) -> dict:
        s = self.sampler
        return {"epoch": self.epoch, "position": self.position, "seed": s.seed, "world_size": s.world_size,
                "batch_size": s.batch_size, "num_rows": len(s.bucket)}

    def load_state_dict(self, state: dict) -> None:
        """Resume at the saved position; the run must use the same data, batch size, seed and number of ranks."""
        s = self.sampler
        now = {"seed": s.seed, "world_size": s.world_size, "batch_size": s.batch_size, "num_rows": len(s.bucket)}
        differ = {k: (state.get(k), v) for k, v in now.items() if state.get(k) != v}
        if differ:
            raise ValueError(f"cannot resume the data position: saved vs now {differ}; resume with the same "
                             f"dataset, micro-batch, seed and number of ranks")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])


def make_loader(root: str | Path, cfg: Config, phase: PhaseConfig, rank: int = 0, world_size: int = 1,
                split: str = "train", seed: int | None = None) -> LatentLoader:
    """The trainer's loader: micro-batches of cfg.train.micro_batch rows for this rank, with the phase's weights."""
    m = cfg.model
    dataset = LatentDataset(root, split, m.max_tags, m.num_style_experts, m.num_quality_tiers)
    if dataset.truncated:
        print(f"loader: {dataset.truncated} row(s) have more than model.max_tags={cfg.model.max_tags} tag ids; "
              f"their rarest tags are dropped")
    sampler = BucketBatchSampler(dataset.bucket, cfg.train.micro_batch, cfg.train.seed if seed is None else seed,
                                 rank, world_size, phase_weights(dataset, phase))
    return LatentLoader(dataset, sampler, cfg.train.workers, cfg.latents)


__all__ = ["BucketBatchSampler", "LatentDataset", "LatentLoader", "curate_top_k",
           "curation_scores", "drop_random_tags", "make_loader", "phase_weights", "shuffle_tags", "zscore"]
