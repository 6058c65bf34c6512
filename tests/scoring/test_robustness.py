"""Slow robustness checks: kill -9 at random moments then resume (byte-identical), and a mixed corpus (synthetic +
every pydicom test file + pydicom-data) that scores to completion with every bad file in errors.csv."""

from __future__ import annotations

import csv
import importlib.util
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest

from clinmm.score import EXIT_INCOMPLETE, ScoreOptions, score

pytestmark = pytest.mark.slow


def _files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != "run.json"}


def _shards(out: Path) -> int:
    root = out / "shards"
    return len(list(root.glob("shard-*"))) if root.is_dir() else 0


def test_kill9_at_random_moments_then_resume_is_byte_identical(tiny_data, tiny_checkpoint, salt_file, tmp_path):
    opts = dict(notes=tiny_data / "notes.csv", workers=2, device="cpu", batch_size=4, shard_size=4,
                salt_file=salt_file, explain=True, sr=True)
    reference = tmp_path / "reference"
    score(tiny_data / "dicom", tiny_checkpoint, reference, options=ScoreOptions(**opts))
    out = tmp_path / "killed"
    cmd = [sys.executable, "-c", "from clinmm.cli import app; app()", "score", str(tiny_data / "dicom"),
           "--model", str(tiny_checkpoint), "--out", str(out), "--notes", str(tiny_data / "notes.csv"),
           "--workers", "2", "--device", "cpu", "--batch-size", "4", "--shard-size", "4", "--explain", "--sr",
           "--salt-file", str(salt_file)]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    rng = random.Random(20261123)
    kills = []
    for _ in range(3):
        before = _shards(out)
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        deadline = time.monotonic() + 600
        while _shards(out) <= before and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.0))  # a random moment once this run is under way
        finished = proc.poll() is not None
        os.killpg(proc.pid, signal.SIGKILL)  # the whole session: the CLI and its decode workers
        proc.wait()
        kills.append((before, _shards(out), finished))
    assert sum(1 for _, _, finished in kills if not finished) >= 3, kills
    assert not (out / "predictions.parquet").exists() or _shards(out) < _shards(reference)
    final = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    assert final.returncode == EXIT_INCOMPLETE, final.stderr[-2000:]
    assert _files(out) == _files(reference)


def _pydicom_data() -> Path | None:
    spec = importlib.util.find_spec("data_store")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "data"
    return path if path.is_dir() else None


def test_mixed_corpus_scores_to_completion(tiny_data, tiny_checkpoint, salt_file, tmp_path):
    from clinmm.errors import IngestError
    from clinmm.io.dicom import read_dicom

    corpus = tmp_path / "corpus"
    shutil.copytree(tiny_data / "dicom", corpus / "synthetic")
    shutil.copytree(Path(pydicom.__file__).parent / "data" / "test_files", corpus / "pydicom")
    data = _pydicom_data()
    if data is not None:
        shutil.copytree(data, corpus / "pydicom_data")
    (corpus / "README.txt").write_text("not a DICOM file\n")
    summary = score(corpus, tiny_checkpoint, tmp_path / "out",
                    options=ScoreOptions(workers=2, device="cpu", salt_file=salt_file, batch_size=8,
                                         notes=tiny_data / "notes.csv"))
    assert summary.exit_code == EXIT_INCOMPLETE
    with (tmp_path / "out" / "errors.csv").open(newline="", encoding="utf-8") as fh:
        errors = list(csv.DictReader(fh))
    by_path: dict[str, set[str]] = {}
    for e in errors:
        by_path.setdefault(e["path"], set()).add(e["status"])
    all_files = sorted(p for p in corpus.rglob("*") if p.is_file())
    assert summary.files == len(all_files)
    bad = 0
    for f in all_files:
        rel = f.relative_to(corpus).as_posix()
        try:
            read_dicom(f)
        except IngestError as err:
            bad += 1
            assert str(err.status) in by_path.get(rel, set()), (rel, err.status, by_path.get(rel))
    file_rows = [e for e in errors if e["status"] not in ("out_of_scope", "not_scored", "sr_failed")]  # per file
    assert bad > 20 and len(file_rows) >= bad
    assert summary.files_ok + len({e["path"] for e in file_rows}) == summary.files
    assert summary.scored > 0
