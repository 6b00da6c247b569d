"""CI regression: run a config (configs/smoke.yaml) on its frozen episodes, compare with golden numbers.

The golden file (results/baselines/smoke.json) holds, per method, task set and N, the number
of correct answers and of queries, so comparing is comparing integers. Every run here is on
the CPU with `torch.use_deterministic_algorithms(True)` and a fixed thread count, through the
same runner as a benchmark run, so whatever moves a benchmark number moves a row here.

Untrained deterministic methods (random with its seed, pixel 1-NN) must match exactly. A
trained method may differ across machines: float sums in another order (other SIMD kernels,
another BLAS, another thread split) flip near-tied argmaxes and, compounded over training
steps, move the weights. `update-baselines` measures this on the machine it runs on: it runs
every method with RUN_THREADS threads (the golden numbers) and again with PROBE_THREADS, and
records per row the predictions that changed (`flips`) and the other run's correct count
(`probe_correct`). An untrained deterministic method with no flips is exact. Any other method
gets, per row, a tolerance in accuracy points of

    max(TOLERANCE_FLOOR, Z_SCORE * 100 * sqrt(flips) / queries, TOLERANCE_FACTOR * |measured delta|)

Each flip moves the row's correct count by -1, 0 or +1; flips caused by rounding fall on
either side alike, so together they move it by about sqrt(flips) answers (one standard
deviation), and Z_SCORE of those make a false alarm rare. The measured delta between the two
runs, doubled, covers flips that do not cancel out; the floor covers a CPU that differs more
than a thread count does. (The share of flipped predictions is not used: once training
diverges it is large while accuracy moves far less; protonet with 30 steps, measured with
update-baselines on a trial config: 2039 of 5800 predictions flipped, accuracy moved at most
4.2 points in a row, and that row's tolerance is 9.16.)
"""

from __future__ import annotations

import contextlib
import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from benchmark import registry
from benchmark.errors import ConfigError
from benchmark.files import write_atomically
from benchmark.run_folder import RunFolder
from benchmark.text_table import text_table
from benchmark.run_manifest import task_set_hashes

BASELINE_FORMAT = "oneshot-benchmark/baselines/v1"
RUN_THREADS = 2  # the golden numbers and the CI check both run with this many threads
PROBE_THREADS = 1  # the second thread count, which update-baselines measures flips with
Z_SCORE = 4.0
TOLERANCE_FACTOR = 2.0
TOLERANCE_FLOOR = 0.5  # accuracy points
KEY_COLUMNS = ["method", "task_set", "n_way", "k_shot"]


@dataclass(frozen=True)
class Count:
    correct: int
    queries: int

    @property
    def accuracy(self) -> float:
        """In percent."""
        return 100.0 * self.correct / self.queries if self.queries else math.nan

    def __str__(self) -> str:
        return f"{self.accuracy:.2f}% ({self.correct}/{self.queries})"


@dataclass
class SmokeRun:
    records: pd.DataFrame  # method, task_set, n_way, k_shot, episode, query, predicted, correct
    failures: dict[str, str]  # method -> why it failed

    def counts(self) -> dict[tuple, Count]:
        """(method, task set, N, k) -> correct answers and queries."""
        grouped = self.records.groupby(KEY_COLUMNS, sort=False)["correct"].agg(["sum", "count"])
        return {(str(m), str(t), int(n), int(k)): Count(int(row["sum"]), int(row["count"]))
                for (m, t, n, k), row in grouped.iterrows()}


@contextlib.contextmanager
def deterministic_cpu(threads: int):
    """Deterministic torch kernels and a fixed thread count, restored afterwards."""
    previous = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
                torch.is_deterministic_algorithms_warn_only_enabled())
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(previous[0])
        torch.use_deterministic_algorithms(previous[1], warn_only=previous[2])


