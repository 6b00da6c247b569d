"""summary.md: a report's tables as Markdown (accuracy with intervals, seed spread, paired
differences) and the runs they come from."""

from __future__ import annotations

import pandas as pd

from tasks.protocols import SPLIT_DESCRIPTIONS

def _cell(row) -> str:
    return f"{100 * row.accuracy:.1f} [{100 * row.ci_low:.1f}, {100 * row.ci_high:.1f}]"


def _task_tables(frame: pd.DataFrame):
    """(heading, rows of one task set) in the order of the frame."""
    for (task_set, split, protocol, k_shot), table in frame.groupby(
            ["task_set", "split", "protocol", "k_shot"], sort=False):
        yield f"{task_set} ({protocol}, {SPLIT_DESCRIPTIONS.get(split, split)}, {k_shot}-shot", table


def summary_markdown(summary: pd.DataFrame, confidence: float, paired: pd.DataFrame | None = None,
                     runs: list = ()) -> str:
    """Accuracy tables (rows N, columns methods), seed spread, paired differences, the runs."""
    level = f"{100 * confidence:g}%"
    seeded = summary["seeds"] > 1
    lines = ["# Results", "",
             f"Accuracy in % over all queries, with the {level} percentile-bootstrap interval over "
             f"episodes in brackets. Chance is 100/N %."
             + (" A method trained with several seeds shows the mean over seeds; the interval "
                "is over episodes, the spread across seeds is in its own table below."
                if seeded.any() else "")
             + (" Methods marked (transductive) score a query with the other queries of its episode "
                "too; their accuracy is not comparable with the others'."
                if summary["method"].astype(str).str.endswith("(transductive)").any() else ""), ""]
    lines += _incomplete_lines(runs)
    for heading, table in _task_tables(summary):
        methods = list(dict.fromkeys(table["method"]))
        episodes = sorted(set(table["episodes"]))
        names = [f"{m} ({table[table.method == m].seeds.max()} seeds)"
                 if table[table.method == m].seeds.max() > 1 else m for m in methods]
        lines += [f"## {heading}, {'/'.join(map(str, episodes))} episodes per N)", "",
                  "| N | chance | " + " | ".join(names) + " |",
                  "|---:|---:|" + "---:|" * len(methods)]
        for n_way, row_group in table.groupby("n_way", sort=True):
            cells = {row.method: _cell(row) for row in row_group.itertuples()}
            lines.append(f"| {n_way} | {100 / n_way:.1f} | "
                         + " | ".join(cells.get(m, "") for m in methods) + " |")
        lines.append("")
    if seeded.any():
        lines += _seed_lines(summary[seeded])
    if paired is not None and len(paired):
        lines += _paired_lines(paired, level)
    if runs:
        lines += _run_lines(runs)
    return "\n".join(lines)


def _seed_lines(seeded: pd.DataFrame) -> list[str]:
    lines = ["# Spread across training seeds", "",
             "Each method trained once per seed and evaluated on the same episodes: the standard "
             "deviation of the per-seed accuracies, and their minimum and maximum, in %. This is "
             "the uncertainty of training; the episode interval above is the uncertainty of the "
             "test episodes.", ""]
    for heading, table in _task_tables(seeded):
        methods = list(dict.fromkeys(table["method"]))
        lines += [f"## {heading})", "", "| N | " + " | ".join(
            f"{m} ({table[table.method == m].seeds.max()} seeds)" for m in methods) + " |",
            "|---:|" + "---:|" * len(methods)]
        for n_way, row_group in table.groupby("n_way", sort=True):
            cells = {row.method: f"sd {100 * row.seed_std:.1f}, {100 * row.seed_min:.1f}–"
                                 f"{100 * row.seed_max:.1f}" for row in row_group.itertuples()}
            lines.append(f"| {n_way} | " + " | ".join(cells.get(m, "") for m in methods) + " |")
        lines.append("")
    return lines


def _paired_lines(paired: pd.DataFrame, level: str) -> list[str]:
    significant = int(paired["significant"].sum())
    lines = ["# Paired differences", "",
             f"Accuracy of A minus accuracy of B, in points, on the same episodes. **Bold**: the "
             f"{level} paired bootstrap interval excludes 0 ({significant} of {len(paired)} "
             f"differences). No correction for multiple comparisons: among many differences that "
             f"are truly 0, about 1 in 20 is bold by chance. `paired.csv` has every interval and "
             f"an exact McNemar p-value on the first query of each episode.", ""]
    for heading, table in _task_tables(paired):
        pairs = list(dict.fromkeys(zip(table["method_a"], table["method_b"])))
        lines += [f"## {heading})", "", "| N | " + " | ".join(f"{a} − {b}" for a, b in pairs) + " |",
                  "|---:|" + "---:|" * len(pairs)]
        for n_way, row_group in table.groupby("n_way", sort=True):
            cells = {}
            for row in row_group.itertuples():
                value = f"{100 * row.difference:+.1f}"
                cells[(row.method_a, row.method_b)] = f"**{value}**" if row.significant else value
            lines.append(f"| {n_way} | " + " | ".join(cells.get(pair, "") for pair in pairs) + " |")
        lines.append("")
    return lines


def _incomplete_lines(runs) -> list[str]:
    """A warning, first thing, when a run has not finished what it was asked for."""
    lines = []
    for run in runs:
        missing = run.manifest.missing()
        if missing:
            lines += [f"**Incomplete run** `{run.manifest.run_id}`: the tables below leave out what it has not "
                      f"finished; resume it with `python run_benchmark.py --resume {run.path}`.", ""]
            lines += [f"- {line}" for line in missing] + [""]
    return lines


def _run_lines(runs) -> list[str]:
    lines = ["# Runs", ""]
    for run in runs:
        environment = run.manifest.environment
        device = environment.device if not environment.gpu else f"{environment.device} ({environment.gpu})"
        label = f" — shown as ({run.label})" if run.label else ""
        lines.append(f"- `{run.manifest.run_id}`{label}: commit {environment.git_commit}, device {device}, "
                     f"{environment.cpu_count} CPUs, {environment.platform}, torch "
                     f"{environment.versions.get('torch')}, seeds {run.manifest.seeds}, started {run.manifest.started}")
    lines.append("")
    return lines
