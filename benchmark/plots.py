"""The figure of a report: accuracy against the number of ways N, a panel per protocol (and per
number of shots k, in rows, when the summary holds several).

Each panel holds the task sets of one protocol (cross, within): colour says the method,
line style the task set, so a trained method's curve on background (training) alphabets,
dashed, sits above its curve on evaluation alphabets, solid, by as much as it overfits.
Untrained methods (random, 1-NN) are grey reference lines. Every measured N has a marker
with a vertical error bar, the episode interval: at 1000 episodes it is a point or two wide,
narrower than a line, so a band would not show it, while caps wider than the marker do. The
methods of a panel are spread a few points apart on screen (the data x stays N) so that their
bars do not hide one another. Wide pale bars, where a method ran with several training seeds,
span the per-seed accuracies. Task sets of a single N (Lake's official runs) are diamonds with
error bars, in the panel of their protocol (the official runs are within-alphabet). Each
panel's title says k and the episode counts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tasks.protocols import SPLIT_DESCRIPTIONS

TRAINED_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
                  "#17becf", "#bcbd22"]
REFERENCE_COLORS = ["#4d4d4d", "#a6a6a6", "#7a7a7a"]
PANEL_TITLES = {"cross": "across alphabets (cross)", "within": "within one alphabet (within)",
                "official": "Lake et al.'s official runs",
                "vinyals": "Vinyals et al.'s split, rotations as classes (vinyals)"}
SPLIT_STYLES = {"evaluation": ["-", "-.", (0, (5, 1, 1, 1, 1, 1))], "background": ["--", ":"],
                "vinyals_test": ["-", "-."], "vinyals_trainval": ["--", ":"]}
# Where single-N task sets go when their protocol has no curves of its own.
POINT_PANEL = {"official": "within"}
# What one episode of a protocol is called in the titles (Lake et al. call theirs runs).
EPISODE_NAMES = {"official": "runs"}
DODGE_POINTS = 3.5  # screen distance between the bars of two methods at the same N
CAP_POINTS = 4.0  # half the width of a cap: wider than a marker, so a tiny interval still shows
TITLE_CHARACTERS = 50  # about the width of a panel, in the title's font
# Text stays text in the SVG (searchable, small); ids do not change between runs.
FIGURE_STYLE = {"font.size": 13, "axes.titlesize": 12, "legend.fontsize": 12,
                "svg.fonttype": "none", "svg.hashsalt": "oneshot-benchmark"}


def pyplot():
    """matplotlib's pyplot on the Agg backend: reports are written without a display."""
    import matplotlib

    matplotlib.use("Agg")  # must come before pyplot
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, stem: Path) -> list[Path]:
    """Write stem.png and stem.svg and close the figure. Call inside `FIGURE_STYLE`, whose
    hash salt fixes the SVG's ids: with no date either, the same data give the same bytes."""
    paths = [Path(stem).with_suffix(".png"), Path(stem).with_suffix(".svg")]
    fig.savefig(paths[0], dpi=150)
    # The first save laid the figure out; the second keeps those positions instead of laying it
    # out again (a tenth of a second a figure, and nothing visible moves).
    fig.set_layout_engine("none")
    fig.savefig(paths[1], metadata={"Date": None})
    pyplot().close(fig)
    return paths


def plot_accuracy_vs_n(summary: pd.DataFrame, stem: Path, confidence: float,
                       references: set[str] = frozenset()) -> list[Path]:
    """Write stem.png and stem.svg; `references` names the untrained methods (drawn in grey)."""
    with pyplot().rc_context(FIGURE_STYLE):
        return save_figure(accuracy_figure(summary, confidence, references), stem)


