"""The figure of a report: accuracy against the number of ways N, one panel per protocol.

Each panel holds the task sets of one protocol (cross, within): colour says the method,
line style the task set, so a trained method's curve on background (training) alphabets,
dashed, sits above its curve on evaluation alphabets, solid, by as much as it overfits.
Untrained methods (random, 1-NN) are grey reference lines. Bands are the episode interval;
short vertical bars, where a method ran with several training seeds, span the per-seed
accuracies. Task sets of a single N (Lake's official runs) are diamonds with error bars,
in the panel of their protocol (the official runs are within-alphabet).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

TRAINED_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
                  "#17becf", "#bcbd22"]
REFERENCE_COLORS = ["#4d4d4d", "#a6a6a6", "#7a7a7a"]
PANEL_TITLES = {"cross": "across alphabets (cross)", "within": "within one alphabet (within)",
                "official": "Lake et al.'s official runs"}
SPLIT_STYLES = {"evaluation": ["-", "-.", (0, (5, 1, 1, 1, 1, 1))], "background": ["--", ":"]}
# Where single-N task sets go when their protocol has no curves of its own.
POINT_PANEL = {"official": "within"}


def plot_accuracy_vs_n(summary: pd.DataFrame, stem: Path, confidence: float,
                       references: set[str] = frozenset()) -> list[Path]:
    """Write stem.png and stem.svg; `references` names the untrained methods (drawn in grey)."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed; must come before pyplot
    import matplotlib.pyplot as plt

    summary = summary.assign(n_count=summary.groupby(["task_set", "k_shot"])["n_way"].transform("nunique"))
    curves, points = summary[summary.n_count > 1], summary[summary.n_count == 1]
    panels = list(dict.fromkeys(curves["protocol"])) or list(dict.fromkeys(points["protocol"]))
    point_panel = {p: p if p in panels else POINT_PANEL.get(p, panels[0]) for p in points["protocol"]}
    point_panel = {p: target if target in panels else panels[0] for p, target in point_panel.items()}
    colors = _method_colors(list(dict.fromkeys(summary["method"])), references)
    styles = _task_set_styles(curves)

    with plt.rc_context({"font.size": 13, "axes.titlesize": 13, "legend.fontsize": 12,
                         # Text stays text in the SVG (searchable, small); ids do not change between runs.
                         "svg.fonttype": "none", "svg.hashsalt": "oneshot-benchmark"}):
        fig, axes = plt.subplots(1, len(panels), figsize=(max(7.0, 4.6 * len(panels) + 0.6), 5.2),
                                 sharey=True, squeeze=False)
        axes = dict(zip(panels, axes[0]))
        for (method, task_set), curve in curves.groupby(["method", "task_set"], sort=False):
            _draw_curve(axes[curve["protocol"].iloc[0]], curve.sort_values("n_way"),
                        colors[method], styles[task_set][0], method in references)
        _draw_points(axes, points, point_panel, colors)
        for protocol, ax in axes.items():
            shown = pd.concat([curves[curves.protocol == protocol],
                               points[points.protocol.map(point_panel) == protocol]])
            _decorate_panel(ax, protocol, int(max(shown["n_way"].max(), 2)))
        axes[panels[0]].set_ylabel(f"accuracy (%), {100 * confidence:g}% CI bands")
        handles = _legend_handles(colors, styles, points, seeded=bool((summary["seeds"] > 1).any()))
        legend = fig.legend(handles=handles, loc="lower center", ncol=3 if len(panels) > 1 else 2,
                            bbox_to_anchor=(0.5, 0.0), frameon=False, columnspacing=1.2,
                            handlelength=2.4)
        fig.canvas.draw()  # the legend's height is known once drawn: leave room for it below
        height = legend.get_window_extent().height / (fig.get_figheight() * fig.dpi)
        fig.tight_layout(rect=(0, min(height + 0.01, 0.5), 1, 1))
        paths = [Path(stem).with_suffix(".png"), Path(stem).with_suffix(".svg")]
        fig.savefig(paths[0], dpi=150)
        fig.savefig(paths[1], metadata={"Date": None})  # no timestamp: same records, same file
        plt.close(fig)
    return paths


