"""Cached resources shared by the pages: the feedback store and the live model in ``st.cache_resource``,
the scoring output and model card in ``st.cache_data`` (keyed by path and modification time)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import streamlit as st

from clinmm.feedback.store import FeedbackStore
from dashboards.data import ModelInfo, ScoresTable, load_model_info, load_scores

__all__ = ["feedback_store", "scores", "model_info", "predictor", "predictor_error", "mtime", "volume", "live_case"]

logger = logging.getLogger(__name__)


def mtime(path: Path | None) -> float:
    """Latest modification time of a file or of the files directly in a folder (cache key); 0 when absent."""
    if path is None or not Path(path).exists():
        return 0.0
    path = Path(path)
    if path.is_file():
        return path.stat().st_mtime
    return max([path.stat().st_mtime, *(p.stat().st_mtime for p in path.iterdir() if p.is_file())])


@st.cache_resource(show_spinner=False)
def feedback_store(url: str) -> FeedbackStore:
    """One store (connection pool) per database URL for the whole server."""
    return FeedbackStore(url)


@st.cache_data(show_spinner=False, max_entries=4)
def _scores(folder: str, _stamp: float) -> ScoresTable:
    return load_scores(folder)


def scores(folder: Path) -> ScoresTable:
    """The scoring output folder, re-read when a file in it changes."""
    return _scores(str(folder), mtime(folder))


@st.cache_data(show_spinner=False, max_entries=4)
def _model_info(folder: str, _stamp: float) -> ModelInfo:
    return load_model_info(folder)


def model_info(folder: Path) -> ModelInfo:
    """The checkpoint's card, labels and thresholds."""
    return _model_info(str(folder), mtime(folder))


@st.cache_resource(show_spinner="Loading the model…")
def _predictor(folder: str, _stamp: float) -> Any:
    from clinmm.inference import Predictor, load_checkpoint, resolve_device

    return Predictor(load_checkpoint(folder, device=resolve_device("auto")))


def predictor(folder: Path) -> Any:
    """The live model (checksums verified on load), loaded once per checkpoint and kept for every session."""
    return _predictor(str(folder), mtime(folder))


def predictor_error(folder: Path | None) -> str | None:
    """Why the live model cannot be used (None when it can)."""
    if folder is None:
        return "no checkpoint given (start with --model DIR)"
    if not (Path(folder) / "model.safetensors").is_file():  # checked before importing torch (slow to import)
        return f"{folder} has no model.safetensors"
    try:
        import clinmm.inference  # noqa: F401
    except ImportError as err:
        return f"clinmm.inference is not available ({err})"
    try:
        predictor(folder)
    except Exception as err:  # noqa: BLE001 - shown to the user, the page keeps working
        logger.warning("cannot load checkpoint %s: %s", folder, err)
        return f"cannot load the checkpoint: {err}"
    return None


@st.cache_data(show_spinner=False, max_entries=8)
def _volume(path: str, _stamp: float) -> Any:
    from clinmm.io.load import load_image

    return load_image(Path(path))


def volume(path: Path) -> Any:
    """A decoded DICOM image or series (``clinmm.io.study.ImageVolume``); raises ``IngestError``/``ImportError``."""
    return _volume(str(path), mtime(path))


@st.cache_data(show_spinner="Scoring and explaining…", max_entries=32)
def _live_case(model: str, _stamp: float, image: str, note: str, key: str) -> Any:
    from dashboards.case_result import live_result

    pred = predictor(Path(model))
    return live_result(pred, volume(Path(image)) if image else None, note, key=key)


def live_case(model: Path, image: Path | None, note: str, key: str) -> Any:
    """Re-score and explain one study with the cached model (cached per study)."""
    return _live_case(str(model), mtime(model), str(image) if image else "", note, key)
