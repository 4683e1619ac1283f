"""Image sources: where each post's image bytes are, and decoding them as they look.

Layouts (`open_source(root)`):
  folder tree  root/original/0NNN/<id>.<ext> or root/0NNN/<id>.<ext> (NNN = id % 1000)
  tar shards   every regular file `*.tar` under root, e.g. Danbooru2023's original/data-0NNN.tar,
               recent/data-1NNN.tar and updates/**/*-D.tar, or danbooru2024's images/NNNN.tar. A member whose
               basename is `<id>.<ext>` (ext jpg/jpeg/png/webp/gif) is the image of post <id>; when two shards
               hold the same id, the later one in path order wins (updates/ sorts after original/ and recent/).
Tar indexes (deepghs/hfutils format, one JSON per tar named like it: {"filesize", "hash", "hash_lfs",
"files": {member: {"offset", "size", "sha256"}}}) beside the tar, or in an index folder that mirrors the tars'
relative paths, replace walking the tar's headers; an index that does not parse (a member's sha256 that is not
64 hex digits included) or whose filesize is not the tar's is not used (unusable_tar_index, headers walked
instead). Without an index the headers are walked once and cached; a tar whose headers end in damage (or that
is no tar) keeps the members before it and is counted (unreadable_tar). Both are named in a warning and in
`SourceProblems.files`.

An image is addressed by an `ImageRef` (file; tar member name, data offset, size and the index's sha256) —
fields, never a separator inside a path. Tar members are only ever read by offset, never extracted; a path
that is not a regular file (a FIFO, a device) is never opened.

Decoding: jpg, png, webp, gif (first frame); EXIF orientation applied; 16-bit and float greyscale scaled to
8 bits; transparency composited on white; the result is 8-bit RGB.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import stat
import tarfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "gif")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


class ImageError(Exception):
    """An image that cannot be used; `reason` is the counted category."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True)
class ImageRef:
    """Where one post's image bytes are: a whole file, or a byte range of a tar shard."""
    file: str                 # the file to open
    member: str = ""          # tar member name ("" for a plain file)
    offset: int = 0           # tar: start of the member's data
    size: int = -1            # tar: member size; -1 = the whole file
    sha256: str = ""          # the tar index's digest of the bytes; "" = none to check

    def __str__(self) -> str:
        return f"{self.file}[{self.member}]" if self.member else self.file


def is_regular_file(path: str | Path) -> bool:
    """True for a regular file (following links); a FIFO, socket or device would block or never end."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def member_id(name: str) -> int | None:
    """The post id of a tar member named <id>.<ext> (any folders before the basename), else None."""
    stem, _, ext = Path(name).name.partition(".")
    return int(stem) if stem.isascii() and stem.isdigit() and ext.lower() in IMAGE_EXTS else None


class SourceProblems(dict):
    """Problems of an image source that are no post's: reason -> count, and `files`: reason -> the files."""

    warn_limit = 5            # warning lines per reason; the rest are counted and listed in `files`

    def __init__(self):
        super().__init__()
        self.files: dict[str, list[str]] = {}

    def add(self, reason: str, path: Path, message: str) -> None:
        """Count the problem under its reason, name its file, and say it (a line naming the file) as a warning."""
        self[reason] = self.get(reason, 0) + 1
        self.files.setdefault(reason, []).append(str(path))
        if self[reason] <= self.warn_limit:
            warnings.warn(message)
        elif self[reason] == self.warn_limit + 1:
            warnings.warn(f"more {reason} problems: counted, and their files listed in report.json (image_sources)")


# ----------------------------------------------------------------------------
# Tar members: from an index file, or from the headers (cached)
# ----------------------------------------------------------------------------

@dataclass
class TarMembers:
    """The regular-file members of one tar: names, data offsets, sizes, sha256 (hex, "" when unknown)."""
    names: list[str]
    offsets: list[int]
    sizes: list[int]
    sha256: list[str]
    source: str               # "index" | "headers"
    error: str = ""           # headers: why the walk stopped before the tar's end ("" when it did not)

    def compact(self) -> "PackedMembers":
        """The same members in numpy arrays: ~50 bytes a member instead of ~400 as Python objects."""
        known = np.array([len(h) == 64 for h in self.sha256], bool)
        digests = np.zeros((len(self.names), 32), np.uint8)
        for k in np.flatnonzero(known):
            digests[k] = np.frombuffer(bytes.fromhex(self.sha256[k]), np.uint8)
        return PackedMembers(np.array([n.encode("utf-8", "surrogateescape") for n in self.names], dtype=bytes),
                             np.asarray(self.offsets, np.int64), np.asarray(self.sizes, np.int64), digests, known,
                             self.source)


