"""Tables and plots of a run, or of several runs merged, rebuilt from their saved files alone.

A report folder gets `summary.csv` (accuracy, intervals, seed spread), `paired.csv` (every
pair of methods on the same episodes), `summary.md` (both as readable tables, and the runs
they come from) and `accuracy_vs_n.png`/`.svg` (benchmark/plots.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.errors import ConfigError
from benchmark.stats import paired_differences, summarize

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


def run_info(run_dir: Path) -> dict | None:
    """What the report says about a run, from its run.json (None when there is none)."""
    from benchmark.run_folder import read_manifest

    run_dir = Path(run_dir)
    if not (run_dir / "run.json").exists():
        return None
    manifest = read_manifest(run_dir)
    environment = manifest.get("environment") or {}
    config = manifest.get("config") or {}
    return {
        "dir": str(run_dir), "run_id": str(manifest.get("run_id", run_dir.name)),
        "git_commit": environment.get("git_commit"), "device": environment.get("device"),
        "gpu": environment.get("gpu"), "platform": environment.get("platform"),
        "cpu_count": environment.get("cpu_count"),
        "torch": (environment.get("versions") or {}).get("torch"),
        "started": manifest.get("started"), "seeds": manifest.get("seeds"),
        "task_sets": manifest.get("task_sets") or {}, "data": manifest.get("data") or {},
        "stats": config.get("stats") or {},
        # the order the config lists them in: the order of the report's tables
        "task_set_order": list(config.get("task_sets") or {}),
        "method_order": list(config.get("methods") or {}),
        # name in the records -> whether it trains (untrained methods are the reference lines)
        "methods": {name: bool((entry.get("capabilities") or {}).get("needs_training", True))
                    for name, entry in (manifest.get("methods") or {}).items()},
    }


def merge_runs(run_dirs: list[Path], log=None) -> tuple[pd.DataFrame, list[dict]]:
    """The records of several runs as one table, and each run's info.

    Runs are merged only when they hold the same episodes under every task-set name they
    share (run.json's task-set hashes) on the same data. A method found in several runs
    is told apart by a run label: `name (cpu)`, `name (cuda)`, or the run id when devices
    repeat.
    """
    paths = [Path(d) for d in run_dirs]
    if len({path.resolve() for path in paths}) < len(paths):
        raise ConfigError("the same run folder is given twice: name each run once")
    frames = [read_records(path, log) for path in paths]
    infos = [run_info(path) for path in paths]
    if len(paths) == 1:
        return frames[0], [info for info in infos if info is not None]
    for path, info in zip(paths, infos):
        if info is None:
            raise ConfigError(f"{path / 'run.json'} not found: without it the episodes of {path} "
                              f"cannot be checked against the other runs', so it is not merged")
    _check_same_episodes(infos)
    labels = _run_labels(infos)
    runs_of = {}
    for frame in frames:
        for method in dict.fromkeys(frame["method"]):
            runs_of[method] = runs_of.get(method, 0) + 1
    for frame, info, label in zip(frames, infos, labels):
        renamed = {m: f"{m} ({label})" for m in dict.fromkeys(frame["method"]) if runs_of[m] > 1}
        frame["method"] = frame["method"].replace(renamed)
        info["label"] = label
        info["methods"] = {renamed.get(name, name): trains for name, trains in info["methods"].items()}
    return pd.concat(frames, ignore_index=True), infos


def _check_same_episodes(infos: list[dict]) -> None:
    first = infos[0]
    for other in infos[1:]:
        for split in ("background_sha256", "evaluation_sha256"):
            if first["data"].get(split) != other["data"].get(split):
                raise ConfigError(f"runs {first['dir']} and {other['dir']} used different Omniglot "
                                  f"data ({split.split('_')[0]} split): they cannot be merged")
        for key in sorted(set(first["task_sets"]) & set(other["task_sets"])):
            if first["task_sets"][key] != other["task_sets"][key]:
                raise ConfigError(f"runs {first['dir']} and {other['dir']} hold different episodes "
                                  f"for task set {key}: merge only runs of the same task-set config")
        if not set(first["task_sets"]) & set(other["task_sets"]):
            raise ConfigError(f"runs {first['dir']} and {other['dir']} share no task set: "
                              f"there is nothing to compare")


def _run_labels(infos: list[dict]) -> list[str]:
    """The device of each run, or its run id where devices repeat, or its position."""
    for labels in ([str(i["device"]) for i in infos], [i["run_id"] for i in infos]):
        if len(set(labels)) == len(labels):
            return labels
    return [f"run {position + 1}" for position in range(len(infos))]


def report_runs(run_dirs: list[Path], out_dir: Path, log=None, stats: dict | None = None) -> pd.DataFrame:
    """Read one or more run folders, merge them, write the report into out_dir.

    `stats` (resamples, confidence, seed) defaults to the first run's config.
    """
    from benchmark.run_folder import staged_outputs

    records, infos = merge_runs(run_dirs, log)
    if stats is None:
        stats = infos[0]["stats"] if infos else {}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with staged_outputs(out_dir) as staging:  # each file appears whole or not at all
        return write_report(staging, records, resamples=int(stats.get("resamples", 2000)),
                            confidence=float(stats.get("confidence", 0.95)),
                            seed=int(stats.get("seed", 0)), runs=infos)


def write_report(run_dir: Path, records: pd.DataFrame | None = None, resamples: int = 2000,
                 confidence: float = 0.95, seed: int = 0, runs: list[dict] | None = None) -> pd.DataFrame:
    """Write summary.csv, paired.csv, summary.md and accuracy_vs_n.png/.svg; return the summary.

    `runs` (from `run_info`) name the runs in summary.md and say which methods are untrained
    references; without it, `run_dir`'s own run.json is used when there is one.
    """
    from benchmark.plots import plot_accuracy_vs_n

    run_dir = Path(run_dir)
    runs = [run_info(run_dir)] if runs is None else runs
    runs = [info for info in runs if info is not None]
    records = read_records(run_dir) if records is None else records
    summary = _in_config_order(summarize(records, resamples, confidence, seed), runs)
    paired = _in_config_order(paired_differences(records, resamples, confidence, seed), runs)
    summary.to_csv(run_dir / "summary.csv", index=False, float_format="%.6f")
    # p-values go down to 1e-300: four significant digits, not six decimals that round them to 0.
    paired.assign(mcnemar_p=paired["mcnemar_p"].map("{:.4g}".format)).to_csv(
        run_dir / "paired.csv", index=False, float_format="%.6f")
    text = summary_markdown(summary, confidence, paired, runs)
    (run_dir / "summary.md").write_text(text, encoding="utf-8")
    references = {name for info in runs for name, trains in info["methods"].items() if not trains}
    plot_accuracy_vs_n(summary, run_dir / "accuracy_vs_n", confidence, references)
    return summary


def _in_config_order(frame: pd.DataFrame, runs: list[dict]) -> pd.DataFrame:
    """Rows by task set, then N, then method (summary rows only; paired rows keep their pairs'
    order), task sets and methods in the order the runs' configs list them (first run first).

    A merged method `name (label)` goes where `name` does, its runs in their order. Names no
    config lists (and all names, for a run without run.json) come after, alphabetically.
    """
    task_order = list(dict.fromkeys(name for info in runs for name in info.get("task_set_order", ())))
    method_order = list(dict.fromkeys(name for info in runs for name in info.get("method_order", ())))
    labels = [info["label"] for info in runs if info.get("label")]

    def method_key(name: str) -> tuple:
        base, _, label = name.partition(" (")  # method names are identifiers: no " (" in them
        label = label.removesuffix(")")
        return (_position(method_order, base), base, _position(labels, label), name)

    tasks = sorted(set(frame["task_set"]), key=lambda name: (_position(task_order, name), name))
    columns = {"_task_rank": frame["task_set"].map({name: i for i, name in enumerate(tasks)})}
    by = ["_task_rank", "n_way"]
    if "method" in frame.columns:
        methods = sorted(set(frame["method"]), key=method_key)
        columns["_method_rank"] = frame["method"].map({name: i for i, name in enumerate(methods)})
        by.append("_method_rank")
    return (frame.assign(**columns).sort_values(by, kind="stable")
            .drop(columns=list(columns)).reset_index(drop=True))


def _position(order: list[str], name: str) -> int:
    return order.index(name) if name in order else len(order)


def _cell(row) -> str:
    return f"{100 * row.accuracy:.1f} [{100 * row.ci_low:.1f}, {100 * row.ci_high:.1f}]"


def _task_tables(frame: pd.DataFrame):
    """(heading, rows of one task set) in the order of the frame."""
    for (task_set, split, protocol, k_shot), table in frame.groupby(
            ["task_set", "split", "protocol", "k_shot"], sort=False):
        yield f"{task_set} ({protocol}, {split} alphabets, {k_shot}-shot", table


def summary_markdown(summary: pd.DataFrame, confidence: float = 0.95,
                     paired: pd.DataFrame | None = None, runs: list[dict] = ()) -> str:
    """Accuracy tables (rows N, columns methods), seed spread, paired differences, the runs."""
    level = f"{100 * confidence:g}%"
    seeded = summary["seeds"] > 1
    lines = ["# Results", "",
             f"Accuracy in % over all queries, with the {level} percentile-bootstrap interval over "
             f"episodes in brackets. Chance is 100/N %."
             + (" A method trained with several seeds shows the mean over seeds; the interval "
                "is over episodes, the spread across seeds is in its own table below."
                if seeded.any() else ""), ""]
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


def _run_lines(runs: list[dict]) -> list[str]:
    lines = ["# Runs", ""]
    for info in runs:
        device = info["device"] if not info.get("gpu") else f"{info['device']} ({info['gpu']})"
        label = f" — shown as ({info['label']})" if info.get("label") else ""
        lines.append(f"- `{info['run_id']}`{label}: commit {info['git_commit']}, device {device}, "
                     f"{info['cpu_count']} CPUs, {info['platform']}, torch {info['torch']}, "
                     f"seeds {info['seeds']}, started {info['started']}")
    lines.append("")
    return lines
