"""Fixtures for training tests (helpers: ``tests/models/clinmm_tiny.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "models"))

from clinmm_tiny import make_tiny_bert


@pytest.fixture(scope="session")
def tiny_text_dir(tmp_path_factory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny_bert") / "bert")
