"""Where the tests find the real Omniglot data, and one line at the end of the run saying how
many tests that need it ran, or were skipped and why (a plugin registered in tests/conftest.py).

The data is $OMNIGLOT_DIR when it is set, else the folder `python run_benchmark.py download`
fills (data/omniglot), so a user who ran the harness once has the data tests run too.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

from benchmark.data import NPZ_NAME, locate_data_dir

DATA_FIXTURE = "omniglot_dir"


def locate_test_data() -> tuple[Path | None, str]:
    """(the data folder, where it came from), or (None, why there is none)."""
    folder, source = locate_data_dir(None)
    if os.environ.get("OMNIGLOT_DIR") and not folder.is_dir():
        return None, f"OMNIGLOT_DIR={folder} is not a folder"
    has_data = (folder / NPZ_NAME).is_file() or (folder / "images_background.zip").is_file()
    if not has_data:
        return None, (f"no Omniglot data in {folder} ({source}): set OMNIGLOT_DIR (e.g. "
                      f"OMNIGLOT_DIR=../shared/omniglot) or run `python run_benchmark.py download`")
    return folder, source


@pytest.fixture(scope="session")
def omniglot_dir() -> Path:
    """The real data's folder; a test that needs it is skipped, saying why, when there is none."""
    folder, reason = locate_test_data()
    if folder is None:
        pytest.skip(reason)
    return folder


def pytest_configure(config):
    config.pluginmanager.register(DataTestTally(), "data-test-tally")


class DataTestTally:
    """Counts, for one pytest run, the tests that use the real data: ran, or skipped and why."""

    def __init__(self):
        self.data_tests: set[str] = set()
        self.outcomes: Counter = Counter()
        self.skip_reasons: Counter = Counter()

    def pytest_collection_modifyitems(self, items):
        self.data_tests.update(item.nodeid for item in items if DATA_FIXTURE in getattr(item, "fixturenames", ()))

    def pytest_runtest_logreport(self, report):
        if report.nodeid not in self.data_tests:
            return
        if report.skipped:
            self.outcomes["skipped"] += 1
            reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else "skipped"
            self.skip_reasons[str(reason).removeprefix("Skipped: ")] += 1
        elif report.when == "call":
            self.outcomes["ran"] += 1

    def pytest_unconfigure(self, config):
        """The last line of the run (after pytest's own summary)."""
        terminalreporter = config.pluginmanager.get_plugin("terminalreporter")
        if not self.data_tests or terminalreporter is None:
            return
        folder, source = locate_test_data()
        line = f"data tests: {self.outcomes['ran']} ran" + (f" on {folder} ({source})" if folder else "")
        if self.outcomes["skipped"]:
            line += f", {self.outcomes['skipped']} skipped: " + "; ".join(
                reason for reason, _ in self.skip_reasons.most_common(2))
        terminalreporter.write_line(line)
