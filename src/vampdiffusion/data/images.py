"""Image sources: a folder tree `original/0NNN/<id>.<ext>` (NNN = id % 1000) or tar shards `data-0NNN.tar`
with members `<id>.<ext>` (Danbooru2023 layout).

An image is addressed by a path string: a file path, or `<tar path>::<member>` for a tar member.
Tar members are only ever read (by offset), never extracted, so a member name is never a path we write to.
Decoding: jpg, png, webp, gif (first frame); transparency is composited on white; the result is RGB.
"""

from __future__ import annotations

import functools
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "gif")
TAR_SEPARATOR = "::"


class ImageError(Exception):
    """An image that cannot be used; `reason` is the counted category."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True)
class ImageRef:
    """Where one post's image bytes are: a file, or a byte range inside a tar shard."""
    path: str                 # manifest path string
    file: str                 # file to open
    offset: int = 0           # tar: start of the member's data
    size: int = -1            # tar: member size; -1 = whole file


# ----------------------------------------------------------------------------
# Sources
# ----------------------------------------------------------------------------

class FolderImages:
    """`root/original/0NNN/<id>.<ext>` (or `root/0NNN/<id>.<ext>` when root is the `original` folder)."""

    def __init__(self, root: str | Path):
        root = Path(root).resolve()
        self.root = root / "original" if (root / "original").is_dir() else root

    def locate(self, post_id: int, ext: str) -> ImageRef | None:
        folder = self.root / f"{post_id % 1000:04d}"
        for e in ([ext] if ext else []) + [x for x in IMAGE_EXTS if x != ext]:
            p = folder / f"{post_id}.{e}"
            if p.is_file():
                return ImageRef(str(p), str(p))
        return None


class TarImages:
    """Every `data-*.tar` under root; members are indexed by id from their header (names are not trusted)."""

    def __init__(self, root: str | Path):
        root = Path(root).resolve()
        self.shards = sorted(root.rglob("data-*.tar"))
        self.index: dict[int, ImageRef] = {}
        self.skipped_members = 0  # members whose name is not <id>.<ext>, or not a regular file
        for shard in self.shards:
            for name, (offset, size) in _tar_members(str(shard)).items():
                stem, _, ext = Path(name).name.partition(".")
                if not stem.isdigit() or ext.lower() not in IMAGE_EXTS:
                    self.skipped_members += 1
                    continue
                self.index.setdefault(int(stem), ImageRef(f"{shard}{TAR_SEPARATOR}{name}", str(shard), offset, size))

    def locate(self, post_id: int, ext: str) -> ImageRef | None:
        return self.index.get(post_id)


def open_source(root: str | Path) -> FolderImages | TarImages:
    """A folder tree, or tar shards when the folder holds any `data-*.tar`."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} not found; pass --images DIR (original/0NNN/<id>.<ext> or data-0NNN.tar)")
    if next(root.rglob("data-*.tar"), None) is not None:
        return TarImages(root)
    return FolderImages(root)


@functools.lru_cache(maxsize=64)
def _tar_members(shard: str) -> dict[str, tuple[int, int]]:
    """member name -> (data offset, size) for regular-file members of one tar."""
    out = {}
    try:
        with tarfile.open(shard, "r:") as tf:
            for m in tf:
                if m.isreg():
                    out[m.name] = (m.offset_data, m.size)
    except (tarfile.TarError, OSError):
        pass  # a broken shard: the members before the damage are kept
    return out


# ----------------------------------------------------------------------------
# Reading and decoding
# ----------------------------------------------------------------------------

def ref_from_path(path: str) -> ImageRef:
    """The ImageRef of a manifest path string (file path or `<tar>::<member>`)."""
    if TAR_SEPARATOR in path:
        shard, member = path.split(TAR_SEPARATOR, 1)
        loc = _tar_members(shard).get(member)
        if loc is None:
            raise ImageError("missing_image", f"{member} not in {shard}")
        return ImageRef(path, shard, loc[0], loc[1])
    return ImageRef(path, path)


def read_bytes(ref: ImageRef) -> bytes:
    try:
        with open(ref.file, "rb") as f:
            if ref.size < 0:
                return f.read()
            f.seek(ref.offset)
            return f.read(ref.size)
    except FileNotFoundError:
        raise ImageError("missing_image", ref.path) from None
    except OSError as e:
        raise ImageError("unreadable_image", f"{ref.path}: {e}") from None


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


def to_rgb(im: Image.Image) -> Image.Image:
    """Decode fully (first frame of an animation) and composite transparency on white; raises ImageError."""
    try:
        im.seek(0)
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


def load_image(path: str) -> Image.Image:
    """The RGB image at a manifest path (file or `<tar>::<member>`); raises ImageError."""
    return decode(read_bytes(ref_from_path(path)))


__all__ = ["FolderImages", "ImageError", "ImageRef", "TarImages", "decode", "load_image", "open_image",
           "open_source", "read_bytes", "ref_from_path", "to_rgb"]
