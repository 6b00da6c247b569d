"""Reports: training seeds end to end, background task sets, the figure, merging runs."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmark.api import Capabilities
from benchmark.cli import main
from benchmark.config import config_from_dict
from benchmark.errors import ConfigError
from benchmark.report import merge_runs, report_runs, write_report
from benchmark.run_folder import RunFolder
from benchmark.runner import RunOptions, run_benchmark
from benchmark.stats import mcnemar_exact
from methods.nearest_neighbor import NearestNeighbor
from tasks.sets import resolve_task_sets
from tests.synthetic import synthetic_omniglot

ROOT = Path(__file__).resolve().parent.parent
DATA = synthetic_omniglot()


class NoisyNeighbor(NearestNeighbor):
    """A stand-in for a trained method: 1-NN plus noise drawn from the training seed."""

    capabilities = Capabilities(needs_training=True, uses_gpu=False, deterministic=True)

    def fit(self, background, context):
        self.seed_ = context.seed
        return super().fit(background, context)

    def predict(self, batch):
        scores = super().predict(batch)
        rng = np.random.default_rng([self.seed_, batch.fingerprint()])
        return scores + rng.normal(scale=scores.std(), size=scores.shape)


@pytest.fixture(autouse=True)
def noisy_neighbor(isolated_registry):
    isolated_registry.register("noisy_neighbor")(NoisyNeighbor)


def make_config(cross_seed=1):
    return config_from_dict({
        "name": "tiny",
        "task_sets": {
            "cross": {"protocol": "cross", "n_way": [2, 5], "episodes": 30, "seed": cross_seed},
            "within": {"protocol": "within", "n_way": [2, 3], "episodes": 20, "seed": 2},
            "cross_background": {"protocol": "cross", "split": "background", "only_trained": True,
                                 "n_way": [2, 5], "episodes": 20, "seed": 3},
        },
        "methods": {"random": {}, "nearest_neighbor": {}, "noisy_neighbor": {}},
    })


def run(out_dir, methods=("random", "nearest_neighbor"), seeds=None, cross_seed=1):
    config = make_config(cross_seed)
    options = RunOptions(progress=False, checkpoint_dir=out_dir.parent / "checkpoints",
                         seeds=seeds, log=lambda message: None)
    outcome = run_benchmark(config, list(methods), DATA, resolve_task_sets(config, DATA), out_dir, options)
    assert outcome.exit_code == 0, outcome.failures
    return out_dir


def test_seeds_repeat_trained_methods_only_and_the_report_shows_their_spread(tmp_path):
    out = run(tmp_path / "run", ("noisy_neighbor", "nearest_neighbor", "random"), seeds=(0, 1, 2))
    records = RunFolder(out).read_records()
    seeds = records.groupby("method")["seed"].unique().map(sorted).to_dict()
    assert seeds == {"random": [0], "nearest_neighbor": [0], "noisy_neighbor": [0, 1, 2]}
    # Every seed of the trained method saw the same episodes.
    noisy = records[records.method == "noisy_neighbor"]
    per_seed = noisy.groupby("seed")["label"].apply(list)
    assert per_seed[0] == per_seed[1] == per_seed[2]
    assert noisy.groupby("seed")["correct"].mean().nunique() > 1  # the seed changes the results
    # The background task set ran for the trained method only.
    assert set(records[records.task_set == "cross_background"].method) == {"noisy_neighbor"}

    summary = write_report(out).summary
    row = summary[(summary.method == "noisy_neighbor") & (summary.task_set == "cross") & (summary.n_way == 5)].iloc[0]
    per_seed_accuracy = noisy[(noisy.task_set == "cross") & (noisy.n_way == 5)].groupby("seed")["correct"].mean()
    assert row.seeds == 3 and row.episodes == 30 and row.queries == 30 * 5
    assert row.accuracy == pytest.approx(per_seed_accuracy.mean())
    assert row.seed_std == pytest.approx(per_seed_accuracy.std(ddof=1))
    assert (row.seed_min, row.seed_max) == (per_seed_accuracy.min(), per_seed_accuracy.max())
    assert (summary[summary.method != "noisy_neighbor"].seeds == 1).all()

    paired = pd.read_csv(out / "paired.csv")
    assert len(paired[paired.task_set == "cross"]) == 2 * 3  # 3 pairs of methods per N
    assert (paired.task_set != "cross_background").all()  # one method there: nothing to pair
    clear = paired[(paired.method_a == "nearest_neighbor") & (paired.method_b == "random")]
    assert clear.significant.all() and (clear.mcnemar_a_only > clear.mcnemar_b_only).all()
    expected = [mcnemar_exact(a, b) for a, b in zip(clear.mcnemar_a_only, clear.mcnemar_b_only)]
    assert min(expected) < 1e-6  # tiny p-values survive the CSV
    assert clear.mcnemar_p.tolist() == pytest.approx(expected, rel=1e-3)
    text = (out / "summary.md").read_text()
    for fragment in ("noisy_neighbor (3 seeds)", "# Spread across training seeds", "# Paired differences",
                     "noisy_neighbor − nearest_neighbor", "cross_background (cross, background alphabets",
                     "# Runs", "seeds [0, 1, 2]"):
        assert fragment in text, fragment
    svg = (out / "accuracy_vs_n.svg").read_text()
    for label in ("background alphabets", "evaluation alphabets", "noisy_neighbor", "range over seeds",
                  "across alphabets (cross)", "within one alphabet (within)"):
        assert label in svg, label
    assert (out / "accuracy_vs_n.png").stat().st_size > 10_000
    tex = (out / "summary.tex").read_text()
    assert tex.count("\\begin{table}") == 3 and "noisy\\_neighbor" in tex  # cross, within, cross_background
    assert "Paired differences at N = 2" in (out / "paired_heatmap.svg").read_text()  # the N all task sets have


def test_the_report_is_the_same_every_time(tmp_path):
    out = run(tmp_path / "run")
    write_report(out)
    first = {name: (out / name).read_bytes() for name in ("summary.csv", "paired.csv", "summary.md",
                                                         "accuracy_vs_n.svg")}
    write_report(out)
    assert first == {name: (out / name).read_bytes() for name in first}


def test_runs_merge_with_device_labels_for_methods_found_in_both(tmp_path):
    cpu = run(tmp_path / "cpu")
    gpu = run(tmp_path / "gpu", ("nearest_neighbor", "noisy_neighbor"))
    manifest = json.loads((gpu / "run.json").read_text())
    manifest["environment"].update(device="cuda", gpu="Some GPU")  # as a GPU machine writes it
    (gpu / "run.json").write_text(json.dumps(manifest))

    records, infos = merge_runs([cpu, gpu])
    assert set(records.method) == {"random", "nearest_neighbor (cpu)", "nearest_neighbor (cuda)",
                                   "noisy_neighbor"}
    assert [run.label for run in infos] == ["cpu", "cuda"]
    summary = report_runs([cpu, gpu], tmp_path / "merged").summary
    nn = summary[summary.method.str.startswith("nearest_neighbor")].pivot_table(
        index=["task_set", "n_way"], columns="method", values="accuracy")
    assert (nn["nearest_neighbor (cpu)"] == nn["nearest_neighbor (cuda)"]).all()  # deterministic
    paired = pd.read_csv(tmp_path / "merged" / "paired.csv")
    same = paired[(paired.method_a == "nearest_neighbor (cpu)") & (paired.method_b == "nearest_neighbor (cuda)")]
    assert len(same) == 4 and (same.difference == 0).all() and not same.significant.any()
    text = (tmp_path / "merged" / "summary.md").read_text()
    assert "device cuda (Some GPU)" in text and "shown as (cpu)" in text


class TransductiveNeighbor(NearestNeighbor):
    """1-NN whose scores are centred on each class's mean over the episode's queries."""

    capabilities = Capabilities(needs_training=False, transductive=True)

    def predict(self, batch):
        scores = super().predict(batch)
        return scores - scores.mean(axis=1, keepdims=True)


def test_tables_and_figures_mark_a_transductive_method(tmp_path, isolated_registry):
    isolated_registry.register("centred_neighbor")(TransductiveNeighbor)
    out = run(tmp_path / "run", ("centred_neighbor", "nearest_neighbor"))
    write_report(out)
    marked = "centred_neighbor (transductive)"
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary.method) == {marked, "nearest_neighbor"}
    assert marked in set(pd.read_csv(out / "paired.csv").method_a)
    text = (out / "summary.md").read_text()
    assert f"| {marked} |" in text and "not comparable" in text
    assert marked in (out / "accuracy_vs_n.svg").read_text()
    assert marked.replace("_", "\\_") in (out / "summary.tex").read_text()
    merged = report_runs([out, run(tmp_path / "other", ("nearest_neighbor",))], tmp_path / "merged").summary
    assert marked in set(merged.method)


def test_runs_of_the_same_device_are_told_apart_by_run_id(tmp_path):
    records, _ = merge_runs([run(tmp_path / "first"), run(tmp_path / "second", ("nearest_neighbor",))])
    assert set(records.method) == {"random", "nearest_neighbor (first)", "nearest_neighbor (second)"}


def test_runs_with_other_episodes_or_without_run_json_are_not_merged(tmp_path):
    base = run(tmp_path / "base")
    other = run(tmp_path / "other", cross_seed=9)
    with pytest.raises(ConfigError, match="different episodes for task set cross/2way/1shot"):
        merge_runs([base, other])
    with pytest.raises(ConfigError, match="given twice"):
        merge_runs([base, tmp_path / "base" / ".." / "base"])
    bare = tmp_path / "bare"
    shutil.copytree(base / "records", bare / "records")  # the records, without run.json to check them
    with pytest.raises(ConfigError, match="run.json not found"):
        merge_runs([base, bare], log=lambda message: None)


def test_report_command_merges_runs_and_refuses_bad_ones_in_one_line(tmp_path):
    first, second = run(tmp_path / "first"), run(tmp_path / "second", ("nearest_neighbor",))
    other = run(tmp_path / "other", cross_seed=9)
    command = [sys.executable, str(ROOT / "run_benchmark.py"), "report"]
    merged = subprocess.run([*command, str(first), str(second), "--out", str(tmp_path / "merged")],
                            capture_output=True, text=True, timeout=120)
    assert merged.returncode == 0, merged.stderr
    assert "nearest_neighbor (second)" in merged.stdout
    for name in ("summary.csv", "paired.csv", "summary.md", "accuracy_vs_n.png", "accuracy_vs_n.svg"):
        assert (tmp_path / "merged" / name).stat().st_size > 0, name
    for args, fragment in [([str(first), str(other), "--out", str(tmp_path / "m2")], "different episodes"),
                           ([str(first), str(second)], "--out DIR")]:
        refused = subprocess.run([*command, *args], capture_output=True, text=True, timeout=120)
        lines = refused.stderr.strip().splitlines()
        assert refused.returncode == 2 and len(lines) == 1 and fragment in lines[0], refused.stderr
        assert lines[0].startswith("error: ")


@pytest.mark.parametrize("seeds,fragment", [("0,x", "--seeds '0,x' is malformed"),
                                            (",", "--seeds is empty"),
                                            ("-1", "--seeds must be between 0")])
def test_bad_seeds_get_one_line(tmp_path, capsys, seeds, fragment):
    code = main(["--seeds", seeds, "--methods", "random", "--out", str(tmp_path / "r"), "--quiet"])
    assert code == 2
    assert fragment in capsys.readouterr().err


def test_the_figure_accepts_an_accuracy_outside_its_interval(tmp_path):
    """A percentile bootstrap interval need not contain the point estimate (and rounding can put
    it a hair outside): the single-N diamonds' error bars must then be clipped, not refused."""
    from benchmark.plots import plot_accuracy_vs_n
    from benchmark.stats import SUMMARY_COLUMNS

    def row(task_set, protocol, n_way, accuracy, low, high):
        return dict(method="nearest_neighbor", task_set=task_set, split="evaluation",
                    protocol=protocol, n_way=n_way, k_shot=1, episodes=20, queries=20 * n_way,
                    accuracy=accuracy, ci_low=low, ci_high=high, ci_normal_low=low,
                    ci_normal_high=high, seeds=1, seed_std=np.nan, seed_min=accuracy,
                    seed_max=accuracy)

    summary = pd.DataFrame([row("cross", "cross", 2, 0.9, 0.85, 0.95),
                            row("cross", "cross", 5, 0.7, 0.6, 0.8),
                            # above its interval, and below it by float rounding
                            row("official", "within", 20, 0.62, 0.5, 0.6),
                            row("official_low", "within", 20, 0.5, 0.5 + 1e-12, 0.55)],
                           columns=SUMMARY_COLUMNS)
    paths = plot_accuracy_vs_n(summary, tmp_path / "figure", 0.95)
    assert [path.name for path in paths] == ["figure.png", "figure.svg"]
    assert all(path.stat().st_size > 0 for path in paths)