def run_smoke(config, method_names: list[str], data, task_sets, threads: int = RUN_THREADS,
              log=None) -> SmokeRun:
    """Run the methods through the runner on the CPU into a temporary folder; keep the records.

    Checkpoints go to that folder too, so trained methods always train: the check covers
    training code, not just cached weights.
    """
    from benchmark.runner import RunOptions, run_benchmark

    with tempfile.TemporaryDirectory(prefix="oneshot-regression-") as temporary:
        out_dir = Path(temporary) / "run"
        options = RunOptions(device="cpu", retrain=True, progress=False,
                             checkpoint_dir=Path(temporary) / "checkpoints", log=log or (lambda _: None))
        with deterministic_cpu(threads):
            outcome = run_benchmark(config, list(method_names), data, task_sets, out_dir, options)
        columns = [*KEY_COLUMNS, "episode", "query", "predicted", "correct"]
        folder = RunFolder(out_dir)
        records = folder.read_records()[columns] if folder.has_records() else pd.DataFrame(columns=columns)
    return SmokeRun(records, dict(outcome.failures))


def flips(first: SmokeRun, second: SmokeRun) -> dict[tuple, int]:
    """(method, task set, N, k) -> how many queries got another prediction in the second run."""
    on = [*KEY_COLUMNS, "episode", "query"]
    both = first.records.merge(second.records, on=on, suffixes=("", "_other"))
    changed = (both["predicted"] != both["predicted_other"]).groupby(
        [both[c] for c in KEY_COLUMNS], sort=False).sum()
    return {(str(m), str(t), int(n), int(k)): int(v) for (m, t, n, k), v in changed.items()}


def row_tolerance(flips: int, queries: int, measured_delta: float) -> float:
    """The tolerance of one row of a method that is not exact, in accuracy points (rounded up)."""
    spread = Z_SCORE * 100.0 * math.sqrt(flips) / queries
    tolerance = max(TOLERANCE_FLOOR, spread, TOLERANCE_FACTOR * abs(measured_delta))
    return math.ceil(round(tolerance * 100, 6)) / 100


def tolerance_rule(exact: bool, flips_total: int, queries_total: int) -> str:
    measured = (f"{flips_total} of {queries_total} predictions changed between {RUN_THREADS} and "
                f"{PROBE_THREADS} torch threads")
    if exact:
        return f"exact: untrained and deterministic; {measured}"
    return (f"per row: max({TOLERANCE_FLOOR:g}, {Z_SCORE:g} x 100 x sqrt(flips) / queries, "
            f"{TOLERANCE_FACTOR:g} x |accuracy - probe accuracy|) points (see benchmark/regression.py); "
            f"{measured}")


def measure(config, method_names: list[str], data, task_sets, command: str, commit: str | None,
            log=None) -> tuple[dict, dict[str, str]]:
    """Golden entries {method: entry} for the methods that ran, and {method: failure}."""
    log = log or (lambda _: None)
    log(f"running {', '.join(method_names)} with {RUN_THREADS} threads")
    main = run_smoke(config, method_names, data, task_sets, RUN_THREADS, log)
    log(f"running them again with {PROBE_THREADS} thread, to count predictions that change")
    probe = run_smoke(config, method_names, data, task_sets, PROBE_THREADS, log)
    counts, probe_counts, changed = main.counts(), probe.counts(), flips(main, probe)
    failures = {**probe.failures, **main.failures}
    entries = {}
    for name in method_names:
        if name in failures:
            continue
        keys = [key for key in counts if key[0] == name]
        capabilities = registry.get_method(name).capabilities
        own_flips = {key: changed.get(key, 0) for key in keys}
        exact = (not capabilities.needs_training and capabilities.deterministic
                 and not any(own_flips.values()))
        rows = []
        for key in keys:
            count, other = counts[key], probe_counts[key]
            tolerance = 0.0 if exact else row_tolerance(own_flips[key], count.queries,
                                                        count.accuracy - other.accuracy)
            _, task_set, n_way, k_shot = key
            rows.append({"task_set": task_set, "n_way": n_way, "k_shot": k_shot,
                         "correct": count.correct, "queries": count.queries,
                         "accuracy": round(count.accuracy, 2), "tolerance": tolerance,
                         "flips": own_flips[key], "probe_correct": other.correct})
        entries[name] = {
            "command": command, "commit": commit, "params": _plain(config.methods.get(name, {})),
            "needs_training": capabilities.needs_training, "exact": exact,
            "tolerance_rule": tolerance_rule(exact, sum(own_flips.values()),
                                             sum(counts[key].queries for key in keys)),
            "results": rows,
        }
    return entries, failures


