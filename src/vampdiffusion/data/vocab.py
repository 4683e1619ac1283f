"""Tag vocabulary, tokenizer and prompt normalisation (shared by prepare, training, generation, evaluation).

Ids: [PAD]=0 [UNK]=1 [BOS]=2 [EOS]=3; real tags from 4 upward in descending frequency (ties by name),
so sorting a tag set by id sorts it by frequency. A sequence is [BOS] tags… [EOS], padded with [PAD]
to max_tags; the empty prompt (CFG's unconditional input) is [BOS][EOS].
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Iterable

from vampdiffusion.atomic import atomic_write_json

PAD, UNK, BOS, EOS = 0, 1, 2, 3
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[BOS]", "[EOS]")
VOCAB_FORMAT = "vampdiffusion-tag-vocab-1"
VOCAB_NAME = "vocab.json"   # the vocabulary file of a prepared folder, a latent dataset and a model folder

_SPACES = re.compile(r"[\s_]+")


def normalize_tag(s: str) -> str:
    """'Gothic \\(Style\\)' -> 'gothic_(style)': lower case, runs of spaces/underscores -> '_', '\\(' -> '('."""
    s = s.replace("\\(", "(").replace("\\)", ")").strip().lower()
    return _SPACES.sub("_", s).strip("_")


def parse_prompt(prompt: str) -> list[str]:
    """'1girl, Solo, gothic \\(style\\)' -> ['1girl', 'solo', 'gothic_(style)']: comma-separated tags,
    normalised, empty entries and duplicates removed (first occurrence kept)."""
    tags = (normalize_tag(t) for t in prompt.split(","))
    return list(dict.fromkeys(t for t in tags if t))


class TagVocab:
    """tags <-> ids. Build it from kept images' tag lists, save/load it as JSON."""

    def __init__(self, tags: list[str], counts: list[int] | None = None, min_count: int = 1):
        self.tokens = list(SPECIAL_TOKENS) + list(tags)               # id -> token
        self.counts = [0] * len(SPECIAL_TOKENS) + list(counts or [0] * len(tags))
        self.min_count = min_count
        self.index = {t: i for i, t in enumerate(self.tokens)}        # token -> id
        if len(self.index) != len(self.tokens):
            raise ValueError("vocabulary has duplicate tags")

    # --- building and files --------------------------------------------------

    @classmethod
    def build(cls, tag_lists: Iterable[Iterable[str]], min_count: int) -> "TagVocab":
        """Tags on >= min_count images (each counted once per image), most frequent first, ties by name."""
        c: Counter = Counter()
        for tags in tag_lists:
            c.update(set(normalize_tag(t) for t in tags) - {""})
        kept = sorted(((n, t) for t, n in c.items() if n >= min_count), key=lambda x: (-x[0], x[1]))
        return cls([t for _, t in kept], [n for n, _ in kept], min_count)

    def save(self, path: str | Path) -> None:
        atomic_write_json(path, {"format": VOCAB_FORMAT, "min_count": self.min_count,
                                 "special": list(SPECIAL_TOKENS), "tags": self.tokens[len(SPECIAL_TOKENS):],
                                 "counts": self.counts[len(SPECIAL_TOKENS):]})

    @classmethod
    def load(cls, path: str | Path) -> "TagVocab":
        p = Path(path)
        if p.is_dir():
            p = p / VOCAB_NAME
        if not p.is_file():
            raise FileNotFoundError(f"tag vocabulary {p} not found; `vamp data prepare` writes vocab.json")
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{p} is not a {VOCAB_FORMAT} file (not JSON: {e}); write it again with "
                             f"`vamp data prepare`, or copy the model's vocab.json back") from None
        if not isinstance(d, dict) or d.get("format") != VOCAB_FORMAT or tuple(d.get("special", ())) != SPECIAL_TOKENS:
            raise ValueError(f"{p} is not a {VOCAB_FORMAT} file (special tokens must be {list(SPECIAL_TOKENS)})")
        return cls(d["tags"], d.get("counts"), int(d.get("min_count", 1)))

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, tag: str) -> bool:
        return normalize_tag(tag) in self.index

    # --- tokenisation --------------------------------------------------------

    def unknown(self, tags: Iterable[str]) -> list[str]:
        """The normalised tags that are not in the vocabulary (they would become one [UNK])."""
        return [t for t in dict.fromkeys(normalize_tag(t) for t in tags) if t and t not in self.index]

    def encode(self, tags: Iterable[str], max_tags: int | None = None) -> list[int]:
        """[BOS] known tags by id (= by frequency) [UNK if any tag is unknown] [EOS], cut to max_tags (unpadded).

        Truncation drops the rarest tags first (and the [UNK] before any known tag)."""
        norm = [t for t in dict.fromkeys(normalize_tag(t) for t in tags) if t]
        ids = sorted(self.index[t] for t in norm if t in self.index and self.index[t] >= len(SPECIAL_TOKENS))
        if len(ids) < len(norm):
            ids.append(UNK)
        if max_tags is not None:
            if max_tags < 2:
                raise ValueError(f"max_tags must be >= 2 to hold [BOS] and [EOS], got {max_tags}")
            ids = ids[: max_tags - 2]
        return [BOS] + ids + [EOS]

    def encode_prompt(self, prompt: str, max_tags: int | None = None) -> list[int]:
        return self.encode(parse_prompt(prompt), max_tags)

    @staticmethod
    def pad(ids: list[int], max_tags: int) -> list[int]:
        """Right-pad with [PAD] to exactly max_tags."""
        if len(ids) > max_tags:
            raise ValueError(f"sequence of {len(ids)} ids is longer than max_tags={max_tags}; encode(..., max_tags) first")
        return list(ids) + [PAD] * (max_tags - len(ids))

    def encode_padded(self, tags: Iterable[str], max_tags: int) -> list[int]:
        return self.pad(self.encode(tags, max_tags), max_tags)

    def decode(self, ids: Iterable[int]) -> list[str]:
        """ids -> tags, special tokens dropped except [UNK]."""
        out = []
        for i in ids:
            i = int(i)
            if i in (PAD, BOS, EOS):
                continue
            if not 0 <= i < len(self.tokens):
                raise ValueError(f"tag id {i} outside the vocabulary (size {len(self.tokens)})")
            out.append(self.tokens[i])
        return out


__all__ = ["BOS", "EOS", "PAD", "SPECIAL_TOKENS", "UNK", "VOCAB_NAME", "TagVocab", "normalize_tag", "parse_prompt"]
