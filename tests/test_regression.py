"""CI regression: the smoke config on its frozen episodes must reproduce results/baselines/smoke.json.

When a number moves, the failure prints a table (method, task set, N, golden, now, delta,
tolerance). A deliberate change is one command: `python run_benchmark.py update-baselines`.
"""

import json
import shutil
from pathlib import Path

import pytest
import torch

from benchmark import regression, registry
from benchmark.api import Capabilities, EmbeddingMethod
from benchmark.cli import main
from benchmark.config import config_from_dict, load_config
from benchmark.errors import BenchmarkError, ConfigError
from benchmark.regression import Count, RowCheck, SmokeRun
from methods import nearest_neighbor
from methods.nearest_neighbor import NearestNeighbor
from tasks.sets import resolve_task_sets
from tests.synthetic import synthetic_omniglot

ROOT = Path(__file__).resolve().parent.parent
SMOKE_CONFIG = ROOT / "configs" / "smoke.yaml"
GOLDEN = ROOT / "results" / "baselines" / "smoke.json"


def smoke_method_params():
    """One test per method of the smoke config; trained ones (per the golden file) are slow."""
    trained = {name for name, entry in json.loads(GOLDEN.read_text())["methods"].items()
               if entry.get("needs_training")}
    return [pytest.param(name, marks=[pytest.mark.slow] if name in trained else [])
            for name in load_config(SMOKE_CONFIG).methods]


@pytest.fixture(scope="module")
def smoke(omniglot):
    config = load_config(SMOKE_CONFIG)
    try:
        task_sets = resolve_task_sets(config, omniglot)  # frozen: loaded and checked, not generated
    except BenchmarkError as error:
        pytest.fail(f"error: {error}", pytrace=False)
    return config, omniglot, task_sets, regression.read_baseline(GOLDEN)


@pytest.mark.parametrize("method", smoke_method_params())
def test_smoke_run_reproduces_the_golden_numbers(smoke, method):
    config, data, task_sets, baseline = smoke
    run = regression.run_smoke(config, [method], data, task_sets)
    comparison = regression.compare(baseline, run, [method], config, task_sets)
    if not comparison.ok:
        pytest.fail(f"{comparison.report()}\nif the change is intended: python run_benchmark.py "
                    f"update-baselines --methods {method}, then commit the new golden file", pytrace=False)


def test_golden_file_covers_exactly_the_smoke_methods_with_their_provenance():
    baseline = regression.read_baseline(GOLDEN)
    config = load_config(SMOKE_CONFIG)
    assert list(baseline["methods"]) == list(config.methods)
    assert baseline["config"] == "configs/smoke.yaml" and len(baseline["episodes"]) == 7
    for name, entry in baseline["methods"].items():
        assert entry["command"].startswith("python run_benchmark.py update-baselines"), name
        assert len(entry["commit"].removesuffix("+dirty")) == 40, name
        assert entry["tolerance_rule"] and len(entry["results"]) == 7, name
        assert all(row["tolerance"] >= 0 and row["flips"] >= 0 for row in entry["results"]), name
        if not entry["needs_training"]:
            assert entry["exact"], f"{name} is untrained: it must match exactly"


def tie_breaks_towards_the_last_class(self, query, support):
    scores = L2_SCORE(self, query, support)  # exact integers: +0.25*j/N only reorders ties
    return scores + 0.25 * torch.arange(scores.shape[-1]) / scores.shape[-1]


def support_norm_counted_half(self, query, support):
    e, n, k, d = support.shape
    flat = support.reshape(e, n * k, d)
    scores = torch.bmm(query, flat.transpose(1, 2)) - flat.square().sum(-1)[:, None, :]  # 2 q.s lost its 2
    return scores.reshape(e, query.shape[1], n, k).amax(-1)


L2_SCORE = NearestNeighbor.score