# ---- comparing ---------------------------------------------------------------------------

@dataclass(frozen=True)
class RowCheck:
    method: str
    task_set: str
    n_way: int
    k_shot: int
    golden: Count | None
    now: Count | None
    tolerance: float  # accuracy points; 0 means the integers must be equal

    @property
    def delta(self) -> float | None:
        """Accuracy now minus golden, in points."""
        return None if self.golden is None or self.now is None else self.now.accuracy - self.golden.accuracy

    @property
    def status(self) -> str:
        if self.now is None:
            return "missing"
        if self.golden is None:
            return "no baseline"
        if self.now.queries != self.golden.queries:
            return "other queries"
        if self.tolerance == 0:
            return "ok" if self.now.correct == self.golden.correct else "MOVED"
        # A hair of slack so that a delta exactly at the tolerance passes despite float rounding.
        return "ok" if abs(self.delta) <= self.tolerance + 1e-9 else "MOVED"


@dataclass
class Comparison:
    rows: list[RowCheck]
    problems: list[str]  # what is wrong beyond single rows: failures, other episodes or params

    @property
    def ok(self) -> bool:
        return not self.problems and all(row.status == "ok" for row in self.rows)

    def report(self) -> str:
        """The problems and a table of the rows that moved (all rows when nothing did)."""
        failing = [row for row in self.rows if row.status != "ok"]
        lines = [f"problem: {problem}" for problem in self.problems]
        if failing:
            lines.append(f"{len(failing)} of {len(self.rows)} rows differ from the baseline:")
        lines.append(format_table(failing or self.rows))
        return "\n".join(lines)


def compare(baseline: dict, run: SmokeRun, method_names: list[str], config, task_sets) -> Comparison:
    """Check each method's rows against its golden entry; report every difference."""
    problems = [f"method {name} failed: {reason}" for name, reason in run.failures.items()]
    if baseline.get("episodes") != task_set_hashes(task_sets):
        problems.append("the frozen episodes are not those the baseline was made on: refreeze "
                        "or restore tasks/frozen, or run update-baselines")
    counts = run.counts()
    rows = []
    for name in method_names:
        entry = baseline.get("methods", {}).get(name)
        now = {key: count for key, count in counts.items() if key[0] == name}
        if entry is None:
            problems.append(f"method {name} has no baseline: add it with `python run_benchmark.py "
                            f"update-baselines --methods {name}`")
            continue
        if entry["params"] != _plain(config.methods.get(name, {})):
            problems.append(f"method {name} runs with {_plain(config.methods.get(name, {}))}, its "
                            f"baseline was made with {entry['params']}: run update-baselines")
        golden = {(name, r["task_set"], r["n_way"], r["k_shot"]): r for r in entry["results"]}
        for key in [*golden, *(key for key in now if key not in golden)]:
            row = golden.get(key)
            count = Count(row["correct"], row["queries"]) if row else None
            tolerance = 0.0 if entry["exact"] or row is None else float(row["tolerance"])
            rows.append(RowCheck(*key, count, now.get(key), tolerance))
    return Comparison(rows, problems)


def format_table(rows: list[RowCheck]) -> str:
    header = ("method", "task set", "N", "k", "golden", "now", "delta", "tolerance", "status")
    body = [(row.method, row.task_set, row.n_way, row.k_shot,
             str(row.golden) if row.golden else "-", str(row.now) if row.now else "-",
             f"{row.delta:+.2f}" if row.delta is not None else "-",
             "exact" if row.tolerance == 0 else f"±{row.tolerance:g}", row.status) for row in rows]
    return text_table(header, body, right={2, 3, 6})


