"""Atomic, sharded, reproducible output files of ``clinmm score``.

Every file is written to a temporary name beside its target, flushed and fsynced, then renamed into place
(``os.replace`` is atomic on POSIX), and the folder is fsynced. A *shard* (a fixed slice of the sorted study list) is
a folder ``shards/shard-NNNNN/`` built under a temporary name and renamed when complete, so after a crash a shard
either exists whole or not at all; an unfinished one leaves only a ``.tmp-…`` folder, removed on the next run.
Each shard records a fingerprint of what it was computed from (model, preprocessing, options, its studies and files);
a shard whose fingerprint differs is recomputed. Nothing but ``run.json`` holds a timestamp.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import re
import shutil
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

__all__ = ["output_lock", "atomic_write_bytes", "atomic_write_text", "ShardStore", "write_predictions", "write_errors",
           "ERROR_COLUMNS", "fingerprint"]

ERROR_COLUMNS = ("path", "status", "detail", "message")
_SHARD_FILES = ("rows.jsonl", "errors.jsonl", "stats.jsonl")
_TMP_FILE = re.compile(r"\..+\.tmp\d+")  # the temp name of atomic_write_bytes: .NAME.tmpPID


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temp file + fsync + rename."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, p)
    _fsync_dir(p.parent)
    return p


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def output_lock(out: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold ``out/.clinmm.lock`` exclusively (``flock``) for one scoring run.

    Two runs into the same folder would interleave shards and temp files; the second one fails at once instead.
    The kernel drops the lock when its process dies, so a killed run never leaves the folder locked.

    Raises:
        ScoringError: another process holds the lock.
    """
    import fcntl

    from clinmm.errors import ScoringError

    path = Path(out) / ".clinmm.lock"
    fh = open(path, "a+b")
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ScoringError(f"{Path(out)}: another clinmm process is writing to this output folder "
                               "(it holds .clinmm.lock); wait for it to finish or choose another --out") from None
        yield path
    finally:
        fh.close()  # closing the descriptor releases the lock


def fingerprint(obj) -> str:
    """sha256 of the canonical JSON of ``obj``."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _jsonl(records: Iterable[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False, allow_nan=True) + "\n" for r in records).encode("utf-8")


class ShardStore:
    """The ``shards/`` folder of an output directory.

    Args:
        out: the output directory.
    """

    def __init__(self, out: str | os.PathLike[str]) -> None:
        self.root = Path(out) / "shards"

    def path(self, index: int) -> Path:
        return self.root / f"shard-{index:05d}"

    def clean_partial(self) -> int:
        """Remove what a crash left unfinished: shard folders and half-written files; returns how many.

        Half-written files are the ``.NAME.tmpPID`` files of :func:`atomic_write_bytes` (and of the SR writer) anywhere
        in the output directory; one clinmm process owns an output directory at a time, so none is in use here.
        """
        n = 0
        if self.root.is_dir():
            for p in sorted(self.root.glob(".tmp-*")):
                shutil.rmtree(p, ignore_errors=True)
                n += 1
        out = self.root.parent
        if out.is_dir():
            for p in sorted(out.rglob(".*.tmp*")):
                if p.is_file() and _TMP_FILE.fullmatch(p.name):
                    p.unlink(missing_ok=True)
                    n += 1
        return n

    def is_done(self, index: int, expected_fingerprint: str) -> bool:
        meta = self.path(index) / "meta.json"
        try:
            return json.loads(meta.read_text(encoding="utf-8")).get("fingerprint") == expected_fingerprint
        except (OSError, ValueError):
            return False

    def write(self, index: int, *, fingerprint_: str, rows: Sequence[dict], errors: Sequence[dict],
              stats: Sequence[dict]) -> Path:
        """Write a finished shard atomically (temp folder, fsynced files, rename)."""
        self.root.mkdir(parents=True, exist_ok=True)
        final = self.path(index)
        tmp = self.root / f".tmp-{final.name}-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        for name, data in (("rows.jsonl", _jsonl(rows)), ("errors.jsonl", _jsonl(errors)),
                           ("stats.jsonl", _jsonl(stats)),
                           ("meta.json", json.dumps({"fingerprint": fingerprint_, "studies": len(rows)},
                                                    sort_keys=True).encode())):
            with open(tmp / name, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        _fsync_dir(tmp)
        if final.exists():  # a stale shard (other fingerprint): replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(self.root)
        return final

    def read(self, index: int) -> tuple[list[dict], list[dict], list[dict]]:
        """(rows, errors, stats) of a finished shard."""
        out = []
        for name in _SHARD_FILES:
            text = (self.path(index) / name).read_text(encoding="utf-8")
            out.append([json.loads(line) for line in text.splitlines() if line])
        return out[0], out[1], out[2]

    def remove_beyond(self, n_shards: int) -> None:
        """Drop shard folders with an index ≥ ``n_shards`` (the input shrank since the last run)."""
        if not self.root.is_dir():
            return
        for p in self.root.glob("shard-*"):
            try:
                if int(p.name.split("-")[1]) >= n_shards:
                    shutil.rmtree(p)
            except ValueError:
                continue


def _csv_value(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, float):
        return "" if v != v else repr(v)
    return str(v)


def _csv_bytes(columns: Sequence[str], rows: Iterable[dict]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([_csv_value(r.get(c)) for c in columns])
    return buf.getvalue().encode("utf-8")


def write_predictions(out: Path, rows: Sequence[dict], columns: Sequence[str], types: dict[str, str]) -> None:
    """``predictions.parquet`` (typed) and ``predictions.csv`` (same columns), atomically.

    Args:
        out: output directory.
        rows: one dict per study.
        columns: column order.
        types: column → ``str`` / ``bool`` / ``float`` / ``int``.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrow = {"str": pa.string(), "bool": pa.bool_(), "float": pa.float64(), "int": pa.int64()}
    schema = pa.schema([(c, arrow[types[c]]) for c in columns])
    data = {c: [r.get(c) for r in rows] for c in columns}
    for c in columns:
        if types[c] == "float":
            data[c] = [None if (v is None or v != v) else float(v) for v in data[c]]
    table = pa.Table.from_pydict(data, schema=schema)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    atomic_write_bytes(out / "predictions.parquet", sink.getvalue().to_pybytes())
    atomic_write_bytes(out / "predictions.csv", _csv_bytes(columns, rows))


def write_errors(out: Path, rows: Sequence[dict]) -> None:
    """``errors.csv``: path (relative to INPUT), status, detail, message."""
    atomic_write_bytes(out / "errors.csv", _csv_bytes(ERROR_COLUMNS, rows))
