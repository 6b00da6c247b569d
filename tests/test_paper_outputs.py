"""Results for a paper: the figure's error bars and titles, summary.tex, the paired heatmap.

Built from per-query records written out by hand (one query per episode), so that which
method is best, and whether the paired interval says so, is known before the tables are.
"""

import re

import numpy as np
import pandas as pd
import pytest

from benchmark.config import StatsConfig
from benchmark.heatmap import heatmap_cells, heatmap_n_way, plot_paired_heatmap
from benchmark.latex import bold_method, latex_escape, summary_latex
from benchmark.plots import CAP_POINTS, accuracy_figure, plot_accuracy_vs_n, pyplot
from benchmark.shots_plot import plot_accuracy_vs_k, shots_figure, shots_n_way
from benchmark.stats import paired_differences, summarize

EPISODES = 40
STATS = StatsConfig(resamples=1000)
REFERENCES = {"nearest_neighbor", "random"}


def first(count: int, episodes: int = EPISODES) -> np.ndarray:
    """Right on the first `count` episodes."""
    return np.arange(episodes) < count


def close_to(outcomes: np.ndarray, gained: int, lost: int) -> np.ndarray:
    """The same outcomes but wrong on `lost` right episodes and right on `gained` wrong ones:
    a method the paired interval cannot tell apart from `outcomes`."""
    changed = outcomes.copy()
    changed[np.flatnonzero(outcomes)[:lost]] = False
    changed[np.flatnonzero(~outcomes)[:gained]] = True
    return changed


# (task set, protocol, N) -> outcomes per method, in run order. A pair is stored once, one way
# round: the best method is the earlier one on cross and the later one on within, so one of the
# two bold cells reads a positive stored difference and the other a negative one.
OUTCOMES = {
    ("cross", "cross", 2): {"net_one": first(38), "net_two": first(20), "nearest_neighbor": first(25),
                            "random": first(20)},
    ("cross", "cross", 5): {"net_one": first(30), "net_two": close_to(first(30), gained=1, lost=2),
                            "nearest_neighbor": first(12), "random": first(8)},
    ("within", "within", 2): {"net_one": first(18), "net_two": first(36), "nearest_neighbor": first(24),
                              "random": first(21)},
    ("within", "within", 3): {"net_one": close_to(first(25), gained=1, lost=2), "net_two": first(25),
                              "nearest_neighbor": first(16), "random": first(13)},
    ("official", "official", 20): {"net_one": first(18, 20), "net_two": first(17, 20),
                                   "nearest_neighbor": first(4, 20), "random": first(1, 20)},
}
# Where the best method is bold: significantly better than the second; elsewhere no bold.
BOLD = {("cross", 2): "net_one", ("within", 2): "net_two"}


def make_records(outcomes=OUTCOMES, k_shot: int = 1) -> pd.DataFrame:
    rows = []
    for (task_set, protocol, n_way), methods in outcomes.items():
        for method, correct in methods.items():
            rows += [dict(method=method, task_set=task_set, split="evaluation", protocol=protocol,
                          n_way=n_way, k_shot=k_shot, episode=episode, query=0, seed=0, label=0,
                          correct=bool(right)) for episode, right in enumerate(correct)]
    return pd.DataFrame(rows)


RUN_ORDER = ["net_one", "net_two", "nearest_neighbor", "random"]


@pytest.fixture(scope="module")
def results():
    """(summary, paired) with methods in run order, as the report writes them."""
    records = make_records()
    summary = summarize(records, STATS)
    summary = (summary.assign(rank=summary.method.map(RUN_ORDER.index))
               .sort_values(["task_set", "n_way", "rank"]).drop(columns="rank").reset_index(drop=True))
    return summary, paired_differences(records, STATS, order=RUN_ORDER)


def table_of(text: str, task_set: str) -> str:
    tables = re.findall(r"\\begin\{table\}.*?\\end\{table\}", text, flags=re.S)
    return next(table for table in tables if f"\\caption{{{latex_escape(task_set)}:" in table)


def row_of(table: str, n_way: int) -> str:
    return next(line for line in table.splitlines() if line.startswith(f"{n_way} & "))


# --- summary.tex