# The example alteration, L1 instead of L2, changes no prediction at all: on 0/1
# pixels |a - b| = (a - b)^2, so L1 distance and squared L2 distance are the same number.
@pytest.mark.parametrize("altered_score", [tie_breaks_towards_the_last_class, support_norm_counted_half])
def test_an_altered_method_fails_the_comparison_with_a_table(smoke, monkeypatch, altered_score):
    config, data, task_sets, baseline = smoke
    monkeypatch.setattr(NearestNeighbor, "score", altered_score)
    monkeypatch.setattr(nearest_neighbor, "GRAM_MAX_IMAGES", 0)  # so that predict goes through score
    run = regression.run_smoke(config, ["nearest_neighbor"], data, task_sets)
    comparison = regression.compare(baseline, run, ["nearest_neighbor"], config, task_sets)
    assert not comparison.ok
    report = comparison.report()
    assert "method" in report and "golden" in report and "delta" in report and "tolerance" in report
    moved = [row for row in comparison.rows if row.status == "MOVED"]
    assert moved and all(f"{row.golden}" in report and f"{row.now}" in report for row in moved)


def tampered_frozen_copy(tmp_path, edit) -> Path:
    copy = tmp_path / "frozen"
    shutil.copytree(ROOT / "tasks" / "frozen" / "smoke", copy)
    path = copy / "cross-5way-1shot.json"
    raw = json.loads(path.read_text())
    edit(raw)
    path.write_text(json.dumps(raw))
    return copy


@pytest.mark.parametrize("command,edit,message", [
    (["update-baselines", "--check", "--baselines"], lambda raw: raw["support"][0][0].__setitem__(0, 7),
     "was modified"),
    (["run", "--methods", "random", "--out"], lambda raw: raw.__setitem__("split_sha256", "0" * 64),
     "made for other data"),
], ids=["an id changed, update-baselines", "the data's sha256 changed, run"])
def test_a_tampered_frozen_file_is_refused_in_one_line(omniglot_dir, tmp_path, capsys, command, edit,
                                                       message):
    copy = tampered_frozen_copy(tmp_path, edit)
    code = main([*command, str(tmp_path / "out"), "--config", str(SMOKE_CONFIG), "--set",
                 f"frozen={copy}", "--data-dir", str(omniglot_dir), "--no-download"])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("error: frozen episode file") and message in lines[0]
    assert "cross-5way-1shot.json" in lines[0]


def test_update_baselines_writes_then_check_passes_and_a_moved_number_fails(omniglot_dir, tmp_path, capsys):
    golden = tmp_path / "golden.json"
    common = ["--config", str(SMOKE_CONFIG), "--methods", "random", "--baselines", str(golden),
              "--data-dir", str(omniglot_dir), "--no-download"]
    assert main(["update-baselines", *common]) == 0
    assert "random: new (7 rows)" in capsys.readouterr().out
    written = regression.read_baseline(golden)
    assert written["methods"]["random"]["results"] == \
        regression.read_baseline(GOLDEN)["methods"]["random"]["results"]
    assert main(["update-baselines", "--check", *common]) == 0
    capsys.readouterr()

    row = written["methods"]["random"]["results"][2]
    row["correct"] += 1  # as if the committed golden number were one answer off
    regression.write_baseline(golden, written)
    assert main(["update-baselines", "--check", *common]) == 1
    table = capsys.readouterr().out
    assert "MOVED" in table and f"{row['correct']}/{row['queries']}" in table
    assert main(["update-baselines", *common]) == 0
    diff = capsys.readouterr().out
    assert f"random cross 20-way 1-shot: {Count(row['correct'], row['queries'])} -> " \
           f"{Count(row['correct'] - 1, row['queries'])}" in diff
    assert "6 rows unchanged" in diff


# ---- the comparison logic, on made-up counts (no data needed) ----------------------------

def baseline_with(tolerance, rows, params=None, episodes=None):
    return {"format": regression.BASELINE_FORMAT, "episodes": episodes or {}, "methods": {"m": {
        "params": params or {}, "exact": tolerance == 0, "needs_training": tolerance > 0,
        "results": [{"task_set": t, "n_way": n, "k_shot": 1, "correct": c, "queries": q,
                     "tolerance": tolerance} for t, n, c, q in rows]}}}


def run_with(rows, failures=None):
    import pandas as pd

    records = [{"method": "m", "task_set": t, "n_way": n, "k_shot": 1, "episode": i, "query": 0,
                "predicted": 0, "correct": int(i < c)} for t, n, c, q in rows for i in range(q)]
    return SmokeRun(pd.DataFrame(records), failures or {})


CONFIG = config_from_dict({"methods": {"m": {}}})


def statuses(baseline, run):
    comparison = regression.compare(baseline, run, ["m"], CONFIG, task_sets=[])
    return comparison, {(row.task_set, row.n_way): row.status for row in comparison.rows}


