"""Fixtures for datapipe tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from dp_helpers import EXAMPLES


@pytest.fixture
def examples_dir() -> Path:
    return EXAMPLES
