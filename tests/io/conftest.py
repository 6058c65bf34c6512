"""Fixtures for clinmm.io tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from io_factory import pydicom_data_files, pydicom_test_files


@pytest.fixture
def test_files() -> Path:
    return pydicom_test_files()


@pytest.fixture
def data_files() -> Path:
    path = pydicom_data_files()
    if path is None:
        reason = "pydicom-data not installed (pip install pydicom-data; part of the test extra)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return path