def test_exact_rows_must_match_to_the_answer():
    baseline = baseline_with(0.0, [("a", 5, 30, 100), ("b", 5, 40, 100)])
    comparison, status = statuses(baseline, run_with([("a", 5, 30, 100), ("b", 5, 41, 100)]))
    assert status == {("a", 5): "ok", ("b", 5): "MOVED"} and not comparison.ok
    assert "+1.00" in comparison.report() and "exact" in comparison.report()


def test_a_tolerance_allows_that_many_points_and_no_more():
    baseline = baseline_with(1.5, [("a", 5, 50, 200), ("b", 5, 50, 200), ("c", 5, 50, 200)])
    _, status = statuses(baseline, run_with([("a", 5, 53, 200), ("b", 5, 47, 200), ("c", 5, 54, 200)]))
    assert status == {("a", 5): "ok", ("b", 5): "ok", ("c", 5): "MOVED"}  # ±1.5 ok, +2.0 not


def test_missing_new_and_resized_rows_failures_and_other_episodes_all_fail():
    baseline = baseline_with(0.0, [("a", 5, 30, 100), ("b", 5, 40, 100)], episodes={"a/5way/1shot": "x"})
    comparison, status = statuses(baseline, run_with([("a", 5, 30, 90), ("c", 2, 1, 2)],
                                                     failures={"m2": "MethodError: boom"}))
    assert status == {("a", 5): "other queries", ("b", 5): "missing", ("c", 2): "no baseline"}
    assert any("m2 failed: MethodError: boom" in p for p in comparison.problems)
    assert any("frozen episodes are not those" in p for p in comparison.problems)


def test_other_hyperparameters_and_unknown_methods_are_problems():
    baseline = baseline_with(0.0, [("a", 5, 30, 100)], params={"steps": 10})
    comparison = regression.compare(baseline, run_with([("a", 5, 30, 100)]), ["m", "new"], CONFIG, [])
    assert len(comparison.problems) == 2 and not comparison.ok
    assert "baseline was made with {'steps': 10}" in comparison.problems[0]
    assert "new has no baseline" in comparison.problems[1]


def test_table_lines_up_and_shows_every_column():
    rows = [RowCheck("nearest_neighbor", "cross", 20, 1, Count(355, 2000), Count(149, 2000), 0.0),
            RowCheck("siamese", "within", 5, 1, Count(400, 500), Count(404, 500), 1.5)]
    lines = regression.format_table(rows).splitlines()
    assert lines[0].split() == ["method", "task", "set", "N", "k", "golden", "now", "delta",
                                "tolerance", "status"]
    assert lines[1].split()[:4] == ["nearest_neighbor", "cross", "20", "1"]
    assert "17.75% (355/2000)" in lines[1] and "7.45% (149/2000)" in lines[1] and "-10.30" in lines[1]
    assert "exact" in lines[1] and "MOVED" in lines[1] and "±1.5" in lines[2] and "ok" in lines[2]
    assert lines[1].index("17.75") == lines[0].index("golden")  # columns line up


def test_row_tolerance_grows_with_the_flips_and_the_measured_difference():
    floor = regression.TOLERANCE_FLOOR
    assert regression.row_tolerance(0, 2000, 0.0) == floor
    # 744 flips of 2000: 4 x 100 x sqrt(744) / 2000 = 5.455... -> 5.46 points
    assert regression.row_tolerance(744, 2000, 1.0) == 5.46
    assert regression.row_tolerance(4, 2000, 3.0) == 6.0  # a measured 3-point difference, doubled
    assert regression.row_tolerance(100, 400, 0.0) > regression.row_tolerance(100, 2000, 0.0)


