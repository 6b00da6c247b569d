"""Shared fixtures: the real Omniglot data, found through $OMNIGLOT_DIR (tests skip without it)."""

import os
from pathlib import Path

import pytest

from benchmark.data import load_omniglot


@pytest.fixture(scope="session")
def omniglot_dir() -> Path:
    value = os.environ.get("OMNIGLOT_DIR")
    if not value:
        pytest.skip("real Omniglot data not configured: "
                    "set OMNIGLOT_DIR (e.g. OMNIGLOT_DIR=../shared/omniglot)")
    path = Path(value)
    if not path.is_dir():
        pytest.skip(f"real Omniglot data not available: OMNIGLOT_DIR={value} is not a directory")
    return path


@pytest.fixture(scope="session")
def omniglot(omniglot_dir):
    return load_omniglot(omniglot_dir, download=False, progress=False)
