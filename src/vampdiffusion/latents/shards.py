"""Latent shard files, their records and checksums, and the check of a whole latent dataset.

Layout of a latent dataset folder (docs/architecture.md):

    DIR/shards/000012.npy    fp16 (n, 4, h, w), one bucket per shard, np.load(mmap_mode="r")
    DIR/shards/000012.json   the shard's record: rows, shape, bucket, sha256, encoded ids, skipped images
    DIR/shards.json          all records without the per-row lists: what the loader and `verify` read
    DIR/shards.json.sha256   the sha256 of shards.json (`sha256sum -c` format), written with it
    DIR/index.parquet        manifest columns + shard, row, latent_h, latent_w, bucket_w, bucket_h
    DIR/dataset.json         VAE backend, path, scaling factor, buckets, plan
    DIR/vocab.json           copied from the manifest's folder

A shard is finished when its record exists and the sha256 of its .npy matches the record; the .npy is
written (atomically) before its record, so a kill leaves either a finished shard or one to redo.

`verify_dataset` lists every problem of a dataset, one line each, and never raises on damaged files;
`verify_shards` takes a cache of what was already hashed (file size + mtime_ns + recorded sha256), so a
trainer that starts again on unchanged shards does not read them all again.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vampdiffusion.atomic import atomic_write, atomic_write_json, sha256_file

SHARD_DIR = "shards"
SHARDS_JSON = "shards.json"
SHARDS_SIDECAR = "shards.json.sha256"
SHARDS_JSON_KEYS = ("shard", "file", "rows", "shape", "bucket", "sha256")  # a record without its per-row lists
REENCODE = "re-run `vamp data encode` with the same --manifest and --out (it re-encodes only what is damaged)"
LATENT_DTYPE = np.float16
LATENT_CHANNELS = 4


def shard_file(root: str | Path, k: int) -> Path:
    return Path(root) / SHARD_DIR / f"{k:06d}.npy"


def record_file(root: str | Path, k: int) -> Path:
    return Path(root) / SHARD_DIR / f"{k:06d}.json"


def write_shard(root: str | Path, k: int, latents: np.ndarray, record: dict) -> dict:
    """Write latents (n, 4, h, w) fp16 as shard k, then its record with the file's sha256; returns the record."""
    if latents.dtype != LATENT_DTYPE or latents.ndim != 4 or latents.shape[1] != LATENT_CHANNELS:
        raise ValueError(f"shard {k}: expected fp16 latents (n, 4, h, w), got {latents.dtype} {latents.shape}")

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(latents))

    path = atomic_write(shard_file(root, k), write)
    record = dict(record, shard=k, file=f"{SHARD_DIR}/{path.name}", rows=int(latents.shape[0]),
                  shape=list(latents.shape), sha256=sha256_file(path))
    atomic_write_json(record_file(root, k), record)
    return record


def read_record(root: str | Path, k: int) -> dict | None:
    path = record_file(root, k)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None  # unreadable record = unfinished shard


def _open_problem(root: Path, record: dict) -> tuple[np.ndarray | None, str | None]:
    """The memory-mapped shard, or what keeps it from opening with the recorded shape and dtype."""
    path = root / record["file"]
    if not path.is_file():
        return None, f"shard {record['shard']}: {record['file']} is missing"
    try:
        array = np.load(path, mmap_mode="r")
    except Exception as e:  # numpy's header parser and mmap raise several kinds on a damaged file
        return None, f"shard {record['shard']}: {record['file']} is not a readable .npy file ({_first_line(e)})"
    if array.dtype != LATENT_DTYPE or list(array.shape) != list(record["shape"]):
        return None, (f"shard {record['shard']}: {record['file']} holds {array.dtype} {list(array.shape)}, "
                      f"the record says float16 {record['shape']}")
    return array, None


def open_shard(root: str | Path, record: dict) -> np.ndarray:
    """Memory-map one shard, checking that it exists and has the recorded shape and dtype."""
    array, problem = _open_problem(Path(root), record)
    if problem is None:
        return array
    error = ValueError if (Path(root) / record["file"]).is_file() else FileNotFoundError
    raise error(f"{problem}; re-run `vamp data encode` to re-encode it")


def shard_problem(root: str | Path, record: dict, cached: dict | None = None) -> str | None:
    """None when the shard file exists, has the recorded shape and its sha256 matches; else what is wrong.
    `cached`: the shard's file_key when an earlier check hashed this very file; then it is not hashed again."""
    root = Path(root)
    _, problem = _open_problem(root, record)
    if problem is not None:
        return problem
    if cached is not None and cached == file_key(root, record):
        return None
    digest = sha256_file(root / record["file"])
    if digest != record["sha256"]:
        return (f"shard {record['shard']}: checksum mismatch in {record['file']} (sha256 {digest[:12]}…, recorded "
                f"{record['sha256'][:12]}…)")
    return None