@dataclass
class PackedMembers:
    """TarMembers packed for the index of a whole release (millions of members)."""
    names: np.ndarray         # (n,) bytes
    offsets: np.ndarray       # (n,) int64
    sizes: np.ndarray         # (n,) int64
    sha256: np.ndarray        # (n, 32) uint8 raw digests
    known: np.ndarray         # (n,) bool: the index gave the member's digest
    source: str

    def ref(self, tar: Path, k: int) -> "ImageRef":
        return ImageRef(str(tar), self.names[k].decode("utf-8", "surrogateescape"), int(self.offsets[k]),
                        int(self.sizes[k]), self.sha256[k].tobytes().hex() if self.known[k] else "")


def read_index(path: Path, tar_size: int) -> TarMembers:
    """A deepghs/hfutils tar index; ValueError when it is not one, or belongs to a tar of another size."""
    try:
        d = json.loads(path.read_text())
        size = int(d["filesize"])
        rows = [(str(n), int(f["offset"]), int(f["size"]), _digest(f.get("sha256", ""))) for n, f in d["files"].items()]
    except (OSError, KeyError, TypeError, AttributeError, ValueError) as e:  # ValueError: JSON, int(), a digest
        raise ValueError(f"{path} is not a tar index ({type(e).__name__}: {e})") from None
    if size != tar_size:
        raise ValueError(f"{path} describes a tar of {size} bytes, the tar has {tar_size}")
    names, offsets, sizes, digests = (list(c) for c in zip(*rows)) if rows else ([], [], [], [])
    return TarMembers(names, offsets, sizes, digests, "index")


def _digest(value) -> str:
    """An index member's sha256: 64 hex digits, or "" for none; ValueError for anything else."""
    if value in ("", None):
        return ""
    if not isinstance(value, str) or not _SHA256.fullmatch(value):
        raise ValueError(f"sha256 {str(value)[:80]!r} is not 64 hexadecimal digits")
    return value.lower()


def walk_headers(tar: Path) -> TarMembers:
    """Every regular member's data offset and size; a broken shard keeps the members before the damage, and
    `error` says what stopped the walk."""
    m = TarMembers([], [], [], [], "headers")
    try:
        with tarfile.open(tar, "r:") as tf:
            for info in tf:
                if info.isreg():
                    m.names.append(info.name)
                    m.offsets.append(info.offset_data)
                    m.sizes.append(info.size)
                    m.sha256.append("")
    except (tarfile.TarError, OSError) as e:
        m.error = f"{type(e).__name__}: {e}"
    return m


def _header_cache(tar: Path, cache_dir: Path | None) -> Path | None:
    if cache_dir is None:
        return None
    key = hashlib.sha256(str(tar.resolve()).encode()).hexdigest()[:24]
    return cache_dir / f"{tar.stem}-{key}.json"


def _cached_headers(tar: Path, cache: Path | None, st: os.stat_result) -> TarMembers | None:
    """Walked headers saved by an earlier run, while the tar is unchanged (size and mtime)."""
    if cache is None or not cache.is_file():
        return None
    try:
        d = json.loads(cache.read_text())
        if d["filesize"] != st.st_size or d["mtime_ns"] != st.st_mtime_ns:
            return None
        return TarMembers(d["names"], d["offsets"], d["sizes"], [""] * len(d["names"]), "headers", str(d.get("error", "")))
    except (OSError, KeyError, TypeError, json.JSONDecodeError):
        return None


def tar_members(tar: Path, index: Path | None, cache_dir: Path | None, problems: SourceProblems) -> TarMembers:
    """The members of `tar`: from its index when one is there and fits, else its headers (walked once, cached).
    An unusable index (unusable_tar_index) and a tar whose headers end in damage (unreadable_tar) are counted
    in `problems`, each named in a warning."""
    from vampdiffusion.atomic import atomic_write_json
    st = os.stat(tar)
    if index is not None and is_regular_file(index):
        try:
            return read_index(index, st.st_size)
        except ValueError as e:
            problems.add("unusable_tar_index", index, f"{e}; the index is not used, the headers of {tar} are walked")
    cache = _header_cache(tar, cache_dir)
    found = _cached_headers(tar, cache, st)
    if found is None:
        found = walk_headers(tar)
        if cache is not None:
            atomic_write_json(cache, {"filesize": st.st_size, "mtime_ns": st.st_mtime_ns, "names": found.names,
                                      "offsets": found.offsets, "sizes": found.sizes, "error": found.error})
    if found.error:
        problems.add("unreadable_tar", tar, f"{tar}: unreadable tar data after {len(found.names):,} members "
                     f"({found.error}); images past it count as missing_image: replace the shard")
    return found