def test_tables_follow_the_order_of_task_sets_in_the_config_and_of_methods_as_asked_for(tmp_path):
    # Neither order is alphabetical; the methods asked for (--methods) come in that order, not
    # in the config's (which lacks nearest_neighbor).
    config = config_from_dict({
        "name": "ordered",
        "task_sets": {
            "within": {"protocol": "within", "n_way": [2, 3], "episodes": 10, "seed": 2},
            "cross_background": {"protocol": "cross", "split": "background", "n_way": [2],
                                 "episodes": 10, "seed": 3},
            "cross": {"protocol": "cross", "n_way": [2, 5], "episodes": 10, "seed": 1},
        },
        "methods": {"noisy_neighbor": {}, "random": {}},
    })
    options = RunOptions(progress=False, checkpoint_dir=tmp_path / "checkpoints", log=lambda m: None)
    out = tmp_path / "run"
    outcome = run_benchmark(config, ["random", "nearest_neighbor", "noisy_neighbor"], DATA,
                            resolve_task_sets(config, DATA), out, options)
    assert outcome.exit_code == 0, outcome.failures
    summary = write_report(out).summary
    expected_methods = ["random", "nearest_neighbor", "noisy_neighbor"]
    written = pd.read_csv(out / "summary.csv")
    for table in (summary, written):
        assert list(dict.fromkeys(table.task_set)) == ["within", "cross_background", "cross"]
        assert list(dict.fromkeys(table.method)) == expected_methods
        for _, rows in table.groupby("task_set"):
            assert list(rows.n_way) == sorted(rows.n_way)  # N ascending within a task set
            assert list(rows.method) == [m for n in sorted(set(rows.n_way)) for m in expected_methods]
    text = (out / "summary.md").read_text()
    headings = [text.index(f"## {name} (") for name in ("within", "cross_background", "cross")]
    assert headings == sorted(headings)
    assert "| N | chance | random | nearest_neighbor | noisy_neighbor |" in text
    paired = pd.read_csv(out / "paired.csv")
    assert list(dict.fromkeys(paired.task_set)) == ["within", "cross_background", "cross"]
    # Differences are earlier-listed minus later-listed.
    assert list(dict.fromkeys(zip(paired.method_a, paired.method_b)))[:3] == [
        ("random", "nearest_neighbor"), ("random", "noisy_neighbor"), ("nearest_neighbor", "noisy_neighbor")]


def test_merged_runs_keep_the_order_asked_for_with_each_method_s_runs_together(tmp_path):
    cpu = run(tmp_path / "cpu", ("random", "nearest_neighbor"))
    gpu = run(tmp_path / "gpu", ("noisy_neighbor", "nearest_neighbor"))
    manifest = json.loads((gpu / "run.json").read_text())
    manifest["environment"].update(device="cuda", gpu="Some GPU")
    (gpu / "run.json").write_text(json.dumps(manifest))
    summary = report_runs([gpu, cpu], tmp_path / "merged").summary
    # The cuda run is named first: the methods it asked for (noisy_neighbor, nearest_neighbor)
    # come first, then the cpu run's; the two nearest_neighbor runs stay together, cuda first.
    assert list(dict.fromkeys(summary.task_set)) == ["cross", "within", "cross_background"]
    assert list(dict.fromkeys(summary.method)) == ["noisy_neighbor", "nearest_neighbor (cuda)",
                                                   "nearest_neighbor (cpu)", "random"]
    assert "| N | chance | noisy_neighbor | nearest_neighbor (cuda) | nearest_neighbor (cpu) | random |" \
        in (tmp_path / "merged" / "summary.md").read_text()