def accuracy_figure(summary: pd.DataFrame, confidence: float, references: set[str] = frozenset()):
    """The figure, drawn (its panels' error-bar containers are labelled "method / task set");
    call inside `FIGURE_STYLE` when it is to be saved."""
    summary = summary.assign(n_count=summary.groupby(["task_set", "k_shot"])["n_way"].transform("nunique"))
    curves, points = summary[summary.n_count > 1], summary[summary.n_count == 1]
    protocols = list(dict.fromkeys(curves["protocol"])) or list(dict.fromkeys(points["protocol"]))
    shots = sorted(set(summary["k_shot"]))
    # Single-N task sets join a panel of the same k: their own protocol's, or a related one.
    target = {p: p if p in protocols else POINT_PANEL.get(p, protocols[0]) for p in points["protocol"]}
    points = points.assign(panel=[target[p] if target[p] in protocols else protocols[0]
                                  for p in points["protocol"]])
    curves = curves.assign(panel=curves["protocol"])
    colors = method_colors(list(dict.fromkeys(summary["method"])), references)
    styles = _task_set_styles(curves)

    fig, grid = pyplot().subplots(len(shots), len(protocols), sharey=True, squeeze=False,
                                  figsize=(max(7.0, 4.6 * len(protocols) + 0.6), 1.0 + 4.5 * len(shots)))
    axes = {(protocol, k): grid[row][column] for row, k in enumerate(shots)
            for column, protocol in enumerate(protocols)}
    for panel, ax in axes.items():
        panel_curves, panel_points = (frame[(frame.panel == panel[0]) & (frame.k_shot == panel[1])]
                                      for frame in (curves, points))
        if panel_curves.empty and panel_points.empty:
            ax.set_visible(False)  # no task set of this protocol with this k
            continue
        _draw_panel(ax, panel_curves, panel_points, colors, styles, references)
        _decorate_panel(ax, panel, _panel_detail(panel[1], panel_curves, panel_points),
                        int(max(pd.concat([panel_curves, panel_points])["n_way"].max(), 2)))
    for row in grid:
        row[0].set_ylabel(f"accuracy (%), bars: {100 * confidence:g}% CI")
    _add_legend(fig, _legend_handles(colors, styles, points, seeded=bool((summary["seeds"] > 1).any())),
                columns=3 if len(protocols) > 1 else 2)
    return fig


def _draw_panel(ax, curves: pd.DataFrame, points: pd.DataFrame, colors: dict, styles: dict,
                references: set[str]) -> None:
    """The curves and the single-N diamonds of one panel, each method at its own screen offset."""
    methods = list(dict.fromkeys(pd.concat([curves["method"], points["method"]])))
    offsets = {}
    # References sit far from the trained methods: each group is spread around N on its own.
    for group in ([m for m in methods if m not in references], [m for m in methods if m in references]):
        offsets.update({m: DODGE_POINTS * (i - (len(group) - 1) / 2) for i, m in enumerate(group)})
    for (method, task_set), curve in curves.groupby(["method", "task_set"], sort=False):
        transform = _shifted(ax, offsets[method])
        _draw_curve(ax, curve.sort_values("n_way"), colors[method], styles[task_set][0],
                    method in references, transform)
    errors = error_sizes(points)
    for position, row in enumerate(points.itertuples()):
        ax.errorbar(row.n_way, 100 * row.accuracy, yerr=errors[:, [position]], fmt="D",
                    color=colors[row.method], markersize=5, markeredgecolor="white",
                    markeredgewidth=0.6, capsize=CAP_POINTS, barsabove=True, zorder=4,
                    transform=_shifted(ax, offsets[row.method]), label=f"{row.method} / {row.task_set}")


def _shifted(ax, points: float):
    """Data coordinates moved `points` to the right on screen, whatever the x range."""
    from matplotlib.transforms import ScaledTranslation

    return ax.transData + ScaledTranslation(points / 72, 0, ax.figure.dpi_scale_trans)


def error_sizes(rows: pd.DataFrame) -> np.ndarray:
    """Error bar lengths below and above the accuracy, in points (2, rows).

    A percentile interval need not contain the accuracy (nor does rounding always keep it
    inside): matplotlib refuses negative error bars, so such a side is drawn as 0.
    """
    below = np.maximum(0.0, 100 * (rows["accuracy"] - rows["ci_low"]).to_numpy(dtype=float))
    above = np.maximum(0.0, 100 * (rows["ci_high"] - rows["accuracy"]).to_numpy(dtype=float))
    return np.vstack([below, above])


def _draw_curve(ax, curve: pd.DataFrame, color: str, style, reference: bool, transform) -> None:
    """A method's line, a marker with its interval at each N, its seed range behind them."""
    x, task_set = curve["n_way"].to_numpy(), curve["task_set"].iloc[0]
    # Lines thinner than before the bars came: the caps, not the lines, catch the eye.
    ax.plot(x, 100 * curve["accuracy"], linestyle=style, color=color, zorder=3,
            linewidth=1.2 if reference else 1.6, transform=transform)
    ax.errorbar(x, 100 * curve["accuracy"], yerr=error_sizes(curve), fmt="o", color=color,
                markersize=3, elinewidth=1.0, capsize=CAP_POINTS, capthick=1.0,
                barsabove=True, zorder=3.5, transform=transform, label=f"{curve['method'].iloc[0]} / {task_set}")
    seeded = curve[curve["seeds"] > 1]
    if len(seeded):
        ax.vlines(seeded["n_way"], 100 * seeded["seed_min"], 100 * seeded["seed_max"], color=color,
                  linewidth=6, alpha=0.3, zorder=2, transform=transform)