# ----------------------------------------------------------------------------
# Sources
# ----------------------------------------------------------------------------

class FolderImages:
    """`root/original/0NNN/<id>.<ext>` (or `root/0NNN/<id>.<ext>` when root is the `original` folder)."""

    layout = "folder tree original/0NNN/<id>.<ext>"

    def __init__(self, root: str | Path):
        root = Path(root).resolve()
        self.root = root / "original" if (root / "original").is_dir() else root
        self.problems = SourceProblems()

    def locate(self, post_id: int, ext: str) -> ImageRef | None:
        folder = self.root / f"{post_id % 1000:04d}"
        for e in ([ext] if ext else []) + [x for x in IMAGE_EXTS if x != ext]:
            p = folder / f"{post_id}.{e}"
            if is_regular_file(p):
                return ImageRef(str(p))
        return None


class TarImages:
    """Every regular `*.tar` under root; members indexed by the id in their basename (names are never paths)."""

    layout = "tar shards **/*.tar with members <id>.<ext>"

    def __init__(self, root: str | Path, index_dir: str | Path | None = None, cache_dir: str | Path | None = None):
        self.root = Path(root).resolve()
        self.shards = sorted(p for p in self.root.rglob("*.tar") if is_regular_file(p))
        self.problems = SourceProblems()
        self.members: list[PackedMembers] = []
        ids, where = [], []                                             # per shard: numpy, never Python ints
        for s, tar in enumerate(self.shards):
            m = tar_members(tar, self._index_path(tar, index_dir), Path(cache_dir) if cache_dir else None, self.problems)
            self.members.append(m.compact())
            found = [(k, pid) for k, name in enumerate(m.names) if (pid := member_id(name)) is not None]
            skipped = len(m.names) - len(found)
            if skipped:
                self.problems["skipped_members"] = self.problems.get("skipped_members", 0) + skipped
            k, pid = np.asarray(found, np.int64).reshape(-1, 2).T
            ids.append(pid)
            where.append(np.stack([np.full(len(k), s, np.int32), k.astype(np.int32)], axis=1))
        ids_all = np.concatenate(ids) if ids else np.zeros(0, np.int64)
        order = np.argsort(ids_all, kind="stable")                      # equal ids: shard order kept
        self.ids = ids_all[order]
        self.where = (np.concatenate(where) if where else np.zeros((0, 2), np.int32))[order]  # shard, member number

    def _index_path(self, tar: Path, index_dir: str | Path | None) -> Path | None:
        """The tar's index in the index folder (mirroring the tars' relative paths), else beside the tar."""
        if index_dir is not None:
            mirrored = Path(index_dir) / tar.relative_to(self.root).with_suffix(".json")
            if is_regular_file(mirrored):
                return mirrored
        return tar.with_suffix(".json")

    @property
    def skipped_members(self) -> int:
        return self.problems.get("skipped_members", 0)

    def locate(self, post_id: int, ext: str) -> ImageRef | None:
        hi = int(np.searchsorted(self.ids, post_id, side="right"))
        if hi == 0 or self.ids[hi - 1] != post_id:
            return None
        s, k = (int(v) for v in self.where[hi - 1])                     # the last shard holding the id
        return self.members[s].ref(self.shards[s], k)


LAYOUTS = (FolderImages.layout, TarImages.layout)