def _draw_points(axes: dict, points: pd.DataFrame, point_panel: dict, colors: dict) -> None:
    """Task sets of a single N (the official runs) as diamonds with their interval."""
    point_methods = list(dict.fromkeys(points["method"]))
    for row in points.itertuples():
        # A small offset per method keeps the diamonds from hiding one another.
        x = row.n_way + 0.8 * (point_methods.index(row.method) - (len(point_methods) - 1) / 2)
        # A percentile interval need not contain the accuracy (nor does rounding always keep
        # it inside): matplotlib refuses negative error bars, so such a side is drawn as 0.
        below = max(0.0, 100 * (row.accuracy - row.ci_low))
        above = max(0.0, 100 * (row.ci_high - row.accuracy))
        axes[point_panel[row.protocol]].errorbar(
            x, 100 * row.accuracy, fmt="D", color=colors[row.method], markersize=5,
            markeredgecolor="white", markeredgewidth=0.6, capsize=3, zorder=4,
            yerr=[[below], [above]])


def _decorate_panel(ax, protocol: str, max_n: int) -> None:
    """Chance (1/N) as a dotted line, title, axes and grid."""
    n_values = np.arange(2, max_n + 1)
    ax.plot(n_values, 100 / n_values, ":", color="black", linewidth=1, zorder=1)
    ax.set_title(PANEL_TITLES.get(protocol, protocol))
    ax.set_xlabel("number of ways N")
    ax.set_xlim(0, max_n + 2)
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)


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
        label = f"{split} alphabets" + (f" ({', '.join(names)})" if several else "")
        handles.append(Line2D([], [], color="black", linestyle=style, linewidth=1.5, label=label))
    for task_set, n_way in points[["task_set", "n_way"]].drop_duplicates().itertuples(index=False):
        handles.append(Line2D([], [], color="black", marker="D", linestyle="none", markersize=5,
                              label=f"{task_set} {n_way}-way"))
    handles.append(Line2D([], [], color="black", linestyle=":", linewidth=1, label="chance 1/N"))
    if seeded:
        handles.append(Line2D([], [], color="black", marker="|", markersize=10, linestyle="none",
                              label="range over seeds"))
    return handles


def _method_colors(methods: list[str], references: set[str]) -> dict[str, str]:
    """Trained methods in colours, then the untrained references in greys (legend order)."""
    trained = [m for m in methods if m not in references]
    grey = [m for m in methods if m in references]
    return {**{m: TRAINED_COLORS[i % len(TRAINED_COLORS)] for i, m in enumerate(trained)},
            **{m: REFERENCE_COLORS[i % len(REFERENCE_COLORS)] for i, m in enumerate(grey)}}


def _task_set_styles(curves: pd.DataFrame) -> dict[str, tuple]:
    """(line style, split) of each curved task set: solid for the first evaluation set of a
    protocol, dashed for the first background one, other styles for further ones."""
    styles, used = {}, {}
    for task_set, split, protocol in curves[["task_set", "split", "protocol"]].drop_duplicates(
            "task_set").itertuples(index=False):
        options = SPLIT_STYLES.get(split, ["-"])
        count = used.get((protocol, split), 0)
        used[(protocol, split)] = count + 1
        styles[task_set] = (options[count % len(options)], split)
    return styles


def _draw_curve(ax, curve: pd.DataFrame, color: str, style, reference: bool) -> None:
    x = curve["n_way"].to_numpy()
    ax.plot(x, 100 * curve["accuracy"], linestyle=style, color=color, zorder=3,
            linewidth=1.4 if reference else 2.0, marker=None if reference else "o", markersize=3)
    ax.fill_between(x, 100 * curve["ci_low"], 100 * curve["ci_high"], color=color,
                    alpha=0.12 if reference else 0.2, linewidth=0, zorder=2)
    seeded = curve[curve["seeds"] > 1]
    if len(seeded):
        ax.vlines(seeded["n_way"], 100 * seeded["seed_min"], 100 * seeded["seed_max"], color=color,
                  linewidth=1.2, zorder=3)
