"""Tables and plots of a run, or of several runs merged, rebuilt from their saved files alone.

A report folder gets `summary.csv` (accuracy, intervals, seed spread), `paired.csv` (every
pair of methods on the same episodes), `summary.md` (both as readable tables, and the runs
they come from; benchmark/summary_markdown.py), `summary.tex` (booktabs tables for a paper;
benchmark/latex.py), `accuracy_vs_n.png`/`.svg` (benchmark/plots.py) and
`paired_heatmap.png`/`.svg` (the paired differences at one N; benchmark/heatmap.py). Runs are read through benchmark/run_folder.py, which checks every
record against the hashes in run.json.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from benchmark.config import RunConfig, StatsConfig
from benchmark.errors import ConfigError
from benchmark.files import staged_outputs
from benchmark.heatmap import heatmap_n_way, plot_paired_heatmap
from benchmark.latex import summary_latex
from benchmark.plots import plot_accuracy_vs_n
from benchmark.run_folder import RunFolder
from benchmark.run_manifest import RunManifest
from benchmark.shots_plot import plot_accuracy_vs_k, shots_n_way
from benchmark.stats import episode_accuracy, paired_differences, summarize
from benchmark.summary_markdown import summary_markdown

# Appended to a transductive method's name wherever a report shows it.
TRANSDUCTIVE_MARK = "(transductive)"


@dataclass
class RunSource:
    """One run folder of a report: its manifest and, when it is merged with others, the label
    its methods are shown with."""

    path: Path
    manifest: RunManifest | None
    label: str | None = None
    shown: dict[str, str] = field(default_factory=dict)  # method name -> name in the report

    @classmethod
    def read(cls, path: Path) -> RunSource:
        folder = RunFolder(path)
        return cls(Path(path), folder.read_manifest() if folder.has_manifest() else None)

    @property
    def config(self) -> RunConfig | None:
        return self.manifest.run_config() if self.manifest else None

    def trains(self) -> dict[str, bool]:
        """Shown method name -> whether it trains (untrained methods are the reference lines)."""
        methods = self.manifest.methods if self.manifest else {}
        return {self.shown.get(name, name): entry.needs_training for name, entry in methods.items()}


def merge_runs(run_dirs: list[Path], log=None) -> tuple[pd.DataFrame, list[RunSource]]:
    """The records of several runs as one table, and the runs.

    Runs are merged only when they hold the same episodes under every task-set name they
    share (run.json's task-set hashes) on the same data. A method found in several runs
    is told apart by a run label: `name (cpu)`, `name (cuda)`, or the run id when devices
    repeat.
    """
    paths = [Path(d) for d in run_dirs]
    if len({path.resolve() for path in paths}) < len(paths):
        raise ConfigError("the same run folder is given twice: name each run once")
    frames = [RunFolder(path).read_records(log) for path in paths]
    runs = [RunSource.read(path) for path in paths]
    if len(paths) == 1:
        _mark_transductive(frames[0], runs[0])
        return frames[0], runs
    for run in runs:
        if run.manifest is None:
            raise ConfigError(f"{run.path / 'run.json'} not found: without it the episodes of {run.path} "
                              f"cannot be checked against the other runs', so it is not merged")
    _check_same_episodes(runs)
    runs_of = {}
    for frame in frames:
        for method in dict.fromkeys(frame["method"]):
            runs_of[method] = runs_of.get(method, 0) + 1
    for frame, run, label in zip(frames, runs, _run_labels(runs)):
        run.label = label
        run.shown = {m: f"{m} ({label})" for m in dict.fromkeys(frame["method"]) if runs_of[m] > 1}
        _mark_transductive(frame, run)
    return pd.concat(frames, ignore_index=True), runs


def _mark_transductive(frame: pd.DataFrame, run: RunSource) -> None:
    """Show the run's methods under their report names (`run.shown`), a transductive one (run.json's
    capabilities) as `name (transductive)` in every table and figure: it scores a query with
    the other queries of its episode, so its accuracy is not comparable with an inductive one's."""
    methods = run.manifest.methods if run.manifest else {}
    for name in dict.fromkeys(frame["method"]):
        entry = methods.get(name)
        if entry is not None and entry.capabilities.get("transductive", False):
            run.shown[name] = f"{run.shown.get(name, name)} {TRANSDUCTIVE_MARK}"
    frame["method"] = frame["method"].cat.rename_categories(lambda name: run.shown.get(name, name))


def _check_same_episodes(runs: list[RunSource]) -> None:
    first = runs[0]
    for other in runs[1:]:
        a, b = first.manifest, other.manifest
        for split in ("background", "evaluation"):
            if getattr(a.data, f"{split}_sha256") != getattr(b.data, f"{split}_sha256"):
                raise ConfigError(f"runs {first.path} and {other.path} used different Omniglot "
                                  f"data ({split} split): they cannot be merged")
        for key in sorted(set(a.task_sets) & set(b.task_sets)):
            if a.task_sets[key] != b.task_sets[key]:
                raise ConfigError(f"runs {first.path} and {other.path} hold different episodes "
                                  f"for task set {key}: merge only runs of the same task-set config")
        if not set(a.task_sets) & set(b.task_sets):
            raise ConfigError(f"runs {first.path} and {other.path} share no task set: "
                              f"there is nothing to compare")