class ImageSources:
    """Several image folders read as one (Danbooru2023 and Danbooru2024, say). A post whose image is in more
    than one is taken from the last folder given; `counts` is how many posts each folder supplied."""

    def __init__(self, sources: list):
        self.sources = sources
        self.counts = [0] * len(sources)

    @property
    def layout(self) -> str:
        return " + ".join(s.layout for s in self.sources)

    @property
    def problems(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.sources:
            for k, v in s.problems.items():
                out[k] = out.get(k, 0) + v
        return out

    @property
    def problem_files(self) -> dict[str, list[str]]:
        """reason -> the files of every source that the problem names."""
        out: dict[str, list[str]] = {}
        for s in self.sources:
            for k, files in getattr(s.problems, "files", {}).items():
                out.setdefault(k, []).extend(files)
        return out

    def locate(self, post_id: int, ext: str) -> ImageRef | None:
        for i in range(len(self.sources) - 1, -1, -1):
            ref = self.sources[i].locate(post_id, ext)
            if ref is not None:
                self.counts[i] += 1
                return ref
        return None


def open_sources(roots: list, index_dir: str | Path | None = None, cache_dir: str | Path | None = None) -> ImageSources:
    """`open_source` of every root, read as one."""
    return ImageSources([open_source(r, index_dir, cache_dir) for r in roots])


def open_source(root: str | Path, index_dir: str | Path | None = None,
                cache_dir: str | Path | None = None) -> FolderImages | TarImages:
    """Tar shards when the folder holds any regular `*.tar`, else a folder tree."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} not found; pass --images DIR (one of: {'; '.join(LAYOUTS)})")
    if any(is_regular_file(p) for p in root.rglob("*.tar")):
        return TarImages(root, index_dir, cache_dir)
    return FolderImages(root)


# ----------------------------------------------------------------------------
# Reading and decoding
# ----------------------------------------------------------------------------

def read_bytes(ref: ImageRef) -> bytes:
    """The image's bytes; ImageError when the file is missing, not a regular file, short, or not what the index says."""
    try:
        if not stat.S_ISREG(os.stat(ref.file).st_mode):
            raise ImageError("not_a_file", f"{ref.file} is not a regular file")
        with open(ref.file, "rb") as f:
            if ref.size < 0:
                return f.read()
            f.seek(ref.offset)
            data = f.read(ref.size)
    except FileNotFoundError:
        raise ImageError("missing_image", str(ref)) from None
    except OSError as e:
        raise ImageError("unreadable_image", f"{ref}: {e}") from None
    if len(data) != ref.size:
        raise ImageError("corrupt_image", f"{ref}: {len(data)} of {ref.size} bytes (truncated shard)")
    if ref.sha256 and hashlib.sha256(data).hexdigest() != ref.sha256.lower():
        raise ImageError("corrupt_image", f"{ref}: sha256 differs from the tar index")
    return data


def open_image(data: bytes) -> Image.Image:
    """Open (header only) or raise ImageError."""
    if not data:
        raise ImageError("empty_image")
    try:
        im = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageError("corrupt_image", str(e)) from None
    except Image.DecompressionBombError as e:
        raise ImageError("too_large", str(e)) from None
    if im.width <= 0 or im.height <= 0:
        raise ImageError("empty_image", "zero-sized image")
    return im


def to_8bit(im: Image.Image) -> Image.Image:
    """16-bit and 32-bit integer or float greyscale -> 8-bit "L" as it looks: 16-bit values >> 8, float in
    [0, 1] × 255; a range the mode cannot hold is an unsupported image, never a white or black one."""
    if im.mode not in ("I", "F") and not im.mode.startswith("I;16"):
        return im
    a = np.asarray(im).astype(np.float64)
    if not np.isfinite(a).all() or a.min() < 0:
        raise ImageError("unsupported_image", f"mode {im.mode} with values outside the displayable range")
    top = a.max()
    if im.mode == "F" and top <= 1.0:
        a = a * 255.0
    elif im.mode.startswith("I;16") or (im.mode == "I" and 255 < top <= 65535):
        a = a / 257.0                                        # 65535 -> 255
    elif top > 255:
        raise ImageError("unsupported_image", f"mode {im.mode} with values up to {top:g}")
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")


def to_rgb(im: Image.Image) -> Image.Image:
    """Decode fully (first frame of an animation), apply the EXIF orientation, scale high bit depths to 8 bits,
    composite transparency on white; raises ImageError."""
    try:
        im.seek(0)
        im = to_8bit(ImageOps.exif_transpose(im))
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            rgba = im.convert("RGBA")
            out = Image.new("RGB", rgba.size, (255, 255, 255))
            out.paste(rgba, mask=rgba.getchannel("A"))
            return out
        return im.convert("RGB")
    except (OSError, SyntaxError, ValueError, EOFError) as e:  # truncated or broken data
        raise ImageError("corrupt_image", str(e)) from None
    except Image.DecompressionBombError as e:
        raise ImageError("too_large", str(e)) from None


def decode(data: bytes) -> Image.Image:
    """Bytes -> RGB image, or ImageError. Decoders can raise other types on hostile data (struct.error,
    IndexError, ...): any exception while decoding is a corrupt image, never a crashed run."""
    try:
        return to_rgb(open_image(data))
    except ImageError:
        raise
    except Exception as e:  # noqa: BLE001 - see the docstring
        raise ImageError("corrupt_image", f"{type(e).__name__}: {e}") from None


def load_image(ref: ImageRef | str | Path) -> Image.Image:
    """The RGB image of a reference (a path is a whole file); raises ImageError."""
    return decode(read_bytes(ref if isinstance(ref, ImageRef) else ImageRef(str(ref))))


__all__ = ["FolderImages", "IMAGE_EXTS", "ImageError", "ImageRef", "ImageSources", "LAYOUTS", "SourceProblems", "TarImages", "TarMembers", "decode",
           "is_regular_file", "load_image", "member_id", "open_image", "open_source", "open_sources", "read_bytes", "read_index",
           "tar_members", "to_8bit", "to_rgb", "walk_headers"]