def file_key(root: Path, record: dict) -> dict:
    """What identifies a verified shard file without reading it: size, mtime_ns and the recorded sha256."""
    st = (root / record["file"]).stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": record["sha256"]}


def verify_shards(root: str | Path, records: list[dict], cache: dict[str, dict] | None = None
                  ) -> tuple[list[str], dict[str, dict]]:
    """(problems, verified): one line per damaged shard, and the file_key of every shard that passed,
    by file (`cache` is such a dict from an earlier call)."""
    root, cache = Path(root), cache or {}
    problems, verified = [], {}
    for r in records:
        # the key is taken before the hash: a file rewritten while it is read is hashed again next time
        key = file_key(root, r) if (root / r["file"]).is_file() else None
        problem = shard_problem(root, r, cache.get(r["file"]))
        if problem is None:
            verified[r["file"]] = key
        else:
            problems.append(problem)
    return problems, verified


# ----------------------------------------------------------------------------
# shards.json
# ----------------------------------------------------------------------------

def write_shards_json(root: str | Path, records: list[dict], num_rows: int) -> Path:
    """shards.json (the records without their per-row lists) and its sha256 sidecar.

    The old sidecar goes first: a kill in between leaves a whole shards.json (atomic) without a sidecar,
    which is read unchecked, never a new file beside the old file's checksum."""
    root = Path(root)
    (root / SHARDS_SIDECAR).unlink(missing_ok=True)
    path = atomic_write_json(root / SHARDS_JSON, {"shards": [{k: r[k] for k in SHARDS_JSON_KEYS if k in r}
                                                             for r in records], "num_rows": int(num_rows)})
    atomic_write(root / SHARDS_SIDECAR, lambda p: p.write_text(f"{sha256_file(path)}  {SHARDS_JSON}\n"))
    return path


def _first_line(e: BaseException) -> str:
    """The error's kind and first sentence: the rest of a library's message is advice meant for its own callers."""
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0].split('. ')[0] if lines else ''}"


def _sidecar_problem(root: Path) -> str | None:
    sidecar = root / SHARDS_SIDECAR
    if not sidecar.is_file():
        return None  # written before sidecars existed: read unchecked
    try:
        recorded = sidecar.read_text().split()[0]
    except (OSError, UnicodeDecodeError, IndexError):
        return f"{SHARDS_SIDECAR} is unreadable"
    digest = sha256_file(root / SHARDS_JSON)
    if digest != recorded:
        return (f"{SHARDS_JSON} does not match {SHARDS_SIDECAR} (sha256 {digest[:12]}…, recorded {recorded[:12]}…): "
                f"it changed after `vamp data encode` wrote it")
    return None


def _count(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _record_problem(r: object, i: int) -> str | None:
    """What makes the i-th entry of shards.json unusable as a shard record, or None."""
    if not isinstance(r, dict):
        return f"{SHARDS_JSON}: entry {i} is not a shard record"
    shape = r.get("shape")
    checks = (
        ("shard", _count(r.get("shard"))),
        ("rows", _count(r.get("rows"))),
        ("file", isinstance(r.get("file"), str) and not Path(r["file"]).is_absolute()
         and ".." not in Path(r["file"]).parts),
        ("shape", isinstance(shape, list) and len(shape) == 4 and all(_count(v) for v in shape)
         and shape[0] == r.get("rows") and shape[1] == LATENT_CHANNELS),
        ("sha256", isinstance(r.get("sha256"), str) and len(r["sha256"]) == 64),
    )
    bad = [k for k, ok in checks if not ok]
    if bad:
        return f"{SHARDS_JSON}: entry {i} (shard {r.get('shard')!r}) has a missing or invalid {', '.join(bad)}"
    return None


def load_shards_json(root: str | Path) -> tuple[list[dict], int | None, list[str]]:
    """(usable records, num_rows, problems) of shards.json; problems name the file or the entry."""
    root = Path(root)
    path = root / SHARDS_JSON
    if not path.is_file():
        return [], None, [f"{path} is missing: {root} is not a finished latent dataset"]
    if (problem := _sidecar_problem(root)) is not None:
        return [], None, [problem]
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        return [], None, [f"{SHARDS_JSON} is not readable JSON, truncated or damaged ({_first_line(e)})"]
    entries = doc.get("shards") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        return [], None, [f"{SHARDS_JSON} holds no list of shard records under \"shards\""]
    checked = [(r, _record_problem(r, i)) for i, r in enumerate(entries)]
    problems = [p for _, p in checked if p is not None]
    records = [r for r, p in checked if p is None]
    seen: set[int] = set()
    for r in records:
        if r["shard"] in seen:
            problems.append(f"{SHARDS_JSON} lists shard {r['shard']} twice")
        seen.add(r["shard"])
    num_rows = doc.get("num_rows")
    return records, num_rows if isinstance(num_rows, int) else None, problems


def read_shards_json(root: str | Path) -> list[dict]:
    """The shard records; a missing file is a FileNotFoundError, a damaged one a ValueError naming it."""
    records, _, problems = load_shards_json(root)
    if problems and not (Path(root) / SHARDS_JSON).is_file():
        raise FileNotFoundError(f"{problems[0]}; run (or finish) `vamp data encode --out {root}`")
    if problems:
        raise ValueError(f"{Path(root) / SHARDS_JSON}: {problems[0]}; {REENCODE}")
    return records


# ----------------------------------------------------------------------------
# index.parquet against shards.json
# ----------------------------------------------------------------------------

def read_index_rows(root: Path) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None, list[str]]:
    """(id, shard, row) columns of index.parquet, or the problem that keeps them from being read."""
    import pyarrow.parquet as pq
    path = root / "index.parquet"
    if not path.is_file():
        return None, None, None, ["index.parquet is missing"]
    try:
        table = pq.read_table(path, columns=["id", "shard", "row"])
    except Exception as e:  # pyarrow raises ArrowInvalid, OSError, KeyError … on a damaged or foreign file
        problem = f"index.parquet is not a readable parquet file with columns id, shard, row ({_first_line(e)})"
        return None, None, None, [problem]
    nulls = [c for c in ("shard", "row") if table[c].null_count]
    if nulls:
        return None, None, None, [f"index.parquet has empty values in column(s) {', '.join(nulls)}"]
    ids, shard, row = (table[c].to_numpy(zero_copy_only=False) for c in ("id", "shard", "row"))
    return ids, shard.astype(np.int64), row.astype(np.int64), []


