"""Fixtures for clinmm.io tests."""

from __future__ import annotations

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
        pytest.skip("pydicom-data not installed (pip install pydicom-data; part of the test extra)")
    return path
