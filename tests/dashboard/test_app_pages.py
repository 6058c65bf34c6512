"""Every dashboard page under ``streamlit.testing.v1.AppTest``: renders, key widgets, feedback round trip, model
card, missing-modality banners, sign-in gating and identified mode."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from clinmm.feedback.store import FeedbackStore, sqlite_url
from dashboards import APP_PATH

TIMEOUT = 60


@pytest.fixture()
def db_url(tmp_path: Path) -> str:
    return sqlite_url(tmp_path / "feedback.sqlite")


def make_app(monkeypatch: pytest.MonkeyPatch, *args: str) -> AppTest:
    """The app as ``clinmm dashboard`` starts it: settings after ``--`` arrive in ``sys.argv``."""
    monkeypatch.setattr(sys, "argv", [str(APP_PATH), *args])
    monkeypatch.delenv("CLINMM_FEEDBACK_DB", raising=False)
    return AppTest.from_file(str(APP_PATH), default_timeout=TIMEOUT)


@pytest.fixture()
def app(monkeypatch: pytest.MonkeyPatch, scores_dir: Path, checkpoint_dir: Path, db_url: str) -> AppTest:
    return make_app(monkeypatch, "--scores", str(scores_dir), "--model", str(checkpoint_dir), "--db", db_url)


def keys_of(scores_dir: Path) -> dict[str, str]:
    df = pd.read_parquet(scores_dir / "predictions.parquet")
    return dict(zip(df["study_id"], df["study_key"], strict=True))


def frame(at: AppTest, column: str) -> pd.DataFrame:
    """The first dataframe on the page that has ``column``."""
    for element in at.dataframe:
        if column in element.value.columns:
            return element.value
    raise AssertionError(f"no dataframe with a {column!r} column")


def texts(at: AppTest, kind: str) -> str:
    return "\n".join(str(e.value) for e in getattr(at, kind))


def test_worklist_renders_counts_filters_and_opens_a_case(app: AppTest, scores_dir: Path) -> None:
    app.run()
    assert not app.exception
    assert app.title[0].value == "Worklist"
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Studies"] == "6" and metrics["No note"] == "1" and metrics["No image"] == "2"
    assert metrics["Not scored"] == "1" and metrics["File errors"] == "1"
    assert len(app.dataframe) >= 1 and "6 of 6" in texts(app, "caption")
    shown = app.dataframe[0].value
    assert "provenance" not in shown.columns and "patient_id" not in shown.columns
    app.selectbox(key="wl_missing").set_value("note").run()
    assert "1 of 6 studies match" in texts(app, "caption")
    assert list(app.dataframe[0].value["study_id"]) == ["s003"]
    app.selectbox(key="wl_missing").set_value("any")
    assert metrics["Unlike training"] == "1"
    app.selectbox(key="wl_usual").set_value("unlike").run()
    assert list(app.dataframe[0].value["study_id"]) == ["s002"]
    assert app.dataframe[0].value["unlike_training"].tolist() == ["intensity:std;grid:rows"]
    app.selectbox(key="wl_usual").set_value("any")
    app.selectbox(key="wl_label").set_value("fever").run()
    app.slider(key="wl_min_prob").set_value(0.2).run()
    probs = app.dataframe[0].value["prob_fever"]
    expected = pd.read_parquet(scores_dir / "predictions.parquet")["prob_fever"]
    assert len(probs) == int((expected >= 0.2).sum()) > 0
    assert (probs >= 0.2).all() and list(probs) == sorted(probs, reverse=True)
    app.button(key="open_case").click().run()
    assert not app.exception
    assert app.title[0].value == "Case view"


@pytest.mark.parametrize(("study", "banner"), [("s003", "No clinical note"), ("s004", "No image")])
def test_case_view_banner_for_missing_modality(app: AppTest, scores_dir: Path, study: str, banner: str) -> None:
    app.run()
    app.query_params["study"] = keys_of(scores_dir)[study]
    app.switch_page("app_pages/case.py").run()
    assert not app.exception
    assert banner in texts(app, "warning")
    assert frame(app, "finding")["finding"].tolist()[0] == "nodule"


def test_case_view_shows_probabilities_thresholds_and_stores_feedback(
        app: AppTest, scores_dir: Path, db_url: str) -> None:
    key = keys_of(scores_dir)["s001"]
    app.run()
    app.query_params["study"] = key
    app.switch_page("app_pages/case.py").run()
    assert not app.exception
    table = frame(app, "finding")
    assert table["threshold"].round(2).tolist() == [0.3, 0.4, 0.5, 0.6, 0.7]  # from the checkpoint's labels.json
    stored = pd.read_parquet(scores_dir / "predictions.parquet").set_index("study_id").loc["s001"]
    assert table["probability"].tolist() == pytest.approx([stored[f"prob_{l}"] for l in table["finding"]], abs=1e-6)
    assert "clinmm-test-card" in texts(app, "caption")
    shown_note = texts(app, "text")
    assert "Fever to 38.1 C reported" in shown_note and "best-effort" in texts(app, "caption")
    assert "Jones" not in shown_note and "12/03/2024" not in shown_note  # scrubbed for display
    app.radio(key="case_fb_fever").set_value("disagree")
    app.text_input(key="case_fbc_fever").input("wording says afebrile")
    app.radio(key="case_fb_nodule").set_value("agree")
    app.button[[b.label for b in app.button].index("Submit feedback")].click().run()
    assert not app.exception
    assert "Feedback saved for 2 finding(s)" in texts(app, "success")
    store = FeedbackStore(db_url)
    rows = {r.label: r for r in store.feedback(study_key=key)}
    assert set(rows) == {"fever", "nodule"}
    assert rows["fever"].verdict == "disagree" and rows["fever"].comment == "wording says afebrile"
    assert rows["fever"].decision == int(stored["decision_fever"]) and rows["fever"].study_id == "s001"
    assert rows["fever"].model_version.startswith("clinmm-test-card")
    assert rows["fever"].user and len(rows["fever"].session_id) == 16
    actions = [e.action for e in store.audit()]
    assert actions.count("feedback") == 2 and "view_case" in actions


def test_case_view_without_a_selection_points_to_worklist(app: AppTest) -> None:
    app.run()
    app.switch_page("app_pages/case.py").run()
    assert not app.exception
    assert "Worklist" in texts(app, "info")


def test_model_card_page_shows_the_checkpoint_card(app: AppTest) -> None:
    app.run()
    app.switch_page("app_pages/model_card.py").run()
    assert not app.exception
    assert app.subheader[0].value == "clinmm-test-card"
    body = texts(app, "markdown")
    assert "Test card: flags findings for clinician review" in body
    assert "Only CR/DX chest views seen in training." in body
    labels = frame(app, "threshold")
    assert labels["finding"].tolist() == ["nodule", "consolidation", "fever", "dyspnea", "pneumonia"]
    assert labels["threshold"].round(2).tolist() == [0.3, 0.4, 0.5, 0.6, 0.7]


def test_validation_page_links_the_report(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, db_url: str) -> None:
    report = tmp_path / "report.html"
    report.write_text("<html><head><title>clinmm validation: demo</title></head><body>full report</body></html>")
    report.with_suffix(".json").write_text('{"headline": [{"label": "fever", "auroc": 0.91, "auroc_low": 0.85}]}')
    at = make_app(monkeypatch, "--report", str(report), "--db", db_url)
    at.run()
    at.switch_page("app_pages/validation.py").run()
    assert not at.exception
    assert at.subheader[0].value == "clinmm validation: demo"
    assert frame(at, "auroc")["auroc"].tolist() == [0.91]
    assert at.get("download_button")[0].proto.label.startswith("Open / download the full report")


def test_feedback_page_rates_and_exports(app: AppTest, scores_dir: Path, db_url: str) -> None:
    keys = keys_of(scores_dir)
    store = FeedbackStore(db_url)
    store.record(study_key=keys["s001"], label="fever", verdict="agree", user="a", decision=1)
    store.record(study_key=keys["s002"], label="fever", verdict="disagree", user="a", decision=1)
    app.run()
    app.switch_page("app_pages/feedback.py").run()
    assert not app.exception
    rates = frame(app, "reviews").set_index("finding")
    assert rates.loc["fever", "reviews"] == 2 and rates.loc["fever", "agreement rate"] == 0.5
    assert rates.loc["nodule", "reviews"] == 0
    labels = [b.proto.label for b in app.get("download_button")]
    assert labels[0] == "Export feedback (CSV)" and labels[1].startswith("Export labelled manifest (2 studies)")


def test_upload_page_without_model_explains_what_is_needed(
        monkeypatch: pytest.MonkeyPatch, scores_dir: Path, db_url: str) -> None:
    at = make_app(monkeypatch, "--scores", str(scores_dir), "--db", db_url)
    at.run()
    at.switch_page("app_pages/upload.py").run()
    assert not at.exception
    assert "Scoring needs the model" in texts(at, "info")


def test_empty_settings_render_every_page(monkeypatch: pytest.MonkeyPatch, db_url: str) -> None:
    at = make_app(monkeypatch, "--db", db_url)
    at.run()
    assert not at.exception and "clinmm score" in texts(at, "info")
    for page in ("case.py", "upload.py", "validation.py", "model_card.py", "feedback.py"):
        at.switch_page(f"app_pages/{page}").run()
        assert not at.exception, page


AUTH = {"auth": {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "x" * 32,
                 "client_id": "id", "client_secret": "secret",
                 "server_metadata_url": "https://idp.example/.well-known/openid-configuration"}}


def test_sign_in_configured_unsigned_session_sees_no_case(app: AppTest, scores_dir: Path) -> None:
    app.secrets.update(AUTH)
    app.user = {"is_logged_in": False}
    app.query_params["study"] = keys_of(scores_dir)["s001"]
    app.run()
    assert not app.exception
    assert app.title[0].value == "clinmm dashboard"
    assert [b.label for b in app.button] == ["Sign in"]
    assert len(app.dataframe) == 0 and len(app.image) == 0 and len(app.radio) == 0
    with pytest.raises(ValueError):  # the case page is not even registered for this session
        app.switch_page("app_pages/case.py").run()


def test_identified_fields_only_for_signed_in_users(
        monkeypatch: pytest.MonkeyPatch, scores_dir: Path, checkpoint_dir: Path, db_url: str) -> None:
    manifest = scores_dir.parent / "inputs" / "manifest.csv"
    key = keys_of(scores_dir)["s001"]
    args = ("--scores", str(scores_dir), "--model", str(checkpoint_dir), "--manifest", str(manifest), "--db",
            db_url, "--identified")
    # Identified mode requested, no sign-in configured: a warning and no patient ID.
    at = make_app(monkeypatch, *args)
    at.query_params["study"] = key
    at.run()
    at.switch_page("app_pages/case.py").run()
    assert "needs sign-in" in texts(at, "warning")
    assert "p001" not in texts(at, "caption")
    # Signed in through OIDC: the patient ID is shown and the access is audited.
    at = make_app(monkeypatch, *args)
    at.secrets.update(AUTH)
    at.user = {"is_logged_in": True, "email": "dr.b@example.org", "name": "Dr B"}
    at.query_params["study"] = key
    at.run()
    at.switch_page("app_pages/case.py").run()
    assert not at.exception
    assert "patient_id: p001" in texts(at, "caption")
    audit = FeedbackStore(db_url).audit(action="view_identified")
    assert audit and audit[0].who == "dr.b@example.org" and audit[0].target == key
    assert [e.who for e in FeedbackStore(db_url).audit(action="sign_in")] == ["dr.b@example.org"]


def test_case_not_scored_in_batch_is_not_rescored_unless_asked(app: AppTest, scores_dir: Path) -> None:
    app.run()
    app.query_params["study"] = keys_of(scores_dir)["s005"]  # status "truncated" in the fabricated scores
    app.switch_page("app_pages/case.py").run()
    assert not app.exception
    assert "Not scored in the batch run: truncated" in texts(app, "error")
    assert len(app.radio) == 0 and not [d for d in app.dataframe if "finding" in d.value.columns]
    app.button(key="force_score").click().run()
    assert not app.exception and len(app.radio) == 5  # shown on request, still under the error banner
    assert "Not scored in the batch run" in texts(app, "error")


def test_reverse_proxy_mode_without_the_user_header_shows_nothing_clinical(
        monkeypatch: pytest.MonkeyPatch, scores_dir: Path, db_url: str) -> None:
    at = make_app(monkeypatch, "--scores", str(scores_dir), "--db", db_url, "--proxy-user-header",
                  "X-Forwarded-User", "--identified")
    at.query_params["study"] = keys_of(scores_dir)["s001"]
    at.run()
    assert not at.exception
    assert "X-Forwarded-User" in texts(at, "error")
    assert len(at.dataframe) == 0 and len(at.radio) == 0 and len(at.button) == 0
