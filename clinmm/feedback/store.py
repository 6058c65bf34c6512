"""Clinician feedback and the dashboard's audit log, stored through SQLAlchemy 2.

Any SQLAlchemy URL works: a SQLite file by default (``sqlite:///path/feedback.sqlite``), PostgreSQL
(``postgresql+psycopg2://user@host:port/db``) in a hospital deployment. Two tables:

- ``clinmm_feedback``: one row per verdict a clinician gives on one label of one study (agree / disagree with the
  model's decision, optional comment), with the model version and sha256 the verdict was given against;
- ``clinmm_audit``: an append-only log of who did what and when (feedback given, case viewed, export made,
  identified fields shown), with the session id and the model version.

Rows hold study keys (salted hashes) and study ids from the manifest, never DICOM content. A verdict can be turned
back into a label (agree → the model's decision, disagree → its opposite) and exported as a manifest in the
DESIGN.md schema that ``clinmm train`` reads.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import DateTime, Float, Integer, String, Text, create_engine, event, select
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from clinmm.errors import ClinmmError

__all__ = [
    "FeedbackError",
    "Base",
    "FeedbackRecord",
    "AuditEvent",
    "FeedbackRow",
    "AuditRow",
    "AgreementRate",
    "FeedbackStore",
    "sqlite_url",
    "build_feedback_manifest",
    "VERDICTS",
    "AUDIT_ACTIONS",
]

logger = logging.getLogger(__name__)

VERDICTS = ("agree", "disagree")
AUDIT_ACTIONS = (
    "feedback",
    "view_case",
    "view_identified",
    "score_upload",
    "export_csv",
    "export_manifest",
    "sign_in",
)
Verdict = Literal["agree", "disagree"]


class FeedbackError(ClinmmError, ValueError):
    """The feedback store cannot be opened, or a verdict / audit event is invalid (the message names which)."""


class Base(DeclarativeBase):
    """Declarative base of the feedback tables (kept separate from any other metadata)."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


class FeedbackRecord(Base):
    """One clinician verdict on one label of one study."""

    __tablename__ = "clinmm_feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_utcnow, index=True)
    study_key: Mapped[str] = mapped_column(String(128), index=True)
    study_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    label: Mapped[str] = mapped_column(String(64), index=True)
    verdict: Mapped[str] = mapped_column(String(16))
    comment: Mapped[str] = mapped_column(Text, default="")
    prob: Mapped[float | None] = mapped_column(Float, nullable=True)
    decision: Mapped[int | None] = mapped_column(Integer, nullable=True)
    model_version: Mapped[str] = mapped_column(String(128), default="")
    model_sha256: Mapped[str] = mapped_column(String(64), default="")
    user: Mapped[str] = mapped_column(String(256))
    session_id: Mapped[str] = mapped_column(String(64), default="")


class AuditEvent(Base):
    """One audited action (append-only)."""

    __tablename__ = "clinmm_audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_utcnow, index=True)
    who: Mapped[str] = mapped_column(String(256))
    session_id: Mapped[str] = mapped_column(String(64), default="")
    action: Mapped[str] = mapped_column(String(32), index=True)
    target: Mapped[str] = mapped_column(String(256), default="")
    detail: Mapped[str] = mapped_column(Text, default="{}")
    model_version: Mapped[str] = mapped_column(String(128), default="")


@dataclass(frozen=True)
class FeedbackRow:
    """A stored verdict, detached from the database session."""

    id: int
    created_at: datetime
    study_key: str
    study_id: str | None
    label: str
    verdict: str
    comment: str
    prob: float | None
    decision: int | None
    model_version: str
    model_sha256: str
    user: str
    session_id: str

    @property
    def label_value(self) -> int | None:
        """The label this verdict implies: the model's decision if agreed, its opposite if not; None if unknown."""
        if self.decision is None:
            return None
        return int(self.decision) if self.verdict == "agree" else 1 - int(self.decision)