# ---- the golden file ---------------------------------------------------------------------

def read_baseline(path: Path) -> dict:
    try:
        baseline = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"no baselines at {path}: create them with `python run_benchmark.py "
                          f"update-baselines`") from None
    except (OSError, ValueError) as error:
        raise ConfigError(f"baseline file {path} is unreadable ({error}): restore it from git") from None
    if not isinstance(baseline, dict) or baseline.get("format") != BASELINE_FORMAT:
        raise ConfigError(f"{path} is not a baseline file of format {BASELINE_FORMAT!r}")
    return baseline


def updated_baseline(old: dict | None, entries: dict, config_source: str, task_sets,
                     method_names: list[str], keep_others: bool) -> dict:
    """The new golden file: `entries` replace those methods' entries.

    A method that failed (not in `entries`) keeps its old entry; methods not asked for are
    kept if `keep_others` (a run of some methods), else dropped (they left the config).
    """
    previous = dict((old or {}).get("methods", {}))
    methods = {name: entry for name, entry in previous.items() if keep_others}
    for name in method_names:
        if name in entries or name in previous:
            methods[name] = entries.get(name, previous.get(name))
    return {"format": BASELINE_FORMAT, "config": config_source, "threads": RUN_THREADS,
            "episodes": task_set_hashes(task_sets), "methods": methods}


def diff_lines(old: dict | None, new: dict) -> list[str]:
    """One line per row or setting that changed (old -> new), then how many rows did not."""
    old_methods = (old or {}).get("methods", {})
    lines, unchanged = [], 0
    if old and old.get("episodes") != new["episodes"]:
        lines.append("episodes: the frozen episodes changed")
    for name in sorted(set(old_methods) - set(new["methods"])):
        lines.append(f"{name}: removed")
    for name, entry in new["methods"].items():
        before = old_methods.get(name)
        if before is None:
            lines.append(f"{name}: new ({len(entry['results'])} rows)")
            continue
        for field in ("params", "exact"):
            if before.get(field) != entry[field]:
                lines.append(f"{name} {field}: {before.get(field)} -> {entry[field]}")
        old_rows = {_row_key(r): r for r in before["results"]}
        for row in entry["results"]:
            was = old_rows.pop(_row_key(row), None)
            label = f"{name} {row['task_set']} {row['n_way']}-way {row['k_shot']}-shot"
            if was is None:
                lines.append(f"{label}: new {Count(row['correct'], row['queries'])}")
            elif (was["correct"], was["queries"]) != (row["correct"], row["queries"]):
                old_count, new_count = Count(was["correct"], was["queries"]), Count(row["correct"], row["queries"])
                lines.append(f"{label}: {old_count} -> {new_count} "
                             f"({new_count.accuracy - old_count.accuracy:+.2f} points)")
            elif was.get("tolerance") != row.get("tolerance"):
                lines.append(f"{label}: tolerance {was.get('tolerance')} -> {row.get('tolerance')} points")
            else:
                unchanged += 1
        lines += [f"{name} {r['task_set']} {r['n_way']}-way {r['k_shot']}-shot: removed" for r in old_rows.values()]
    lines.append(f"{unchanged} rows unchanged")
    return lines


def write_baseline(path: Path, baseline: dict) -> None:
    """Write atomically, one result row a line, so that reviews see which numbers moved."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(baseline, indent=1, ensure_ascii=False)
    for entry in baseline["methods"].values():
        for row in entry["results"]:
            expanded = json.dumps(row, indent=1).replace("\n", "\n" + " " * 4)
            text = text.replace(expanded, json.dumps(row), 1)
    write_atomically(path, text + "\n")


def _row_key(row: dict) -> tuple:
    return (row["task_set"], row["n_way"], row["k_shot"])


def _plain(params) -> dict:
    return json.loads(json.dumps(dict(params), default=str))
