"""What `run` and `report` print when they finish: aligned tables made for a terminal (the
Markdown of summary.md is for files), the paired differences with their intervals, each
method's times, and the files the report folder holds."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from benchmark.text_table import text_table
from tasks.protocols import SPLIT_DESCRIPTIONS

PAIRED_N = 20  # the N whose paired differences are printed (else each task set's largest)
FILE_KINDS = {"tables": (".md", ".csv", ".tex"), "figures": (".png", ".svg")}
RECORD_FOLDERS = ("records", "episodes")  # benchmark/run_folder.py's layout


def terminal_summary(summary: pd.DataFrame, paired: pd.DataFrame, runs: list, folder: Path) -> str:
    """Accuracy per task set, paired differences at one N, times per method, and the files."""
    blocks = [_accuracy_tables(summary), _paired_table(paired), _times_table(runs), _files(folder)]
    return "\n\n".join(block for block in blocks if block)


def _accuracy_tables(summary: pd.DataFrame) -> str:
    blocks = []
    for (task_set, split, protocol, k_shot), table in summary.groupby(
            ["task_set", "split", "protocol", "k_shot"], sort=False):
        methods = list(dict.fromkeys(table["method"]))
        episodes = "/".join(map(str, sorted(set(table["episodes"]))))
        rows = []
        for n_way, group in table.groupby("n_way", sort=True):
            cells = {row.method: _accuracy(row) for row in group.itertuples()}
            rows.append([n_way, f"{100 / n_way:.1f}", *(cells.get(m, "") for m in methods)])
        title = (f"{task_set} ({protocol}, {SPLIT_DESCRIPTIONS.get(split, split)}, {k_shot}-shot, "
                 f"{episodes} episodes per N): "
                 f"accuracy in % [95% interval over episodes]")
        blocks.append(title + "\n" + text_table(["N", "chance", *methods], rows, right=range(len(methods) + 2)))
    return "\n\n".join(blocks)


def _paired_table(paired: pd.DataFrame) -> str:
    """At N = PAIRED_N (else the task set's largest N): A − B in points with the paired interval."""
    if paired is None or not len(paired):
        return ""
    rows = []
    for (task_set, k_shot), table in paired.groupby(["task_set", "k_shot"], sort=False):
        n_way = PAIRED_N if PAIRED_N in set(table["n_way"]) else int(table["n_way"].max())
        for row in table[table.n_way == n_way].itertuples():
            rows.append([task_set, n_way, k_shot, f"{row.method_a} − {row.method_b}", f"{100 * row.difference:+.1f}",
                         f"[{100 * row.ci_low:+.1f}, {100 * row.ci_high:+.1f}]", "yes" if row.significant else "no",
                         f"{row.mcnemar_p:.2g}"])
    header = ["task set", "N", "k", "A − B", "points", "95% paired interval", "excludes 0", "McNemar p"]
    return ("paired differences (every N in paired.csv and summary.md)\n"
            + text_table(header, rows, right={1, 2, 4, 5, 7}))


def _times_table(runs: list) -> str:
    """Fit and predict seconds per method and seed; the parts methods share, timed apart."""
    rows = []
    for run in runs:
        for name, entry in run.manifest.methods.items():
            for key, timing in entry.timing.items():
                seed, _, training_split = key.partition("/")
                rows.append([run.shown.get(name, name), seed, training_split, f"{timing['fit_seconds']:.1f}",
                             timing.get("weights", ""), f"{timing['predict_seconds']:.1f}",
                             f"{timing['peak_rss_mb']:.0f}"])
        for key, component in run.manifest.components.items():
            rows.append([f"shared: {key}, built for {component['built_during']}", "", "",
                         f"{component['seconds']:.1f}", "", "", ""])
    if not rows:
        return ""
    # weights: trained in this run, loaded from the checkpoint cache, or shipped with the project (weights/)
    return "times\n" + text_table(["method", "seed", "fitted on", "fit s", "weights", "predict s", "peak RSS MB"],
                                   rows, right={1, 3, 5, 6})


def _files(folder: Path) -> str:
    folder = Path(folder)
    names = sorted(path.name for path in folder.iterdir() if path.is_file() and not path.name.startswith("."))
    lines = [f"in {folder}:"]
    for kind, suffixes in FILE_KINDS.items():
        chosen = [name for name in names if name.endswith(suffixes)]
        if chosen:
            lines.append(f"  {kind}: {', '.join(chosen)}")
    records = ["run.json"] if "run.json" in names else []
    records += [f"{name}/ ({sum(1 for _ in (folder / name).iterdir())} files)" for name in RECORD_FOLDERS
                if (folder / name).is_dir()]
    if records:
        lines.append(f"  records: {', '.join(records)}")
    return "\n".join(lines)


def _accuracy(row) -> str:
    return f"{100 * row.accuracy:.1f} [{100 * row.ci_low:.1f}, {100 * row.ci_high:.1f}]"