@dataclass(frozen=True)
class AuditRow:
    """A stored audit event."""

    id: int
    at: datetime
    who: str
    session_id: str
    action: str
    target: str
    detail: dict[str, Any]
    model_version: str


@dataclass(frozen=True)
class AgreementRate:
    """How often clinicians agreed with the model on one label (latest verdict per study, label and user)."""

    label: str
    n: int
    n_agree: int

    @property
    def rate(self) -> float:
        return self.n_agree / self.n if self.n else float("nan")


def sqlite_url(path: str | Path) -> str:
    """SQLAlchemy URL of a SQLite file (its folder is created)."""
    path = Path(path).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def _redacted(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<invalid URL>"


class FeedbackStore:
    """Feedback and audit tables behind one SQLAlchemy engine.

    Args:
        url: SQLAlchemy database URL (``sqlite:///file.sqlite``, ``postgresql+psycopg2://...``).
        create: create the tables if they do not exist.
        engine_kwargs: extra keyword arguments for :func:`sqlalchemy.create_engine`.

    Raises:
        FeedbackError: the URL is invalid or the database cannot be reached (password hidden in the message).
    """

    def __init__(self, url: str, *, create: bool = True, engine_kwargs: dict[str, Any] | None = None) -> None:
        self.url = url
        try:
            parsed = make_url(url)
        except ArgumentError as err:
            raise FeedbackError(f"feedback database URL {url!r} is not a SQLAlchemy URL") from err
        kwargs = {"pool_pre_ping": True, **(engine_kwargs or {})}
        if parsed.get_backend_name() == "sqlite":
            kwargs.setdefault("connect_args", {"check_same_thread": False, "timeout": 30})
        try:
            self.engine: Engine = create_engine(url, **kwargs)
        except (ArgumentError, ImportError, SQLAlchemyError) as err:
            raise FeedbackError(f"cannot open feedback database {_redacted(url)}: {err}") from err
        if parsed.get_backend_name() == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        if create:
            try:
                Base.metadata.create_all(self.engine)
            except SQLAlchemyError as err:
                raise FeedbackError(f"cannot create feedback tables in {_redacted(url)}: {err}") from err

    def __repr__(self) -> str:
        return f"FeedbackStore({_redacted(self.url)!r})"

    @property
    def display_url(self) -> str:
        """The URL with any password hidden."""
        return _redacted(self.url)

    def close(self) -> None:
        """Release the connection pool."""
        self.engine.dispose()

    # --- writing -----------------------------------------------------------------------------------------------------

    def record(
        self,
        *,
        study_key: str,
        label: str,
        verdict: Verdict,
        user: str,
        session_id: str = "",
        comment: str = "",
        prob: float | None = None,
        decision: int | None = None,
        model_version: str = "",
        model_sha256: str = "",
        study_id: str | None = None,
    ) -> int:
        """Store one verdict and its audit event in one transaction; returns the feedback row id.

        Args:
            study_key: salted study key from the scoring output.
            label: finding name.
            verdict: ``"agree"`` or ``"disagree"`` with the model's decision.
            user: the signed-in user, else the OS user.
            session_id: dashboard session id.
            comment: free text (kept as typed; the UI warns not to enter identifiers).
            prob: the model's probability shown to the user.
            decision: the model's decision shown to the user (0/1).
            model_version: model name + version the verdict was given against.
            model_sha256: checkpoint sha256.
            study_id: manifest study id when known.

        Raises:
            FeedbackError: unknown verdict, empty study key / label / user, or a database failure.
        """
        if verdict not in VERDICTS:
            raise FeedbackError(f"verdict must be one of {list(VERDICTS)}, got {verdict!r}")
        for name, value in (("study_key", study_key), ("label", label), ("user", user)):
            if not value:
                raise FeedbackError(f"feedback field {name!r} must not be empty")
        if decision is not None and int(decision) not in (0, 1):
            raise FeedbackError(f"decision must be 0 or 1, got {decision!r}")
        row = FeedbackRecord(
            study_key=study_key, study_id=study_id, label=label, verdict=verdict, comment=comment or "",
            prob=None if prob is None else float(prob), decision=None if decision is None else int(decision),
            model_version=model_version, model_sha256=model_sha256, user=user, session_id=session_id,
        )
        audit = AuditEvent(
            who=user, session_id=session_id, action="feedback", target=f"{study_key}/{label}",
            detail=json.dumps({"verdict": verdict, "has_comment": bool(comment)}), model_version=model_version,
        )
        try:
            with self._sessions.begin() as session:
                session.add_all([row, audit])
                session.flush()
                row_id = row.id
        except SQLAlchemyError as err:
            raise FeedbackError(f"cannot store feedback in {self.display_url}: {err}") from err
        logger.info("feedback %s on %s stored (row %d)", verdict, label, row_id)
        return row_id

    def log(
        self,
        *,
        who: str,
        action: str,
        session_id: str = "",
        target: str = "",
        detail: dict[str, Any] | None = None,
        model_version: str = "",
    ) -> int:
        """Append one audit event; returns its id.

        Raises:
            FeedbackError: unknown action (see :data:`AUDIT_ACTIONS`), empty ``who``, or a database failure.
        """
        if action not in AUDIT_ACTIONS:
            raise FeedbackError(f"audit action must be one of {list(AUDIT_ACTIONS)}, got {action!r}")
        if not who:
            raise FeedbackError("audit field 'who' must not be empty")
        event_row = AuditEvent(
            who=who, session_id=session_id, action=action, target=target,
            detail=json.dumps(detail or {}, sort_keys=True, default=str), model_version=model_version,
        )
        try:
            with self._sessions.begin() as session:
                session.add(event_row)
                session.flush()
                return event_row.id
        except SQLAlchemyError as err:
            raise FeedbackError(f"cannot write audit event to {self.display_url}: {err}") from err

    # --- reading -----------------------------------------------------------------------------------------------------

    def feedback(self, *, study_key: str | None = None, label: str | None = None) -> list[FeedbackRow]:
        """Stored verdicts, oldest first, optionally for one study and/or label."""
        query = select(FeedbackRecord).order_by(FeedbackRecord.id)
        if study_key is not None:
            query = query.where(FeedbackRecord.study_key == study_key)
        if label is not None:
            query = query.where(FeedbackRecord.label == label)
        with self._read() as session:
            return [_feedback_row(r) for r in session.scalars(query)]

    def audit(self, *, action: str | None = None, limit: int | None = None) -> list[AuditRow]:
        """Audit events, newest first."""
        query = select(AuditEvent).order_by(AuditEvent.id.desc())
        if action is not None:
            query = query.where(AuditEvent.action == action)
        if limit is not None:
            query = query.limit(limit)
        with self._read() as session:
            return [
                AuditRow(id=e.id, at=_aware(e.at), who=e.who, session_id=e.session_id, action=e.action,
                         target=e.target, detail=json.loads(e.detail or "{}"), model_version=e.model_version)
                for e in session.scalars(query)
            ]

    def latest(self) -> list[FeedbackRow]:
        """The latest verdict per (study, label, user): a clinician who changes their mind counts once."""
        latest: dict[tuple[str, str, str], FeedbackRow] = {}
        for row in self.feedback():
            latest[(row.study_key, row.label, row.user)] = row
        return sorted(latest.values(), key=lambda r: r.id)

    def agreement_rates(self, *, labels: Sequence[str] | None = None) -> list[AgreementRate]:
        """Per-label agreement with the model over the latest verdicts; labels without feedback get n = 0."""
        counts: dict[str, list[int]] = {label: [0, 0] for label in labels or ()}
        for row in self.latest():
            n_agree = counts.setdefault(row.label, [0, 0])
            n_agree[0] += 1
            n_agree[1] += row.verdict == "agree"
        return [AgreementRate(label=k, n=v[0], n_agree=v[1]) for k, v in counts.items()]

    def to_csv(self) -> str:
        """Every stored verdict as CSV text (one row per verdict, UTC ISO timestamps, implied label value)."""
        rows = self.feedback()
        buffer = io.StringIO()
        fields = [*FeedbackRow.__dataclass_fields__, "label_value"]
        writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            data = asdict(row)
            data["created_at"] = _aware(row.created_at).isoformat()
            data["label_value"] = "" if row.label_value is None else row.label_value
            writer.writerow({k: "" if v is None else v for k, v in data.items()})
        return buffer.getvalue()

    def _read(self) -> Session:
        try:
            return self._sessions()
        except SQLAlchemyError as err:  # pragma: no cover - sessionmaker is lazy; errors surface on query
            raise FeedbackError(f"cannot read feedback from {self.display_url}: {err}") from err


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL + busy timeout so the dashboard's threads and a second process can share one SQLite file."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _aware(value: datetime) -> datetime:
    """SQLite returns naive datetimes for timezone-aware columns; they were stored in UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _feedback_row(r: FeedbackRecord) -> FeedbackRow:
    return FeedbackRow(
        id=r.id, created_at=_aware(r.created_at), study_key=r.study_key, study_id=r.study_id, label=r.label,
        verdict=r.verdict, comment=r.comment, prob=r.prob, decision=r.decision, model_version=r.model_version,
        model_sha256=r.model_sha256, user=r.user, session_id=r.session_id,
    )


def build_feedback_manifest(
    feedback: Iterable[FeedbackRow],
    cases: Sequence[dict[str, Any]],
    *,
    labels: Sequence[str],
    split: str = "train",
) -> list[dict[str, Any]]:
    """Turn verdicts into manifest rows (DESIGN.md schema) that ``clinmm train`` reads.

    The label of a (study, finding) pair is the one implied by the most recent verdict on it (from any user);
    findings nobody reviewed stay blank (unknown, masked in the loss). Studies without any usable verdict, or
    whose image path and note are both unknown, are left out.

    Args:
        feedback: stored verdicts (e.g. :meth:`FeedbackStore.feedback`).
        cases: one mapping per study with ``study_key`` and, where known, ``study_id``, ``patient_id``,
            ``image_path``, ``note_text`` and subgroup columns (``sex``, ``age_band``, ``site``...).
        labels: finding names, in the order of the ``label_<finding>`` columns.
        split: split written for every row.

    Returns:
        Rows with ``study_id, patient_id, split, image_path, note_text, label_<finding>...`` plus the subgroup
        columns found in ``cases``; label values are 1, 0 or ``""``.
    """
    implied: dict[str, dict[str, int]] = {}
    for row in sorted(feedback, key=lambda r: r.id):
        value = row.label_value
        if value is not None and row.label in labels:
            implied.setdefault(row.study_key, {})[row.label] = value
    core = ("study_id", "patient_id", "split", "image_path", "note_text")
    out = []
    for case in cases:
        key = str(case.get("study_key", ""))
        if key not in implied:
            continue
        if not case.get("image_path") and not case.get("note_text"):
            logger.warning("feedback on study %s left out of the manifest: neither image path nor note known", key)
            continue
        row: dict[str, Any] = {
            "study_id": case.get("study_id") or key,
            "patient_id": case.get("patient_id") or case.get("study_id") or key,
            "split": split,
            "image_path": case.get("image_path") or "",
            "note_text": case.get("note_text") or "",
        }
        for label in labels:
            value = implied[key].get(label)
            row[f"label_{label}"] = "" if value is None else value
        for extra, value in case.items():
            if extra not in core and extra != "study_key" and not extra.startswith(("label_", "prob_", "decision_")):
                row.setdefault(extra, value)
        out.append(row)
    return out
