"""Posts files: JSON lines, a JSON array or parquet, optionally gzip- or zstd-compressed, and the SQLite of the
metadata database (metadata_db.py) — streamed record by record, never loaded whole.

Text: UTF-8, with or without a byte-order mark; JSON lines may end in LF, CRLF or CR alone.
Parquet: the schema is read first and known column aliases of other releases (COLUMN_ALIASES: `width` for
`image_width`, …) are mapped to the Danbooru API names; the mapping used is reported. Timestamp columns become
epoch seconds. Only the fields the record parser reads are loaded, 64k rows at a time.

Damage: a truncated or corrupt gzip/zstd stream (a zstd frame cut short included) is counted once
(corrupt_posts_file, with a warning) and every record decoded before the damage is kept. In a JSON array
a malformed element is counted once (malformed_json) and reading resumes at the next object at the
array's top level, found by _Resync, which tracks strings and brackets from the element's start: damage
that spares quotes, backslashes and brackets costs exactly the damaged record (none, between records).
Damage to those is repaired towards the side of stopping too early; a boundary found after such a repair
must be proven by a record that decodes there (an object with an id and a created_at, followed by the
next one or the array's end), so a record right after the damage that lacks those, or is damaged too, is
counted in the same malformed_json; a boundary taken too early costs an extra count. In property tests
of single-byte damage no other record was lost.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import warnings
import zlib
from collections import Counter
from pathlib import Path
from typing import Any, BinaryIO, Iterator, TextIO

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
PARQUET_MAGIC = b"PAR1"
CHUNK_CHARS = 1 << 20            # JSON-array reader: characters read at a time
MAX_RECORD_CHARS = 64 << 20      # JSON-array reader: a single record larger than this is malformed
MAX_OPEN_BRACKETS = 4096         # JSON-array resynchronisation: deeper nesting is not tracked
ZSTD_READ_BYTES = 1 << 16        # compressed bytes fed to the zstd decompressor at a time
PARQUET_BATCH_ROWS = 65536
# a Danbooru API field -> the names other releases give the same column (read when the API name is absent)
COLUMN_ALIASES = {"image_width": ("width",), "image_height": ("height",), "file_ext": ("ext", "format"),
                  "created_at": ("date", "created"), "aesthetic": ("aesthetic_score", "aesthetic_shadow"),
                  "is_deleted": ("deleted",), "is_banned": ("banned",)}


# ----------------------------------------------------------------------------

def _open_binary(path: Path, magic: bytes) -> BinaryIO:
    """The decompressed byte stream of a posts file (gzip / zstd detected from the magic bytes)."""
    if magic[:2] == GZIP_MAGIC:
        return gzip.open(path, "rb")  # type: ignore[return-value]
    if magic == ZSTD_MAGIC:
        return _ZstdFrames(open(path, "rb"))  # type: ignore[return-value]
    return open(path, "rb")


class _ZstdFrames(io.RawIOBase):
    """The decompressed bytes of every zstd frame of a file, in order.

    zstandard's stream_reader stops quietly where its input stops, so a file cut inside a frame would read
    as a shorter, complete one; here the input ending inside a frame raises EOFError."""

    def __init__(self, f: BinaryIO):
        import zstandard
        self.f, self.dctx, self.zstd_error = f, zstandard.ZstdDecompressor(), zstandard.ZstdError
        self.frame = self.dctx.decompressobj()
        self.out, self.at, self.error = b"", 0, None

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        while self.at == len(self.out):
            if self.error is not None:  # raised once what was decoded before it has been read
                raise self.error
            data = self.f.read(ZSTD_READ_BYTES)
            if not data:
                if not self.frame.eof:
                    raise EOFError("the zstd stream ends inside a frame")
                return 0
            self.out, self.at = self._decompress(data), 0
        n = min(len(b), len(self.out) - self.at)
        b[:n] = self.out[self.at:self.at + n]
        self.at += n
        return n

    def _decompress(self, data: bytes) -> bytes:
        parts = []
        while data:
            if self.frame.eof:  # a file may hold several frames (pzstd, cat a.zst b.zst)
                self.frame = self.dctx.decompressobj()
            try:
                parts.append(self.frame.decompress(data))
            except self.zstd_error as e:
                self.error = OSError(f"corrupt zstd data: {e}")
                break
            data = self.frame.unused_data if self.frame.eof else b""
        return b"".join(parts)

    def close(self) -> None:
        self.f.close()
        super().close()


class _UntilDamage(io.RawIOBase):
    """A decompressed stream that ends cleanly at its first damage, kept in `error`.

    Reads go one decompressed piece at a time (read1): a read that raises would take the text it had
    gathered with it, and the records decoded before the damage must all be delivered."""

    def __init__(self, inner: BinaryIO):
        self.inner, self.error = inner, None
        self.read_piece = getattr(inner, "read1", inner.read)

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        if self.error is not None:
            return 0
        try:
            data = self.read_piece(len(b))
        except (OSError, EOFError, zlib.error) as e:
            self.error = e
            return 0
        b[:len(data)] = data
        return len(data)


def _iter_json_lines(text: TextIO, bad: Counter) -> Iterator[Any]:
    for line in text:
        line = line.strip().lstrip("\ufeff")  # a byte-order mark where files were concatenated
        if not line:
            continue
        try:
            yield json.loads(line)
        except (ValueError, RecursionError):
            bad["malformed_json"] += 1


_BLANKS = re.compile(r"[ \t\r\n]*")
_SEPARATORS = re.compile(r"[ \t\r\n,]*")
_SKIPPED, _END = object(), object()


class _ArrayReader:
    """Elements of a top-level JSON array, decoded one at a time from a text stream.

    Arrays nested in it or back to back after it (API pages collected into one file) are read through as
    one. A malformed element is counted and skipped (_Resync); an element merely cut by the chunk boundary
    is completed first, up to MAX_RECORD_CHARS."""

    def __init__(self, text: TextIO, bad: Counter):
        self.text, self.bad, self.dec = text, bad, json.JSONDecoder()
        self.buf, self.pos, self.eof, self.depth = "", 0, False, 0  # depth: arrays open

    def __iter__(self) -> Iterator[Any]:
        while True:
            c = self._skip(_SEPARATORS if self.depth else _BLANKS)
            if c == "":
                if self.depth:
                    self.bad["malformed_json"] += 1  # the array never closes: the file ends early
                return
            if c in "[]" and (c == "[" or self.depth):
                self.depth += 1 if c == "[" else -1
                self.pos += 1
                continue
            if self.depth == 0:  # text after the array's end: read on as if the array went on
                self.depth = 1
                if c == "{":  # a stray "]" between records (other text is counted as an element)
                    self.bad["malformed_json"] += 1
            obj = self._element()
            if obj is _END:
                return
            if obj is not _SKIPPED:
                yield obj

    def _element(self) -> Any:
        """The element at pos, pos moving past it; _SKIPPED once a malformed one is counted and skipped
        (or the first good element after it), _END when the input ends inside it."""
        obj, end = self._decode()
        if end >= 0 and not (isinstance(obj, str) and self._junk_at(end)):
            self.pos = end
            return obj
        # (a string followed by junk is no element either: a quote in place of a comma, say)
        self.bad["malformed_json"] += 1
        scan = _Resync(self.pos, nested=self.depth > 1)
        while self._scan(scan):
            if scan.sure or self.buf[self.pos] != "{":
                return _SKIPPED
            # a boundary found after repairs is proven by a record there: an object with an id and a date
            # (Danbooru2021's tag objects have an id), followed by another object or the array's end (not
            # by a key: then it was a value inside the damaged record)
            obj, end = self._decode(scan)
            if end >= 0 and isinstance(obj, dict) and "id" in obj and "created_at" in obj:
                size = end - self.pos
                if self._record_follows(size, scan):
                    self.pos += size
                    return obj
            scan.through()
        return _END

    def _decode(self, scan: _Resync | None = None) -> tuple[Any, int]:
        """(the JSON value at pos, where it ends), or (None, -1) when it does not decode. While the value
        may merely be cut by the end of the buffer, more text is read first (up to MAX_RECORD_CHARS)."""
        while True:
            try:
                return self.dec.raw_decode(self.buf, self.pos)
            except RecursionError:
                return None, -1
            except json.JSONDecodeError as e:
                cut = e.pos >= len(self.buf) - 6 or e.msg.startswith("Unterminated string")
                if not cut or len(self.buf) - self.pos > MAX_RECORD_CHARS or self._more(self.pos) < 0:
                    return None, -1
            except ValueError:  # an integer of more than 4300 digits
                return None, -1
            if scan is not None:
                scan.shift(self.pos)
            self.pos = 0

    def _junk_at(self, i: int) -> bool:
        """Whether what follows i is neither a separator, an array's end nor another element's bracket."""
        m = _NONBLANK.search(self.buf, i)
        return m is not None and self.buf[m.start()] not in ",]{["

    def _record_follows(self, size: int, scan: _Resync) -> bool:
        """Whether the object at pos, `size` long, is followed by "]" or "{" (the end of the array or the
        next record), or by "," and one of them."""
        j = self._nonblank(self.pos + size, scan)
        if j >= 0 and self.buf[j] == ",":
            j = self._nonblank(j + 1, scan)
        return j < 0 or self.buf[j] in "]{"

    def _nonblank(self, i: int, scan: _Resync) -> int:
        """The index of the first non-blank character from i, -1 at the end of the input. Text is read on
        as needed (dropping what lies before pos: i, pos and scan move with it)."""
        while True:
            m = _NONBLANK.search(self.buf, i)
            if m is not None:
                return m.start()
            dropped = self._more(self.pos)
            if dropped < 0:
                return -1
            i, self.pos = i - dropped, 0
            scan.shift(dropped)

    def _scan(self, scan: _Resync) -> bool:
        """Run `scan` to its next boundary, reading on as needed, and leave pos there; False when the input
        ends first."""
        while True:
            j = scan.run(self.buf, self.eof)
            if j >= 0 or self.eof:
                self.pos = j if j >= 0 else len(self.buf)
                return j >= 0
            dropped = self._more(scan.held_from())
            if dropped >= 0:  # (at the end of the input: once more, to settle a pending "]" or escape)
                scan.shift(dropped)

    def _skip(self, blanks: re.Pattern) -> str:
        """The next character that `blanks` does not match ("" at the end of the input); pos moves to it."""
        while True:
            self.pos = blanks.match(self.buf, self.pos).end()  # type: ignore[union-attr]
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if self._more(self.pos) < 0:
                return ""
            self.pos = 0

    def _more(self, keep: int) -> int:
        """Append a chunk to the buffer, dropping the text before `keep`: the number of characters dropped,
        or -1 at the end of the input."""
        more = "" if self.eof else self.text.read(CHUNK_CHARS)
        if not more:
            self.eof = True
            return -1
        self.buf = self.buf[keep:] + more
        return keep


_TOKEN = re.compile(r'["\\{}\[\],:]')
_IN_STRING = re.compile(r'["\\]')
_BLANK_GAP = re.compile(r"[ \t\r\n]*")
_WORD_GAP = re.compile(r"[ \t\r\n0-9A-Za-z_.+-]*")  # numbers, true, false, null
_NONBLANK = re.compile(r"[^ \t\r\n]")
_CLOSERS = re.compile(r"[}\]]")


class _Resync:
    """Finds where a malformed array element ends: at the next object of the array's top level (the `{`
    of the next record) or at the array's closing `]`.

    It follows strings and open brackets from the element's start as a JSON parser would, but never
    fails. Where nothing contradicts JSON's grammar (damage that spares quotes, backslashes and brackets:
    a stray character between two tokens, prev "?", is taken as the damage itself) it is exact and
    `sure`. Where the text contradicts the grammar, it repairs its state towards fewer open brackets: it
    closes what the contradiction shows closed, reads a misread string's text again without opening its
    brackets, closes brackets opened in what turns out to have been a string, and opens none where none
    may open. Too many open brackets would walk past the next record; too few can only stop it early,
    inside the damaged record, and _ArrayReader then proves or rejects the boundary.
    """

    def __init__(self, start: int, nested: bool):
        self.start, self.nested, self.stack, self.in_str, self.prev = start, nested, [], False, ","
        self.boundary, self.resume, self.sure = -1, start, True
        self.opened = self.closed = self.reread_end = -1  # the last string's quotes; see _misread
        self.low = self.low_at_open = 0  # fewest brackets open since the last string closed; at its opening

    def shift(self, n: int) -> None:
        """The buffer lost its first n characters."""
        self.start, self.resume, self.opened, self.closed = (x - n for x in (self.start, self.resume,
                                                                            self.opened, self.closed))
        self.reread_end = self.reread_end - n if self.reread_end >= 0 else -1

    def run(self, buf: str, eof: bool) -> int:
        """The index of the next boundary, or -1 when the text ends first (resume: where to go on)."""
        step: int | None = self.resume
        while step is not None and self.boundary < 0:
            step = self._in_string(buf, step, eof) if self.in_str else self._outside(buf, step, eof)
        if self.boundary >= 0:
            self.resume = self.boundary
        return self.boundary

    def through(self) -> None:
        """The boundary found is none (the object there does not decode): scan on through its `{`."""
        self._push("{")
        self.resume, self.boundary = self.resume + 1, -1

    def held_from(self) -> int:
        """Where the text still needed starts: the last string's, to read it again (within reason)."""
        return self.opened if 0 <= self.opened and self.resume - self.opened <= MAX_RECORD_CHARS else self.resume

    def _in_string(self, buf: str, i: int, eof: bool) -> int | None:
        m = _IN_STRING.search(buf, i)
        if m is None:
            self.resume = len(buf)
            return None
        j = m.start()
        if buf[j] == '"':
            self._string_closed(j)
            return j + 1
        if j + 1 < len(buf):
            return j + 2  # an escape: the next character belongs to the string
        self.resume = len(buf) if eof else j
        return None

    def _outside(self, buf: str, i: int, eof: bool) -> int | None:
        m = _TOKEN.search(buf, i)
        end = m.start() if m else len(buf)
        if not _BLANK_GAP.fullmatch(buf, i, end):
            if not _WORD_GAP.fullmatch(buf, i, end):
                self.prev = "?"
            elif self.prev == '"':  # a word right after a string: its closing quote opened one instead
                return self._misread(end)
            elif self.prev != "?":
                self.prev = "v"
        if m is None:
            self.resume = len(buf)
            return None
        return self._token(buf, end, eof)

    def _token(self, buf: str, j: int, eof: bool) -> int | None:
        c = buf[j]
        if self.prev == '"' and c in '"{[\\':  # none may follow a string: its closing quote opened one
            return self._misread(j)
        if c == '"':
            self._quote(buf, j)
        elif c == "\\" and j > self.start and self.reread_end < 0:
            # an escape outside a string (and not in one read again): we are in a string after all
            self._missed_string(buf)
            self._string_opened(j - 1)  # (to be read again from the escape should it not end well)
            return j
        elif c == "\\":
            self.prev = "?"
        elif c in "{[":
            return self._open(c, j)
        elif c == "]" and "[" not in self.stack:
            return self._array_end(buf, j, eof)
        elif c in "}]":
            self._close("{" if c == "}" else "[")
            self.prev = c
        elif c == ":":
            self._colon()
        else:
            self._no_value_in_opened()
            self.prev = ","
        return j + 1

    def _quote(self, buf: str, j: int) -> None:
        if self.reread_end >= 0:  # quotes in a string's text read again are its content, up to its end
            if j == self.reread_end:
                self.reread_end = -1
                self._string_opened(j)
        elif self.prev in "{[,:?":
            self._string_opened(j)
        else:  # no string may open here: it ends one that was missed
            self._missed_string(buf)
            self.opened = -1
            self._string_closed(j)

    def _open(self, c: str, j: int) -> int:
        # after a value no bracket may open, and a list at the array's top level is no record: such a
        # bracket is not trusted
        trusted = self.prev in "{[,:?" and (c == "{" or bool(self.stack) or j == self.start)
        if self.stack and self.stack[-1] == "{" and self.prev in ",{":
            # an object member starts with its key, not a bracket: the objects open here closed unseen
            self.sure = False
            while self.stack and self.stack[-1] == "{":
                self._pop_to(len(self.stack) - 1)
            trusted = c == "{" and bool(self.stack)  # an object in a list, as after a lost "}"
        if c == "{" and not self.stack and j > self.start and self.prev != ":":
            self.boundary = j  # an object at the array's top level: the next record
            return j
        self.sure = self.sure and trusted
        if trusted:
            self._push(c)
        self.prev = c
        return j + 1

    def _push(self, c: str) -> None:
        if len(self.stack) < MAX_OPEN_BRACKETS and self.reread_end < 0:  # too shallow is the safe side
            self.stack.append(c)
        self.prev = c

    def _close(self, opener: str) -> None:
        """Close the innermost open `opener` and whatever is open inside it (nothing if none is open)."""
        n = len(self.stack) - 1 - self.stack[::-1].index(opener) if opener in self.stack else len(self.stack)
        self.sure = self.sure and n == len(self.stack) - 1
        self._pop_to(n)

    def _no_value_in_opened(self) -> None:
        """At a "," or ":": one right after a bracket opened means the bracket was damage."""
        if self.prev in "{[" and self.stack and self.stack[-1] == self.prev:
            self.sure = False
            self._pop_to(len(self.stack) - 1)

    def _colon(self) -> None:
        self._no_value_in_opened()
        if not self.stack or self.stack[-1] == "[":  # only an object holds a key: the lists closed unseen
            self.sure = False
        while self.stack and self.stack[-1] == "[":
            self._pop_to(len(self.stack) - 1)
        self.prev = ":" if self.stack else "?"

    def _array_end(self, buf: str, j: int, eof: bool) -> int | None:
        """A `]` closing no list opened in the element: where an enclosing array ends. At the top level,
        only if the input ends there (else it is damage, and skipped)."""
        m = _NONBLANK.search(buf, j + 1)
        if m is None and not eof and not self.nested:
            self.resume = j
            return None
        if self.nested or m is None:
            self.boundary = j
            return j
        self.prev, self.sure = "]", False
        return j + 1

    def _misread(self, i: int) -> int:
        """The last string was not one: the quote that closed it opened a string (its own closing quote was
        lost, say). Its text is read again as outside a string, up to that quote, which then opens one.
        The quote that opened it may have closed a string instead, making the text before it a string's
        content: brackets opened since the string before it are closed (the safe side)."""
        self.sure = False
        self._pop_to(self.low_at_open)
        if self.opened < 0:  # its text is no longer held (or it had no opening quote): no second reading
            self._string_opened(self.closed)
            return i
        self.reread_end, self.prev = self.closed, "?"
        return self.opened + 1

    def _missed_string(self, buf: str) -> None:
        """We are in a string: either its opening quote was missed, and the text since the last string was
        its content, or strings have been read the wrong way round since some quote, and the last string's
        text was outside one. Brackets opened since the last string are closed again, and so are those
        its text closes (either way, too few open rather than too many)."""
        self.sure = False
        self._pop_to(self.low)
        if 0 <= self.opened < self.closed:
            for c in _CLOSERS.findall(buf, self.opened + 1, self.closed):
                self._close("{" if c == "}" else "[")

    def _string_opened(self, j: int) -> None:
        self.in_str, self.opened, self.low_at_open = True, j, self.low

    def _string_closed(self, j: int) -> None:
        self.in_str, self.prev, self.closed, self.low = False, '"', j, len(self.stack)

    def _pop_to(self, n: int) -> None:
        del self.stack[n:]
        self.low = min(self.low, n)


