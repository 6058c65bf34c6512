"""`clinmm data indiana` and `clinmm pretrain-text` through Typer's CliRunner."""

from __future__ import annotations

import csv
import os

from typer.testing import CliRunner

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from clinmm.cli import app  # noqa: E402

from test_indiana import _make_archive  # noqa: E402  (tests/text is on sys.path: rootdir-less test dirs)


def test_data_indiana_command(tmp_path):
    arc = _make_archive(tmp_path / "r.tgz")
    res = CliRunner().invoke(app, ["data", "indiana", "--out", str(tmp_path / "iu"), "--archive", str(arc)])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader((tmp_path / "iu" / "manifest.csv").open()))
    assert len(rows) == 20
    res = CliRunner().invoke(app, ["data", "indiana", "--out", str(tmp_path / "x"), "--archive", str(tmp_path / "no")])
    assert res.exit_code == 2 and "not found" in res.output


def test_pretrain_text_reports_bad_input(tmp_path):
    notes = tmp_path / "notes.csv"
    notes.write_text("id,text\n1,cough\n", encoding="utf-8")
    res = CliRunner().invoke(app, ["pretrain-text", "--notes", str(notes), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "note_text" in res.output
    res = CliRunner().invoke(app, ["pretrain-text", "--notes", str(notes), "--out", str(tmp_path / "o"), "--column",
                                   "text", "--base", "someorg/some-bert"])
    assert res.exit_code == 2 and "hub name" in res.output
