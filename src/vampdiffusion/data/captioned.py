"""A plain captioned folder, the convention of the trainers users know: `DIR/**/<name>.<ext>` beside
`<name>.txt` (the tags: comma-separated, or space-separated when there is no comma; Danbooru names, spaces
allowed for underscores) and an optional `<name>.json` (score, rating, created_at, aesthetic).

It is both the posts and the images of a prepare. A post's id is a fixed hash of the image's path relative to
DIR, so it is the same on every run. Every tag counts as general (a caption carries no categories). Without
a created_at the image file's modification year is the post's year; without a score the post has none (stage 2
and the score-based quality tier then say so and fall back, data/prepare.py).

An image or caption that is a link resolving outside DIR is skipped (outside_folder) and so is an image whose
caption cannot be read (unreadable_caption): records counted in the bad input. The sidecar is optional
metadata: one that is not a JSON object (or a link outside DIR) is ignored, the image kept, and it is counted
as a problem of the folder (malformed_caption_json, `problems`), not as a removed record.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from pathlib import Path
from typing import Iterator

from vampdiffusion.data.danbooru import Post, parse_post
from vampdiffusion.data.images import IMAGE_EXTS, ImageRef, SourceProblems, is_regular_file
from vampdiffusion.data.vocab import normalize_tag

SIDECAR_FIELDS = ("score", "rating", "created_at", "aesthetic")


def caption_id(relative: str) -> int:
    """A positive 62-bit id from the image's path relative to the folder (stable across runs and machines)."""
    return int.from_bytes(hashlib.sha256(relative.encode("utf-8")).digest()[:8], "big") >> 2 or 1


def caption_tags(text: str) -> list[str]:
    """'1girl, long hair, red eyes' -> ['1girl', 'long_hair', 'red_eyes']; no comma: whitespace separates tags."""
    parts = text.split(",") if "," in text else text.split()
    return list(dict.fromkeys(t for t in (normalize_tag(p) for p in parts) if t))


def captioned_images(root: Path) -> Iterator[tuple[Path, Path]]:
    """(image, caption) of every image under root that has a <name>.txt beside it, in path order."""
    for image in sorted(root.rglob("*")):
        if image.suffix.lower().lstrip(".") in IMAGE_EXTS and is_regular_file(image):
            caption = image.with_suffix(".txt")
            if is_regular_file(caption):
                yield image, caption


def inside(root: Path, path: Path) -> bool:
    """True when the path, links followed, is under root (root itself resolved)."""
    try:
        return path.resolve().is_relative_to(root)
    except (OSError, RuntimeError):  # RuntimeError: a link loop
        return False


def _sidecar(root: Path, image: Path, problems: SourceProblems) -> dict:
    """The sidecar's fields; {} when there is none, and when it is unusable (counted, named in a warning)."""
    path = image.with_suffix(".json")
    if not path.exists() and not path.is_symlink():
        return {}
    try:
        d = json.loads(path.read_text(encoding="utf-8")) if inside(root, path) else None
    except (OSError, UnicodeDecodeError, ValueError):   # ValueError: malformed JSON, a number too long
        d = None
    if not isinstance(d, dict):   # the caption still counts; the metadata does not
        problems.add("malformed_caption_json", path, f"{path}: not a JSON object inside the captioned folder; the "
                     "image is kept without its score, rating, created_at and aesthetic: fix or remove the file")
        return {}
    return {k: d[k] for k in SIDECAR_FIELDS if k in d}


def caption_record(root: Path, image: Path, caption: Path, bad: Counter,
                   problems: SourceProblems) -> tuple[dict, dict] | None:
    """(the post of one captioned image as a Danbooru-shaped record, its sidecar's fields); None when the image
    or its caption is a link outside the folder, or the caption cannot be read (counted in `bad`)."""
    if not (inside(root, image) and inside(root, caption)):
        bad["outside_folder"] += 1
        return None
    try:
        tags = caption_tags(caption.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        bad["unreadable_caption"] += 1
        return None
    meta = _sidecar(root, image, problems)
    year = time.gmtime(image.stat().st_mtime).tm_year
    return {"id": caption_id(image.relative_to(root).as_posix()), "file_ext": image.suffix.lower().lstrip("."),
            "created_at": meta.get("created_at", f"{year:04d}-01-01T00:00:00"), "tag_string_general": " ".join(tags),
            "score": meta.get("score", 0), "rating": meta.get("rating"), "aesthetic": meta.get("aesthetic")}, meta


class CaptionedFolder:
    """The posts and the image source of one captioned folder."""

    layout = "captioned folder **/<name>.<ext> + <name>.txt [+ <name>.json]"

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.problems = SourceProblems()
        self._files: dict[int, Path] = {}

    def posts(self, bad: Counter) -> Iterator[Post]:
        """Its posts; `has_score` is False for a post whose sidecar gives no score."""
        for image, caption in captioned_images(self.root):
            found = caption_record(self.root, image, caption, bad, self.problems)
            if found is None:
                continue
            record, meta = found
            post = parse_post(record)
            if isinstance(post, str):
                bad[post] += 1
                continue
            post.has_score = "score" in meta
            self._files[post.id] = image
            yield post

    def locate(self, post_id: int, ext: str) -> ImageRef | None:
        path = self._files.get(post_id)
        return ImageRef(str(path)) if path is not None else None


__all__ = ["CaptionedFolder", "caption_id", "caption_tags", "captioned_images", "inside"]
