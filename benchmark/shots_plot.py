"""accuracy_vs_k.png/.svg: accuracy against the number of shots k at one N, a panel per task
set that was run with at least three values of k (configs/shots.yaml: N = 20, k = 1, 2, 3,
5, 10). It shows how much each method gains from more examples of a class, which the
accuracy-against-N figure, a row of panels per k, does not put side by side.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from benchmark.plots import (CAP_POINTS, FIGURE_STYLE, PANEL_TITLES, TITLE_CHARACTERS, error_sizes,
                             method_colors, pyplot, save_figure)

MIN_SHOTS = 3  # fewer values of k make a line of two points: the tables say as much
PREFERRED_N = 20  # the N papers report, when the task sets have it


def shots_n_way(summary: pd.DataFrame) -> int | None:
    """The N to draw: among those at which some task set has MIN_SHOTS values of k or more, 20
    when it is one of them, else the one with the most such task sets (the largest on a tie).
    None when no task set has that many values of k at any N."""
    shots = summary.groupby(["task_set", "n_way"])["k_shot"].nunique()
    enough = shots[shots >= MIN_SHOTS].reset_index()
    if enough.empty:
        return None
    if PREFERRED_N in set(enough["n_way"]):
        return PREFERRED_N
    counts = enough.groupby("n_way").size()
    return int(counts[counts == counts.max()].index.max())


def plot_accuracy_vs_k(summary: pd.DataFrame, n_way: int, stem: Path, confidence: float,
                       references: set[str] = frozenset()) -> list[Path]:
    """Write stem.png and stem.svg; `references` names the untrained methods (drawn in grey)."""
    with pyplot().rc_context(FIGURE_STYLE):
        return save_figure(shots_figure(summary, n_way, confidence, references), stem)


def shots_figure(summary: pd.DataFrame, n_way: int, confidence: float, references: set[str] = frozenset()):
    at_n = summary[summary["n_way"] == n_way]
    panels = [(name, rows) for name, rows in at_n.groupby("task_set", sort=False)
              if rows["k_shot"].nunique() >= MIN_SHOTS]
    colors = method_colors(list(dict.fromkeys(at_n["method"])), references)
    fig, grid = pyplot().subplots(1, len(panels), sharey=True, squeeze=False,
                                  figsize=(max(7.0, 4.8 * len(panels) + 0.6), 5.6), layout="constrained")
    for ax, (task_set, rows) in zip(grid[0], panels):
        for method, curve in rows.groupby("method", sort=False):
            curve = curve.sort_values("k_shot")
            ax.errorbar(curve["k_shot"], 100 * curve["accuracy"], yerr=error_sizes(curve), fmt="o",
                        color=colors[method], markersize=4, linewidth=1.6, elinewidth=1.0, capsize=CAP_POINTS,
                        label=method, linestyle="--" if method in references else "-")
        ax.axhline(100 / n_way, linestyle=":", color="black", linewidth=1, label=f"chance 1/{n_way}")
        shots = sorted(set(rows["k_shot"]))
        ax.set_xticks(shots)
        ax.set_xlabel("number of shots k (supports per class)")
        episodes = "/".join(map(str, sorted(set(rows["episodes"]))))
        title = f"{task_set}: {PANEL_TITLES.get(rows['protocol'].iloc[0], rows['protocol'].iloc[0])}"
        detail = f"{n_way}-way, {episodes} episodes per k"
        ax.set_title(f"{title}\n{detail}" if len(title) <= TITLE_CHARACTERS else f"{task_set}\n{detail}")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    grid[0][0].set_ylabel(f"accuracy (%), bars: {100 * confidence:g}% CI")
    handles, labels = grid[0][0].get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda i: labels[i].startswith("chance"))  # methods first
    fig.legend([handles[i] for i in order], [labels[i] for i in order], loc="outside lower center",
               ncol=min(4, len(labels)), frameon=False)
    return fig