def _panel_detail(k_shot: int, curves: pd.DataFrame, points: pd.DataFrame) -> str:
    """"1-shot, 1000 episodes per N; official: 20 runs", or each task set's count where they differ."""
    counts = {name: "/".join(map(str, sorted(set(rows["episodes"]))))
              for name, rows in curves.groupby("task_set", sort=False)}
    parts = [f"{k_shot}-shot"]
    if len(set(counts.values())) == 1:
        parts[0] += f", {next(iter(counts.values()))} episodes per N"
    elif counts:
        parts.append("episodes per N: " + ", ".join(f"{name} {count}" for name, count in counts.items()))
    for (task_set, protocol), rows in points.groupby(["task_set", "protocol"], sort=False):
        count = "/".join(map(str, sorted(set(rows["episodes"]))))
        parts.append(f"{task_set}: {count} {EPISODE_NAMES.get(protocol, 'episodes')}")
    line = "; ".join(parts)
    return line if len(line) <= TITLE_CHARACTERS else "\n".join(parts)  # too wide: a line each


def _decorate_panel(ax, panel: tuple[str, int], detail: str, max_n: int) -> None:
    """Chance (1/N) as a dotted line, title (protocol, then k and episodes), axes and grid."""
    n_values = np.arange(2, max_n + 1)
    ax.plot(n_values, 100 / n_values, ":", color="black", linewidth=1, zorder=1)
    ax.set_title(f"{PANEL_TITLES.get(panel[0], panel[0])}\n{detail}")
    ax.set_xlabel("number of ways N")
    ax.set_xlim(0, max_n + 2)
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)


def _add_legend(fig, handles: list, columns: int) -> None:
    """The legend below the panels; the constrained layout leaves room for it (without a draw
    of its own to measure it: each draw of the figure costs a few hundred milliseconds)."""
    fig.set_layout_engine("constrained")
    fig.legend(handles=handles, loc="outside lower center", ncol=columns, frameon=False, columnspacing=1.2,
               handlelength=2.4)


def _legend_handles(colors: dict, styles: dict, points: pd.DataFrame, seeded: bool) -> list:
    """Methods by colour first (trained ones, then the grey references), then line styles."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=color, linewidth=2.5, label=method) for method, color in colors.items()]
    by_style = {}
    for task_set, (style, split) in styles.items():
        by_style.setdefault((style, split), []).append(task_set)
    # Names are needed only where one panel holds two task sets of the same split.
    several = any(style != SPLIT_STYLES.get(split, ["-"])[0] for style, split in by_style)
    for (style, split), names in by_style.items():
        label = SPLIT_DESCRIPTIONS.get(split, split) + (f" ({', '.join(names)})" if several else "")
        handles.append(Line2D([], [], color="black", linestyle=style, linewidth=1.5, label=label))
    for task_set, n_way in points[["task_set", "n_way"]].drop_duplicates().itertuples(index=False):
        handles.append(Line2D([], [], color="black", marker="D", linestyle="none", markersize=5,
                              label=f"{task_set} {n_way}-way"))
    handles.append(Line2D([], [], color="black", linestyle=":", linewidth=1, label="chance 1/N"))
    if seeded:
        handles.append(Line2D([], [], color="black", alpha=0.3, marker="|", markersize=12,
                              markeredgewidth=6, linestyle="none", label="range over seeds"))
    return handles


def method_colors(methods: list[str], references: set[str]) -> dict[str, str]:
    """Trained methods in colours, then the untrained references in greys (legend order)."""
    trained = [m for m in methods if m not in references]
    grey = [m for m in methods if m in references]
    return {**{m: TRAINED_COLORS[i % len(TRAINED_COLORS)] for i, m in enumerate(trained)},
            **{m: REFERENCE_COLORS[i % len(REFERENCE_COLORS)] for i, m in enumerate(grey)}}


def _task_set_styles(curves: pd.DataFrame) -> dict[str, tuple]:
    """(line style, split) of each curved task set: solid for the first evaluation set of a
    panel (protocol and k), dashed for the first background one, other styles for further ones."""
    styles, used = {}, {}
    columns = ["task_set", "split", "protocol", "k_shot"]
    for task_set, split, protocol, k_shot in curves[columns].drop_duplicates("task_set").itertuples(index=False):
        options = SPLIT_STYLES.get(split, ["-"])
        count = used.get((protocol, k_shot, split), 0)
        used[(protocol, k_shot, split)] = count + 1
        styles[task_set] = (options[count % len(options)], split)
    return styles