def test_latex_has_one_booktabs_table_per_task_set_with_escaped_names(results):
    summary, paired = results
    text = summary_latex(summary, paired, 0.95)
    assert text.count("\\begin{table}") == text.count("\\end{table}") == 3  # cross, within, official
    assert text.count("\\begin{tabular}") == text.count("\\end{tabular}") == 3
    for task_set, protocol in [("cross", "cross"), ("within", "within"), ("official", "official")]:
        table = table_of(text, task_set)
        rules = [table.index(rule) for rule in ("\\toprule", "\\midrule", "\\bottomrule")]
        assert rules == sorted(rules) and all(table.count(rule) == 1 for rule in
                                              ("\\toprule", "\\midrule", "\\bottomrule"))
        assert f"{protocol} protocol, evaluation alphabets, 1-shot" in table
        assert table.count("{") == table.count("}")
    assert "$N$ & chance & net\\_one & net\\_two & nearest\\_neighbor & random \\\\" in text
    assert "20 episodes per $N$" in table_of(text, "official")
    assert re.search(r"(?<!\\)_", text) is None  # every underscore escaped, labels included
    assert latex_escape("a_b & 50% {x} #1 $y ~^\\") == \
        "a\\_b \\& 50\\% \\{x\\} \\#1 \\$y \\textasciitilde{}\\textasciicircum{}\\textbackslash{}"


def test_latex_gives_each_k_of_a_task_set_a_table_and_a_label_of_its_own(results):
    summary, paired = results
    five_shot = summary[summary.task_set == "cross"].assign(k_shot=5)
    text = summary_latex(pd.concat([summary, five_shot], ignore_index=True), paired, 0.95)
    labels = re.findall(r"\\label\{([^}]*)\}", text)
    assert len(labels) == len(set(labels)) == 4
    assert {"tab:cross-1shot", "tab:cross-5shot", "tab:within", "tab:official"} == set(labels)
    assert "cross protocol, evaluation alphabets, 5-shot" in text


def test_latex_cells_are_accuracy_and_interval_in_percent(results):
    summary, paired = results
    text = summary_latex(summary, paired, 0.95)
    row = summary[(summary.task_set == "cross") & (summary.n_way == 5) & (summary.method == "random")].iloc[0]
    expected = f"{100 * row.accuracy:.1f} [{100 * row.ci_low:.1f}, {100 * row.ci_high:.1f}]"
    assert expected.startswith("20.0 [") and expected in row_of(table_of(text, "cross"), 5)
    assert row_of(table_of(text, "cross"), 5).startswith("5 & 20.0 & ")  # N, then chance


def test_the_best_method_is_bold_only_where_the_paired_interval_says_it_is_better(results):
    summary, paired = results
    text = summary_latex(summary, paired, 0.95)
    for task_set, n_way in [("cross", 2), ("cross", 5), ("within", 2), ("within", 3), ("official", 20)]:
        line = row_of(table_of(text, task_set), n_way)
        cells = line.removesuffix(" \\\\").split(" & ")[2:]
        bold = [method for method, cell in zip(RUN_ORDER, cells) if cell.startswith("\\textbf{")]
        assert bold == ([BOLD[(task_set, n_way)]] if (task_set, n_way) in BOLD else []), (task_set, n_way)
    # Both ways round of storage are exercised: the best is A in one bold row and B in the other.
    best_is_a = set()
    for (task_set, n_way), best in BOLD.items():
        pair = paired[(paired.task_set == task_set) & (paired.n_way == n_way)
                      & paired.method_a.isin(["net_one", "net_two"]) & paired.method_b.isin(["net_one", "net_two"])]
        assert len(pair) == 1 and pair.significant.iloc[0]
        best_is_a.add(pair.method_a.iloc[0] == best)
    assert best_is_a == {True, False}
    close = paired[(paired.task_set == "cross") & (paired.n_way == 5)
                   & paired.method_a.isin(["net_one", "net_two"]) & paired.method_b.isin(["net_one", "net_two"])]
    assert not close.significant.iloc[0]


def test_no_bold_without_the_pair_or_between_equal_methods(results):
    summary, paired = results
    row = summary[(summary.task_set == "cross") & (summary.n_way == 2)]
    assert bold_method(row, paired) == "net_one"
    assert bold_method(row, paired.iloc[0:0]) is None  # no paired test: no claim
    tied = row.assign(accuracy=np.where(row.method == "net_two", row.accuracy.max(), row.accuracy))
    assert bold_method(tied, paired) is None


# --- the heatmap


