"""How many hostile inputs each property refused and accepted, printed at the end of the run.

A plugin (registered in tests/conftest.py): a property of tests/test_hostile*.py calls
`record("refused")` or `record("accepted")` once per input whose outcome it has checked. A
test marked `both_outcomes` fails when one of the two never happened, because a generator
that stopped producing valid (or invalid) inputs would otherwise leave that half of the
contract untested while every example still passes.
"""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import currently_in_test_context, event

OUTCOMES = ("refused", "accepted")
# Property (the test function's name, parametrizations summed) -> Counter of outcomes.
TALLIES: dict[str, Counter] = {}
_running: list[str] = []  # the property whose inputs are being recorded


def record(outcome: str) -> None:
    """Count one checked input of the running property (and show it in Hypothesis' statistics)."""
    assert outcome in OUTCOMES, outcome
    if currently_in_test_context():  # a parametrized property has no Hypothesis statistics
        event(outcome)
    TALLIES.setdefault(_running[-1] if _running else "(outside pytest)", Counter())[outcome] += 1


def pytest_configure(config):
    config.addinivalue_line("markers", "both_outcomes: the property must see at least one refused "
                                       "and one accepted input (tests/hostile_counts.py)")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    name = getattr(item, "originalname", item.name)
    _running.append(name)
    before = Counter(TALLIES.get(name, Counter()))
    try:
        result = yield
    finally:
        _running.pop()
    if item.get_closest_marker("both_outcomes"):
        seen = TALLIES.get(name, Counter()) - before
        missing = [outcome for outcome in OUTCOMES if not seen[outcome]]
        assert not missing, (f"{name}: no input was {' or '.join(missing)} "
                              f"({seen['refused']} refused, {seen['accepted']} accepted): its generator "
                              f"no longer produces both kinds, so half of the contract went untested")
    return result


def pytest_terminal_summary(terminalreporter):
    if not TALLIES:
        return
    terminalreporter.section("hostile inputs: refused / accepted per property")
    width = max(map(len, TALLIES))
    for name, tally in TALLIES.items():
        terminalreporter.write_line(f"{name:<{width}}  {tally['refused']:5d} refused  "
                                    f"{tally['accepted']:5d} accepted")
