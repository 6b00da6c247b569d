"""Shared fixtures: the real Omniglot data, found through $OMNIGLOT_DIR (tests skip without it)."""

import os
from pathlib import Path

import pytest

from benchmark import registry
from benchmark.data import load_omniglot

pytest_plugins = ["pytester", "tests.hostile_counts"]  # tests/test_checks.py runs the contract helper in a pytest of its own


@pytest.fixture(autouse=True)
def isolated_registry():
    """Methods a test registers are unregistered after it."""
    with registry.METHODS.isolated():
        yield registry.METHODS


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