def test_heatmap_cells_show_each_pair_both_ways_and_hatch_where_the_interval_includes_zero(results):
    _, paired = results
    cells = heatmap_cells(paired[(paired.task_set == "cross") & (paired.n_way == 5)])
    methods = ["net_one", "net_two", "nearest_neighbor", "random"]
    assert list(cells.difference.index) == list(cells.difference.columns) == methods
    difference = cells.difference.to_numpy()
    assert np.isnan(np.diag(difference)).all() and (np.diag(cells.annotation.to_numpy()) == "").all()
    assert not np.diag(cells.hatched.to_numpy()).any()
    assert np.allclose(difference, -difference.T, equal_nan=True)
    # net_two - net_one is -1 episode in 40: -2.5 points, interval includes 0: hatched both ways.
    assert cells.difference.loc["net_two", "net_one"] == pytest.approx(-2.5)
    assert (cells.annotation.loc["net_two", "net_one"], cells.annotation.loc["net_one", "net_two"]) == ("-2.5", "+2.5")
    assert cells.hatched.loc["net_two", "net_one"] and cells.hatched.loc["net_one", "net_two"]
    # net_one - random: 75% against 20%, clearly apart: not hatched.
    assert cells.annotation.loc["net_one", "random"] == "+55.0"
    assert not cells.hatched.loc["net_one", "random"] and not cells.hatched.loc["random", "net_one"]
    expected = {(a, b) for a, b, low, high in zip(*(paired[(paired.task_set == "cross") & (paired.n_way == 5)][c]
                                                     for c in ("method_a", "method_b", "ci_low", "ci_high")))
                if low <= 0 <= high}
    hatched = {(a, b) for a in methods for b in methods if cells.hatched.loc[a, b]}
    assert hatched == expected | {(b, a) for a, b in expected}


def test_heatmap_n_is_20_when_shared_else_the_largest_n_most_task_sets_have(results):
    _, paired = results
    assert heatmap_n_way(paired) == 2  # 20 is official's alone; cross and within share only 2
    assert heatmap_n_way(paired[paired.task_set == "cross"]) == 5
    twenty = pd.concat([paired, paired[paired.n_way == 2].assign(n_way=20, task_set="cross"),
                        paired[paired.n_way == 2].assign(n_way=20, task_set="within")])
    assert heatmap_n_way(twenty) == 20
    assert heatmap_n_way(paired.iloc[0:0]) is None


def test_heatmap_writes_png_and_the_same_svg_twice_hatching_the_unsure_cells(results, tmp_path):
    _, paired = results
    paths = plot_paired_heatmap(paired, 5, tmp_path / "first")
    assert [path.name for path in paths] == ["first.png", "first.svg"]
    assert paths[0].stat().st_size > 10_000
    again = plot_paired_heatmap(paired, 5, tmp_path / "second")
    svg = paths[1].read_text()
    assert svg == again[1].read_text()
    hatched = int(heatmap_cells(paired[paired.n_way == 5]).hatched.to_numpy().sum())
    assert hatched >= 2 and svg.count("fill: url(#h") == hatched  # one hatch pattern per unsure cell
    for text in ("-2.5", "+55.0", "N = 5", "cross (cross, 1-shot)"):
        assert text in svg, text
    with pytest.raises(ValueError, match="N = 7"):
        plot_paired_heatmap(paired, 7, tmp_path / "none")


# --- the figure


def error_bars(fig) -> dict[str, tuple]:
    """label ("method / task set") -> (x of the markers, lower and upper ends of the bars)."""
    from matplotlib.container import ErrorbarContainer

    found = {}
    for ax in fig.axes:
        for container in ax.containers:
            if isinstance(container, ErrorbarContainer):
                data_line, _, (bars,) = container.lines
                ends = np.array([segment[:, 1] for segment in bars.get_segments()])
                found[container.get_label()] = (list(data_line.get_xdata()), ends[:, 0], ends[:, 1])
    return found


def test_the_figure_has_an_error_bar_at_every_measured_n(results):
    summary, _ = results
    fig = accuracy_figure(summary, 0.95, REFERENCES)
    try:
        bars = error_bars(fig)
        assert set(bars) == {f"{m} / {t}" for m, t in zip(summary.method, summary.task_set)}
        for (method, task_set), rows in summary.groupby(["method", "task_set"]):
            x, low, high = bars[f"{method} / {task_set}"]
            rows = rows.sort_values("n_way")
            assert x == list(rows.n_way)
            assert low == pytest.approx(100 * np.minimum(rows.ci_low, rows.accuracy))
            assert high == pytest.approx(100 * np.maximum(rows.ci_high, rows.accuracy))
        # Caps wider than the markers: an interval of a few tenths of a point still shows.
        for ax in fig.axes:
            for container in ax.containers:
                data_line, caps, _ = container.lines
                assert caps[0].get_markersize() == 2 * CAP_POINTS > data_line.get_markersize()
    finally:
        pyplot().close(fig)


