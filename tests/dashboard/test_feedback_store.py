"""The feedback store: the same tests on SQLite and on a real local PostgreSQL server."""

from __future__ import annotations

import csv
import io
import uuid
from pathlib import Path

import pytest

from clinmm.feedback.store import FeedbackError, FeedbackStore, build_feedback_manifest, sqlite_url


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> FeedbackStore:
    if request.param == "sqlite":
        s = FeedbackStore(sqlite_url(tmp_path / "fb" / "feedback.sqlite"))
    else:
        url = request.getfixturevalue("postgres_url")
        s = FeedbackStore(url)
        # One server for the session: start each test from empty tables.
        from clinmm.feedback.store import Base

        Base.metadata.drop_all(s.engine)
        Base.metadata.create_all(s.engine)
    yield s
    s.close()


def test_record_round_trip_and_audit(store: FeedbackStore) -> None:
    row_id = store.record(study_key="k1", study_id="s001", label="nodule", verdict="disagree", comment="faint",
                          user="dr.a@example.org", session_id="sess1", prob=0.81, decision=1,
                          model_version="m 0.1 (abc)", model_sha256="ab" * 32)
    rows = store.feedback(study_key="k1")
    assert [r.id for r in rows] == [row_id]
    r = rows[0]
    assert (r.label, r.verdict, r.comment, r.user, r.session_id) == ("nodule", "disagree", "faint",
                                                                     "dr.a@example.org", "sess1")
    assert r.prob == pytest.approx(0.81) and r.decision == 1 and r.label_value == 0
    assert r.created_at.tzinfo is not None
    audit = store.audit(action="feedback")
    assert len(audit) == 1 and audit[0].who == "dr.a@example.org" and audit[0].target == "k1/nodule"
    assert audit[0].model_version == "m 0.1 (abc)" and audit[0].detail == {"verdict": "disagree", "has_comment": True}


def test_agreement_rates_use_latest_verdict_per_user(store: FeedbackStore) -> None:
    common = {"session_id": "s", "prob": 0.7, "decision": 1}
    store.record(study_key="k1", label="fever", verdict="disagree", user="a", **common)
    store.record(study_key="k1", label="fever", verdict="agree", user="a", **common)  # changed mind: counts once
    store.record(study_key="k1", label="fever", verdict="disagree", user="b", **common)
    store.record(study_key="k2", label="fever", verdict="agree", user="a", **common)
    store.record(study_key="k2", label="nodule", verdict="agree", user="a", **common)
    rates = {r.label: r for r in store.agreement_rates(labels=["fever", "nodule", "dyspnea"])}
    assert (rates["fever"].n, rates["fever"].n_agree) == (3, 2)
    assert rates["fever"].rate == pytest.approx(2 / 3)
    assert (rates["nodule"].n, rates["nodule"].n_agree) == (1, 1)
    assert rates["dyspnea"].n == 0


def test_csv_export(store: FeedbackStore) -> None:
    store.record(study_key="k1", label="fever", verdict="agree", user="a", decision=0, prob=0.2, comment='a "q", b')
    store.record(study_key="k2", label="nodule", verdict="disagree", user="b")
    rows = list(csv.DictReader(io.StringIO(store.to_csv())))
    assert [r["study_key"] for r in rows] == ["k1", "k2"]
    assert rows[0]["comment"] == 'a "q", b' and rows[0]["label_value"] == "0"
    assert rows[1]["label_value"] == ""  # no decision recorded → label unknown
    assert rows[0]["created_at"].endswith("+00:00")


def test_invalid_input_is_rejected(store: FeedbackStore) -> None:
    with pytest.raises(FeedbackError, match="verdict"):
        store.record(study_key="k", label="fever", verdict="maybe", user="a")  # type: ignore[arg-type]
    with pytest.raises(FeedbackError, match="user"):
        store.record(study_key="k", label="fever", verdict="agree", user="")
    with pytest.raises(FeedbackError, match="decision"):
        store.record(study_key="k", label="fever", verdict="agree", user="a", decision=2)
    with pytest.raises(FeedbackError, match="action"):
        store.log(who="a", action="delete_everything")
    assert store.feedback() == [] and store.audit() == []


def test_manifest_export_schema(store: FeedbackStore) -> None:
    store.record(study_key="k1", label="fever", verdict="agree", user="a", decision=1)
    store.record(study_key="k1", label="nodule", verdict="disagree", user="a", decision=1)
    store.record(study_key="k2", label="fever", verdict="disagree", user="a", decision=0)
    store.record(study_key="k3", label="fever", verdict="agree", user="a", decision=1)  # no image, no note: left out
    cases = [
        {"study_key": "k1", "study_id": "s1", "patient_id": "p1", "image_path": "/d/s1.dcm", "note_text": "x",
         "sex": "F"},
        {"study_key": "k2", "study_id": "s2", "patient_id": "p2", "image_path": "", "note_text": "fever", "sex": "M"},
        {"study_key": "k3", "study_id": "s3", "patient_id": "p3", "image_path": "", "note_text": ""},
    ]
    rows = build_feedback_manifest(store.feedback(), cases, labels=["nodule", "fever", "dyspnea"])
    assert [r["study_id"] for r in rows] == ["s1", "s2"]
    assert list(rows[0])[:8] == ["study_id", "patient_id", "split", "image_path", "note_text", "label_nodule",
                                 "label_fever", "label_dyspnea"]
    assert (rows[0]["label_nodule"], rows[0]["label_fever"], rows[0]["label_dyspnea"]) == (0, 1, "")
    assert rows[1]["label_fever"] == 1 and rows[0]["split"] == "train" and rows[1]["sex"] == "M"


def test_two_stores_share_one_database(store: FeedbackStore) -> None:
    """A second process/engine on the same URL sees the rows (the dashboard and an export job)."""
    other = FeedbackStore(store.url)
    try:
        store.record(study_key=uuid.uuid4().hex, label="fever", verdict="agree", user="a")
        assert len(other.feedback()) == 1
    finally:
        other.close()


def test_bad_url_is_a_clear_error() -> None:
    with pytest.raises(FeedbackError, match="not a SQLAlchemy URL"):
        FeedbackStore("not a url")
    with pytest.raises(FeedbackError, match="cannot"):
        FeedbackStore("postgresql+psycopg2://u:secret@127.0.0.1:1/db")
    try:
        FeedbackStore("postgresql+psycopg2://u:secret@127.0.0.1:1/db")
    except FeedbackError as err:
        assert "secret" not in str(err)