def parquet_columns(names: list[str]) -> tuple[list[str], dict[str, str]]:
    """(the columns to read, {column: API field} for the aliased ones) of a parquet schema."""
    from vampdiffusion.data.danbooru import POST_FIELDS
    present = set(names)
    columns = [c for c in POST_FIELDS if c in present]
    aliases = {}
    for field_name, others in COLUMN_ALIASES.items():
        found = next((o for o in others if o in present), None)
        if field_name not in present and found is not None:
            aliases[found] = field_name
            columns.append(found)
    return columns, aliases


class MissingColumns(ValueError):
    """A parquet posts file whose schema cannot give a single post; the message names the columns and the fix."""


def missing_columns(columns: list[str], aliases: dict[str, str]) -> list[str]:
    """The fields every record needs (id, created_at, a score) that none of the columns to read supplies."""
    fields = {aliases.get(c, c) for c in columns}
    need = ["id", "created_at"] + ([] if "score" in fields or {"up_score", "down_score"} <= fields else ["score"])
    return [f for f in need if f not in fields]


def check_parquet_columns(path: Path, names: list[str], columns: list[str], aliases: dict[str, str]) -> None:
    """MissingColumns naming the missing columns when the schema cannot give a single post."""
    missing = missing_columns(columns, aliases)
    if missing:
        shown = ", ".join(names[:12]) + (f", … ({len(names)} in all)" if len(names) > 12 else "")
        raise MissingColumns(f"posts file {path} lacks the column(s) {', '.join(missing)} (its columns: "
                             f"{shown or 'none'}); --posts must be Danbooru posts with at least id, created_at and "
                             f"score (or up_score and down_score), by their API names or the aliases in docs/data.md")