def _run_labels(runs: list[RunSource]) -> list[str]:
    """The device of each run, or its run id where devices repeat, or its position."""
    for labels in ([str(run.manifest.environment.device) for run in runs], [run.manifest.run_id for run in runs]):
        if len(set(labels)) == len(labels):
            return labels
    return [f"run {position + 1}" for position in range(len(runs))]


@dataclass
class Report:
    """What a report wrote, as tables: the summary, the paired differences, and its runs."""

    summary: pd.DataFrame
    paired: pd.DataFrame
    runs: list[RunSource]


def report_runs(run_dirs: list[Path], out_dir: Path, log=None, stats: StatsConfig | None = None) -> Report:
    """Read one or more run folders, merge them, write the report into out_dir.

    `stats` (resamples, confidence, seed) defaults to the first run's config.
    """
    records, runs = merge_runs(run_dirs, log)
    if stats is None:
        config = runs[0].config if runs else None
        stats = config.stats if config is not None else StatsConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with staged_outputs(out_dir) as staging:  # each file appears whole or not at all
        return write_report(staging, records, stats, runs)


def write_report(run_dir: Path, records: pd.DataFrame | None = None, stats: StatsConfig = StatsConfig(),
                 runs: list[RunSource] | None = None) -> Report:
    """Write summary.csv, paired.csv, summary.md, summary.tex, accuracy_vs_n.png/.svg and
    paired_heatmap.png/.svg; when a task set has three or more values of k,
    accuracy_vs_k.png/.svg too (and no accuracy_vs_n when no task set has two values of N).

    `runs` name the runs in summary.md and say which methods are untrained references;
    without it, `run_dir` itself is the run (its run.json when it has one).
    """
    run_dir = Path(run_dir)
    if records is None:  # the run folder itself, its methods shown as merge_runs names them
        records, read = merge_runs([run_dir])
        runs = read if runs is None else runs
    runs = [run for run in runs if run.manifest is not None]
    tasks, methods = _task_order(records, runs), _method_order(records, runs)
    per_episode = episode_accuracy(records)
    summary = _sorted(summarize(records, stats, per_episode), tasks, methods)
    paired = _sorted(paired_differences(records, stats, methods, per_episode), tasks)
    summary.to_csv(run_dir / "summary.csv", index=False, float_format="%.6f")
    # p-values go down to 1e-300: four significant digits, not six decimals that round them to 0.
    paired.assign(mcnemar_p=paired["mcnemar_p"].map("{:.4g}".format)).to_csv(
        run_dir / "paired.csv", index=False, float_format="%.6f")
    text = summary_markdown(summary, stats.confidence, paired, runs)
    (run_dir / "summary.md").write_text(text, encoding="utf-8")
    references = {name for run in runs for name, trains in run.trains().items() if not trains}
    shots_n = shots_n_way(summary)
    if shots_n is not None:  # a task set run with three or more values of k (configs/shots.yaml)
        plot_accuracy_vs_k(summary, shots_n, run_dir / "accuracy_vs_k", stats.confidence, references)
    # Against N, unless no task set has two N and the figure against k shows them all better.
    if shots_n is None or (summary.groupby(["task_set", "k_shot"])["n_way"].nunique() > 1).any():
        plot_accuracy_vs_n(summary, run_dir / "accuracy_vs_n", stats.confidence, references)
    (run_dir / "summary.tex").write_text(summary_latex(summary, paired, stats.confidence), encoding="utf-8")
    heatmap_n = heatmap_n_way(paired)
    if heatmap_n is not None:  # one method alone has no pairs: no heatmap
        plot_paired_heatmap(paired, heatmap_n, run_dir / "paired_heatmap")
    return Report(summary, paired, runs)


def _task_order(records: pd.DataFrame, runs: list[RunSource]) -> list[str]:
    """Task sets in the order the runs' configs list them (first run first), then the others
    alphabetically."""
    listed = list(dict.fromkeys(name for run in runs for name in run.config.task_sets))
    return sorted(records["task_set"].unique(), key=lambda name: (_position(listed, name), name))


def _method_order(records: pd.DataFrame, runs: list[RunSource]) -> list[str]:
    """Methods in the order the runs were asked for them (--methods, else the config's list;
    first run first), then the others alphabetically. A merged method `name (label)` goes where
    `name` does, its runs in their order."""
    listed = list(dict.fromkeys(name for run in runs
                                for name in [*run.manifest.methods_requested, *run.config.methods]))
    labels = [run.label for run in runs if run.label]

    def key(name: str) -> tuple:
        base, _, label = name.partition(" (")  # method names are identifiers: no " (" in them
        return (_position(listed, base), base, _position(labels, label.removesuffix(")")), name)

    return sorted(records["method"].unique(), key=key)


def _sorted(frame: pd.DataFrame, tasks: list[str], methods: list[str] | None = None) -> pd.DataFrame:
    """Rows by task set, then N, then (when `methods` is given) method, in those orders; rows
    that tie keep their order (paired rows keep the order of their pairs)."""
    columns = {"_task_rank": frame["task_set"].map({name: i for i, name in enumerate(tasks)})}
    by = ["_task_rank", "n_way"]
    if methods is not None:
        columns["_method_rank"] = frame["method"].map({name: i for i, name in enumerate(methods)})
        by.append("_method_rank")
    return (frame.assign(**columns).sort_values(by, kind="stable")
            .drop(columns=list(columns)).reset_index(drop=True))


def _position(order: list[str], name: str) -> int:
    return order.index(name) if name in order else len(order)