def test_golden_file_round_trips_one_row_a_line_and_updates_keep_or_drop_methods(tmp_path):
    old = {"format": regression.BASELINE_FORMAT, "config": "c", "threads": 2, "episodes": {}, "methods": {
        "a": {"params": {}, "exact": True, "results": [
            {"task_set": "x", "n_way": 2, "k_shot": 1, "correct": 3, "queries": 4}]},
        "b": {"params": {}, "exact": True, "results": []}}}
    path = tmp_path / "golden.json"
    regression.write_baseline(path, old)
    assert regression.read_baseline(path) == old
    assert '{"task_set": "x", "n_way": 2, "k_shot": 1, "correct": 3, "queries": 4}' in path.read_text()
    new_a = {"params": {}, "exact": True, "results": [
        {"task_set": "x", "n_way": 2, "k_shot": 1, "correct": 2, "queries": 4}]}
    some = regression.updated_baseline(old, {"a": new_a}, "c", [], ["a"], keep_others=True)
    assert list(some["methods"]) == ["a", "b"] and some["methods"]["a"] is new_a
    everything = regression.updated_baseline(old, {"a": new_a}, "c", [], ["a"], keep_others=False)
    assert list(everything["methods"]) == ["a"]  # b left the config
    failed = regression.updated_baseline(old, {}, "c", [], ["a"], keep_others=False)
    assert failed["methods"]["a"] == old["methods"]["a"]  # a failed: its old numbers stay
    assert regression.diff_lines(old, everything) == [
        "b: removed", "a x 2-way 1-shot: 75.00% (3/4) -> 50.00% (2/4) (-25.00 points)", "0 rows unchanged"]


def test_unreadable_or_missing_golden_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="update-baselines"):
        regression.read_baseline(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ConfigError, match="unreadable"):
        regression.read_baseline(tmp_path / "bad.json")


# ---- measuring flips and tolerances, with a tiny trained method on synthetic data --------

class TinyTrained(EmbeddingMethod):
    """A linear embedding trained for a few steps: stands in for the trained methods."""

    name = "tiny_trained"
    capabilities = Capabilities(needs_training=True, uses_gpu=False, deterministic=True)

    def __init__(self, steps: int = 3):
        self.steps = steps

    def fit(self, background, context):
        generator = torch.Generator().manual_seed(context.seed)
        self.weights_ = torch.randn(105 * 105, 8, generator=generator) / 100
        images = torch.from_numpy(background.flat_images[:64].reshape(64, -1).astype("float32"))
        for _ in range(self.steps):  # pull drawings of one character together, a little
            weights = self.weights_.requires_grad_()
            features = images @ weights
            loss = (features[0::2] - features[1::2]).square().mean() - features.var(0).mean()
            (gradient,) = torch.autograd.grad(loss, weights)
            self.weights_ = (weights - 0.01 * gradient).detach()
        self.reset_embeddings()
        return self

    def embed(self, images):
        return torch.from_numpy(images.reshape(len(images), -1).astype("float32")) @ self.weights_

    def score(self, query, support):
        return -torch.cdist(query, support.mean(2))


def test_measure_counts_flips_and_gives_trained_methods_a_tolerance():
    registry.register_method("tiny_trained")(TinyTrained)
    data = synthetic_omniglot()
    config = config_from_dict({"task_sets": {"cross": {"protocol": "cross", "n_way": [2, 5],
                                                       "episodes": 30}},
                               "methods": {"nearest_neighbor": {}, "tiny_trained": {"steps": 3}}})
    task_sets = resolve_task_sets(config, data)
    names = ["nearest_neighbor", "tiny_trained"]
    deterministic_before = torch.are_deterministic_algorithms_enabled()
    entries, failures = regression.measure(config, names, data, task_sets, "cmd", "abc")
    assert failures == {} and list(entries) == names
    assert entries["nearest_neighbor"]["exact"]  # exact integer scores: nothing flips
    assert all(r["flips"] == 0 and r["tolerance"] == 0 for r in entries["nearest_neighbor"]["results"])
    assert not entries["tiny_trained"]["exact"]
    assert all(r["tolerance"] >= regression.TOLERANCE_FLOOR for r in entries["tiny_trained"]["results"])
    assert entries["tiny_trained"]["params"] == {"steps": 3} and entries["tiny_trained"]["commit"] == "abc"
    for entry in entries.values():
        assert [(r["task_set"], r["n_way"], r["queries"]) for r in entry["results"]] == [
            ("cross", 2, 60), ("cross", 5, 150)]
    # The numbers a check compares are those of one plain run with RUN_THREADS threads.
    run = regression.run_smoke(config, names, data, task_sets)
    baseline = regression.updated_baseline(None, entries, "c", task_sets, names, keep_others=False)
    assert regression.compare(baseline, run, names, config, task_sets).ok
    assert torch.are_deterministic_algorithms_enabled() == deterministic_before  # restored