def _iter_parquet(path: Path, bad: Counter, notes: list[str]) -> Iterator[Any]:
    import pyarrow.parquet as pq
    pf = pq.ParquetFile(path)
    columns, aliases = parquet_columns(pf.schema_arrow.names)
    check_parquet_columns(path, pf.schema_arrow.names, columns, aliases)
    if aliases:
        notes.append(f"{path.name}: columns read as " + ", ".join(f"{a} -> {f}" for a, f in aliases.items()))
    for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=columns):
        batch = _timestamps_as_epoch(batch)
        if aliases:
            batch = batch.rename_columns([aliases.get(n, n) for n in batch.schema.names])
        yield from batch.to_pylist()


def _timestamps_as_epoch(batch: Any) -> Any:
    """Timestamp columns as epoch seconds: as datetimes, one value past year 9999 would fail the batch."""
    import pyarrow as pa
    cols = [c.cast(pa.timestamp("s", c.type.tz), safe=False).cast(pa.int64()) if pa.types.is_timestamp(c.type)
            else c for c in batch.columns]
    return pa.RecordBatch.from_arrays(cols, names=batch.schema.names)


def iter_records(path: str | Path, bad: Counter, notes: list[str] | None = None) -> Iterator[Any]:
    """Raw decoded records (whatever JSON values they are) from a posts file of any supported format; how the
    file was read (a column mapping) is appended to `notes`."""
    from vampdiffusion.data.metadata_db import SQLITE_MAGIC, iter_db_records
    path = Path(path)
    notes = [] if notes is None else notes
    if not path.is_file():
        raise FileNotFoundError(f"posts file {path} not found; pass --posts FILE (JSON lines / JSON array / parquet / "
                                f"SQLite, .gz / .zst)")
    with open(path, "rb") as f:
        magic = f.read(16)
    if magic.startswith(SQLITE_MAGIC):
        notes.append(f"{path.name}: the metadata database's SQLite tables (ratings 0-3, tag types 0-4)")
        yield from iter_db_records(path, bad, notes)
        return
    magic = magic[:4]
    if magic == PARQUET_MAGIC:
        try:
            yield from _iter_parquet(path, bad, notes)
        except MissingColumns:  # not damage: a file of something else
            raise
        except Exception as e:  # pyarrow's many error types: a damaged file ends the read, counted
            bad["corrupt_posts_file"] += 1
            warnings.warn(f"{path}: unreadable parquet data ({e}); records before it were read")
        return
    with _open_binary(path, magic) as raw:
        stream = _UntilDamage(raw)
        text = io.TextIOWrapper(io.BufferedReader(stream), encoding="utf-8-sig", errors="replace", newline="")
        head = text.read(4096)
        chained = _Chain(io.StringIO(head, newline=""), text)
        if head.lstrip()[:1] == "[":
            yield from _ArrayReader(chained, bad)
        else:
            yield from _iter_json_lines(chained, bad)
    if stream.error is not None:
        bad["corrupt_posts_file"] += 1
        warnings.warn(f"{path}: the compressed stream ends early or is corrupt ({stream.error}); "
                      "records before it were read")


class _Chain(io.TextIOBase):
    """Text stream that yields the already-peeked head, then the rest of the file."""

    def __init__(self, head: io.StringIO, tail: TextIO):
        self.head, self.tail = head, tail

    def read(self, n: int = -1) -> str:
        s = self.head.read(n)
        if n < 0:
            return s + self.tail.read()
        return s + self.tail.read(n - len(s)) if len(s) < n else s

    def __iter__(self):  # lines, ended by LF, CRLF or CR alone (the head is split the way the tail is)
        for line in self.head:
            if not line.endswith(("\n", "\r")):
                line += self.tail.readline()
            yield line
        yield from self.tail


