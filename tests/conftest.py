"""Shared fixtures: the real Omniglot data ($OMNIGLOT_DIR, else data/omniglot; tests that need
it skip without it, and the run ends with a line saying how many ran), and a registry that
forgets what each test registers."""

import pytest

from benchmark import registry
from benchmark.data import load_omniglot

# pytester: tests/test_checks.py runs the contract helper in a pytest of its own.
pytest_plugins = ["pytester", "tests.hostile_counts", "tests.data_tests"]


@pytest.fixture(autouse=True)
def isolated_registry():
    """Methods a test registers are unregistered after it."""
    with registry.METHODS.isolated():
        yield registry.METHODS


@pytest.fixture(scope="session")
def omniglot(omniglot_dir):
    return load_omniglot(omniglot_dir, download=False, progress=False)