def index_problems(root: str | Path, records: list[dict], num_rows: int | None = None) -> list[str]:
    """Index rows against the records: known shards, rows in range, each (shard, row) once, one row per latent."""
    ids, shard, row, problems = read_index_rows(Path(root))
    if problems:
        return problems
    rows_of = {r["shard"]: r["rows"] for r in records}
    if num_rows is not None and num_rows != len(shard):
        problems.append(f"index.parquet has {len(shard)} rows, {SHARDS_JSON} says num_rows {num_rows}")
    for s in sorted(set(np.unique(shard).tolist()) - set(rows_of)):
        problems.append(f"index.parquet names shard {s}, which {SHARDS_JSON} does not list")
    for s, n in sorted(rows_of.items()):
        problems += _shard_rows_problems(s, n, ids[shard == s], row[shard == s])
    return problems


def _shard_rows_problems(s: int, n: int, ids: np.ndarray, rows: np.ndarray) -> list[str]:
    """One line per kind of fault in the index rows of shard s (n latents)."""
    problems = []
    out = np.flatnonzero((rows < 0) | (rows >= n))
    if len(out):
        problems.append(f"index.parquet: {len(out)} row(s) point outside shard {s}, which has {n} rows "
                        f"(e.g. id {ids[out[0]]} -> row {rows[out[0]]})")
    values, counts = np.unique(rows, return_counts=True)
    twice = values[counts > 1]
    if len(twice):
        holders = ids[rows == twice[0]].tolist()
        problems.append(f"index.parquet: {len(twice)} row(s) of shard {s} are named more than once "
                        f"(e.g. row {twice[0]} by ids {holders[:3]})")
    if len(rows) != n:
        problems.append(f"index.parquet has {len(rows)} row(s) of shard {s}, {SHARDS_JSON} records {n}")
    return problems


def damaged_message(data_dir: Path, problems: list[str]) -> str:
    """The one line that refuses a damaged latent dataset: its first problem, how many more, and the fix."""
    more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
    return (f"latent dataset {data_dir} is damaged: {problems[0]}{more}; list every problem with "
            f"`vamp data verify {data_dir}`, then {REENCODE}")


def verify_dataset(root: str | Path) -> list[str]:
    """Every problem of a finished latent dataset, one line each (an empty list: it is whole): shards.json and
    its checksum, every shard's file, shape and sha256, index.parquet against the records. Never raises on a
    damaged file."""
    root = Path(root)
    if not root.is_dir():
        return [f"{root} is not a folder"]
    records, num_rows, problems = load_shards_json(root)
    problems += verify_shards(root, records)[0]
    if records or not problems:
        return problems + index_problems(root, records, num_rows)
    return problems + read_index_rows(root)[3]  # no usable record: the index can only be checked for readability

__all__ = ["LATENT_DTYPE", "REENCODE", "SHARDS_JSON", "SHARDS_SIDECAR", "SHARD_DIR", "damaged_message", "file_key",
           "index_problems", "load_shards_json", "open_shard", "read_record", "read_shards_json", "record_file",
           "shard_file", "shard_problem", "verify_dataset", "verify_shards", "write_shard", "write_shards_json"]
