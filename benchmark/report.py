"""Tables and plots of a run, rebuilt from its saved `records.csv` alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.errors import ConfigError
from benchmark.stats import summarize

RECORD_DTYPES = {"run_id": str, "method": str, "seed": np.int64, "task_set": str, "split": str,
                 "protocol": str, "n_way": np.int64, "k_shot": np.int64, "episode": np.int64,
                 "query": np.int64, "label": np.int64, "predicted": np.int64, "correct": np.int8}


def read_records(run_dir: Path, log=None) -> pd.DataFrame:
    """The records of a run, after checking them against the chunk hashes in its run.json.

    Records that were truncated or edited since the run wrote them are refused (RunFolderError,
    naming the file). Rows after the last chunk listed in run.json (an append cut short) are
    left out. A records.csv without run.json is read unchecked, and `log` says so.
    """
    import io
    import sys

    from benchmark.run_folder import read_manifest, verify_records

    log = log or (lambda message: print(message, file=sys.stderr))
    run_dir = Path(run_dir)
    path = run_dir / "records.csv"
    if not path.exists():
        raise ConfigError(f"{path} not found: give a run folder written by run_benchmark.py")
    if (run_dir / "run.json").exists():
        content, unlisted = verify_records(run_dir, read_manifest(run_dir))
        if not content:
            raise ConfigError(f"{path} holds no finished records yet: resume the run with "
                              f"`python run_benchmark.py --resume {run_dir}`")
        if unlisted:
            log(f"note: {path} ends with {unlisted} bytes of an unfinished chunk, left out; "
                f"resume the run to complete it")
        source = io.BytesIO(content)
    else:
        log(f"note: {run_dir / 'run.json'} not found: the records in {path} cannot be checked "
            f"against their hashes")
        source = path
    try:
        records = pd.read_csv(source, dtype=RECORD_DTYPES)
    except (ValueError, pd.errors.ParserError) as error:
        raise ConfigError(f"{path} is malformed ({str(error).splitlines()[0]}): rerun into that "
                          f"folder to resume, or start a new one") from None
    missing = set(RECORD_DTYPES) - set(records.columns)
    if missing:
        raise ConfigError(f"{path} lacks the columns {', '.join(sorted(missing))}")
    return records


def write_report(run_dir: Path, records: pd.DataFrame | None = None, resamples: int = 2000,
                 confidence: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Write summary.csv, summary.md and accuracy_vs_n.png/.svg into `run_dir`; return the summary."""
    run_dir = Path(run_dir)
    records = read_records(run_dir) if records is None else records
    summary = summarize(records, resamples, confidence, seed)
    summary.to_csv(run_dir / "summary.csv", index=False, float_format="%.6f")
    (run_dir / "summary.md").write_text(summary_markdown(summary, confidence), encoding="utf-8")
    plot_accuracy_vs_n(summary, run_dir / "accuracy_vs_n", confidence)
    return summary


def _cell(row) -> str:
    return f"{100 * row.accuracy:.1f} [{100 * row.ci_low:.1f}, {100 * row.ci_high:.1f}]"


def summary_markdown(summary: pd.DataFrame, confidence: float = 0.95) -> str:
    """One table per task set: rows N, columns methods, cells accuracy % [CI]."""
    level = f"{100 * confidence:g}%"
    lines = ["# Results", "",
             f"Accuracy in % over all queries, with the {level} percentile-bootstrap interval over "
             f"episodes in brackets. Chance is 100/N %.", ""]
    for (task_set, split, protocol, k_shot), table in summary.groupby(
            ["task_set", "split", "protocol", "k_shot"], sort=False):
        methods = list(dict.fromkeys(table["method"]))
        episodes = sorted(set(table["episodes"]))
        lines += [f"## {task_set} ({protocol}, {split} alphabets, {k_shot}-shot, "
                  f"{'/'.join(map(str, episodes))} episodes per N)", "",
                  "| N | chance | " + " | ".join(methods) + " |",
                  "|---:|---:|" + "---:|" * len(methods)]
        for n_way, row_group in table.groupby("n_way", sort=True):
            cells = {row.method: _cell(row) for row in row_group.itertuples()}
            lines.append(f"| {n_way} | {100 / n_way:.1f} | "
                         + " | ".join(cells.get(m, "") for m in methods) + " |")
        lines.append("")
    return "\n".join(lines)


def plot_accuracy_vs_n(summary: pd.DataFrame, stem: Path, confidence: float = 0.95) -> list[Path]:
    """Accuracy against N: a line per method and task set, CI bands, the chance line 1/N."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed; must come before pyplot
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(summary["method"]))
    colors = dict(zip(methods, plt.get_cmap("tab10").colors))
    styles = ["-", "--", ":", "-."]
    curves = summary[summary.groupby(["task_set", "k_shot"])["n_way"].transform("nunique") > 1]
    points = summary.drop(curves.index)
    task_sets = list(dict.fromkeys(curves["task_set"]))
    fig, ax = plt.subplots(figsize=(8, 5), dpi=150)
    for (method, task_set, k_shot), curve in curves.groupby(["method", "task_set", "k_shot"], sort=False):
        curve = curve.sort_values("n_way")
        style = styles[task_sets.index(task_set) % len(styles)]
        shot = f", {k_shot}-shot" if curves["k_shot"].nunique() > 1 else ""
        ax.plot(curve["n_way"], 100 * curve["accuracy"], style, color=colors[method], marker=".",
                label=f"{method} · {task_set}{shot}")
        ax.fill_between(curve["n_way"], 100 * curve["ci_low"], 100 * curve["ci_high"],
                        color=colors[method], alpha=0.15, linewidth=0)
    for row in points.itertuples():
        ax.errorbar(row.n_way, 100 * row.accuracy, fmt="D", color=colors[row.method], markersize=5,
                    yerr=[[100 * (row.accuracy - row.ci_low)], [100 * (row.ci_high - row.accuracy)]],
                    capsize=3, label=f"{row.method} · {row.task_set}")
    n_values = np.arange(2, max(summary["n_way"].max(), 2) + 1)
    ax.plot(n_values, 100 / n_values, color="grey", linewidth=1, label="chance (1/N)")
    ax.set_xlabel("number of ways N (classes per episode)")
    ax.set_ylabel(f"accuracy (%), {100 * confidence:g}% CI bands")
    ax.set_ylim(0, 100)
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    ax.set_title("One-shot accuracy on Omniglot against N")
    ax.legend(fontsize=7, ncol=2, loc="upper right", framealpha=0.9)
    fig.tight_layout()
    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    for path in paths:
        fig.savefig(path)
    plt.close(fig)
    return paths
