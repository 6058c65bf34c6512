"""inspect_folder / clinmm inspect: one row per file, nested extension-less files, series geometry summary."""

from __future__ import annotations

import csv
from pathlib import Path

from io_factory import ct_series
from typer.testing import CliRunner

from clinmm.io.inspect import ROW_FIELDS, inspect_folder


def test_rows_and_series_summary(tmp_path: Path) -> None:
    ct_series(tmp_path / "a" / "b", n=5, names=lambda k: f"{k:08X}")
    gap = ct_series(tmp_path / "c", n=5)
    gap[2].unlink()
    (tmp_path / "c" / "README").write_text("hello")
    summary = inspect_folder(tmp_path, out_csv=tmp_path / "out" / "rows.csv", workers=2, progress=False,
                             salt=b"z" * 32)
    assert summary.n_files == 10 and summary.counts["ok"] == 9 and summary.counts["not_dicom"] == 1
    issues = sorted(tuple(s["issues"]) for s in summary.series)
    assert issues == [(), ("missing_slices:1",)]
    assert "1 inconsistent" in summary.format() and "missing_slices:1" in summary.format()
    with open(tmp_path / "out" / "rows.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 10 and tuple(rows[0]) == ROW_FIELDS and "geometry" not in rows[0]
    ok = [r for r in rows if r["status"] == "ok"]
    assert {r["decoder"] for r in ok} == {"native"} and {r["modality"] for r in ok} == {"CT"}
    assert all(len(r["study_key"]) == 24 for r in ok)
    assert any(r["path"] == "a/b/00000003" for r in rows)


def test_cli_inspect(tmp_path: Path) -> None:
    ct_series(tmp_path / "s", n=2)
    from clinmm.cli import app

    result = CliRunner().invoke(app, ["inspect", str(tmp_path / "s"), "--out", str(tmp_path / "r.csv"),
                                      "--no-progress", "--salt-file", str(tmp_path / "salt"), "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "2 files" in result.output and "ok" in result.output
    assert (tmp_path / "salt").exists() and (tmp_path / "r.csv").read_text().count("\n") == 3