def test_the_figure_says_k_and_the_episode_counts_with_a_row_of_panels_per_k(results, tmp_path):
    summary, _ = results
    five_shot = summary[summary.task_set == "cross"].assign(task_set="cross_5shot", k_shot=5, episodes=10)
    both = pd.concat([summary, five_shot], ignore_index=True)
    svg = plot_accuracy_vs_n(both, tmp_path / "figure", 0.95, REFERENCES)[1].read_text()
    for text in ("1-shot, 40 episodes per N", "1-shot, 40 episodes per N; official: 20 runs",
                 "5-shot, 10 episodes per N", "across alphabets (cross)", "bars: 95% CI"):
        assert text in svg, text
    fig = accuracy_figure(both, 0.95, REFERENCES)
    try:
        shown = [ax for ax in fig.axes if ax.get_visible()]
        titles = [ax.get_title() for ax in shown]
        # cross and within with 1 shot; cross alone with 5 (its within panel stays empty, hidden).
        assert len(shown) == 3 and sum("5-shot" in title for title in titles) == 1
        assert "cross_5shot" in {label.split(" / ")[1] for label in error_bars(fig)}
    finally:
        pyplot().close(fig)
    assert plot_accuracy_vs_n(both, tmp_path / "again", 0.95, REFERENCES)[1].read_text() == svg


def shots_summary(results, shots=(1, 2, 3, 5, 10)) -> pd.DataFrame:
    """The 5-way cross rows (and the official runs) as if run at each k: accuracy rising with k."""
    summary, _ = results
    cross = summary[(summary.task_set == "cross") & (summary.n_way == 5)]
    rows = [cross.assign(k_shot=k, accuracy=np.minimum(1.0, cross.accuracy + 0.02 * k)) for k in shots]
    return pd.concat([*rows, summary[summary.task_set == "official"]], ignore_index=True)


def test_the_figure_against_k_has_a_line_per_method_through_every_k(results, tmp_path):
    summary = shots_summary(results)
    assert shots_n_way(summary) == 5
    assert shots_n_way(shots_summary(results, shots=(1, 5))) is None  # two k: the tables say it
    fig = shots_figure(summary, 5, 0.95, REFERENCES)
    try:
        (ax,) = [ax for ax in fig.axes if ax.get_visible()]  # the official runs have one k: no panel
        assert "5-way, 40 episodes per k" in ax.get_title() and "cross" in ax.get_title()
        for container in ax.containers:
            method = container.get_label()
            x, y = container.lines[0].get_data()
            expected = summary[(summary.task_set == "cross") & (summary.method == method)].sort_values("k_shot")
            assert list(x) == [1, 2, 3, 5, 10] and np.allclose(y, 100 * expected.accuracy)
        assert {c.get_label() for c in ax.containers} == set(RUN_ORDER)
    finally:
        pyplot().close(fig)
    paths = plot_accuracy_vs_k(summary, 5, tmp_path / "shots", 0.95, REFERENCES)
    assert [p.suffix for p in paths] == [".png", ".svg"] and all(p.stat().st_size for p in paths)


def test_a_report_of_a_shots_run_draws_accuracy_against_k_instead_of_against_n(tmp_path):
    from benchmark.report import write_report

    outcomes = {key: methods for key, methods in OUTCOMES.items() if key == ("cross", "cross", 5)}
    records = pd.concat([make_records(outcomes, k_shot=k) for k in (1, 2, 5)], ignore_index=True)
    write_report(tmp_path, records, STATS, runs=[])
    assert (tmp_path / "accuracy_vs_k.png").exists() and not (tmp_path / "accuracy_vs_n.png").exists()
    (tmp_path / "lake").mkdir()
    write_report(tmp_path / "lake", make_records(), STATS, runs=[])  # several N, one k: against N only
    assert (tmp_path / "lake" / "accuracy_vs_n.png").exists() and not (tmp_path / "lake" / "accuracy_vs_k.png").exists()
