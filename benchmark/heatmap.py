"""paired_heatmap.png/.svg: every pair of methods at one N, as a methods x methods matrix.

A panel per task set: the cell in row A, column B is accuracy(A) - accuracy(B) in points on
the same episodes, coloured on a diverging scale centred on 0 (the same scale in every
panel), annotated with the difference, and hatched where its paired interval includes 0: a
reader sees at once which differences are there and which could be noise. Each pair is
stored once in paired.csv; the matrix shows it both ways round (the difference and its
interval change sign). The diagonal, a method against itself, is empty.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.plots import FIGURE_STYLE, pyplot, save_figure

# The N papers report (Lake et al.'s official runs are 20-way): shown when the task sets have it.
PREFERRED_N = 20
HATCH = "///"
COLORMAP = "RdBu"  # blue: the row's method is better, red: worse


@dataclass
class HeatmapCells:
    """One panel's matrix, rows and columns the methods: difference (row - column) in points,
    its annotation, and whether its interval includes 0 (hatched). NaN, "" and False on the
    diagonal and for pairs not in paired.csv."""

    difference: pd.DataFrame
    annotation: pd.DataFrame
    hatched: pd.DataFrame


def heatmap_n_way(paired: pd.DataFrame) -> int | None:
    """The N to show: among the N that the most task sets have, 20 when it is one of them,
    else the largest. None when there is no pair at all."""
    if paired.empty:
        return None
    task_sets = paired.groupby("n_way")["task_set"].nunique()
    candidates = task_sets[task_sets == task_sets.max()].index
    return PREFERRED_N if PREFERRED_N in candidates else int(candidates.max())


def heatmap_cells(pairs: pd.DataFrame) -> HeatmapCells:
    """The matrix of one panel from its rows of paired.csv (one task set, one N)."""
    # In the order the pairs name them: A is listed before B, so this is the run's method order.
    methods = list(dict.fromkeys(m for pair in zip(pairs["method_a"], pairs["method_b"]) for m in pair))
    difference = pd.DataFrame(np.nan, index=methods, columns=methods)
    annotation = pd.DataFrame("", index=methods, columns=methods)
    hatched = pd.DataFrame(False, index=methods, columns=methods)
    for pair in pairs.itertuples():
        for row, column, sign in ((pair.method_a, pair.method_b, 1), (pair.method_b, pair.method_a, -1)):
            value = sign * 100 * pair.difference
            difference.loc[row, column] = value
            annotation.loc[row, column] = f"{value:+.1f}"
            hatched.loc[row, column] = bool(pair.ci_low <= 0 <= pair.ci_high)  # the same either way
    return HeatmapCells(difference, annotation, hatched)


def plot_paired_heatmap(paired: pd.DataFrame, n_way: int, stem: Path) -> list[Path]:
    """Write stem.png and stem.svg: a panel per task set (and k) that has pairs at N = n_way."""
    at_n = paired[paired["n_way"] == n_way]
    if at_n.empty:
        raise ValueError(f"no pair of methods at N = {n_way}: there is no heatmap to draw")
    panels = {key: heatmap_cells(rows) for key, rows in
              at_n.groupby(["task_set", "protocol", "k_shot"], sort=False)}
    with pyplot().rc_context({**FIGURE_STYLE, "hatch.linewidth": 0.6}):
        return save_figure(_heatmap_figure(panels, n_way), stem)


def _heatmap_figure(panels: dict[tuple, HeatmapCells], n_way: int):
    """Panels in rows of two, one colour scale (symmetric about 0) and one colour bar for all."""
    columns = min(2, len(panels))
    rows = -(-len(panels) // columns)
    limit = max(1.0, max(float(np.nanmax(np.abs(c.difference.to_numpy()))) for c in panels.values()))
    # About 0.65 inch a cell (no less than three cells' worth), plus room for the method names.
    side = 0.65 * max(3, *(len(c.difference) for c in panels.values()))
    # The layout engine is set once the panels are drawn: seaborn draws the whole figure once per
    # panel (to look at its tick labels), and a constrained layout at each of those draws cost seconds.
    fig, grid = pyplot().subplots(rows, columns, squeeze=False,
                                  figsize=((side + 1.6) * columns + 1.2, (side + 1.2) * rows + 0.6))
    axes = list(grid.ravel())
    for ax, cells in zip(axes, panels.values()):
        # seaborn draws the whole figure once per panel to look at its tick labels: with the
        # other panels hidden meanwhile, each of those draws costs one panel, not all of them.
        for other in axes:
            other.set_visible(other is ax)
        _draw_colours(ax, cells, limit)
    for ax, ((task_set, protocol, k_shot), cells) in zip(axes, panels.items()):
        ax.set_visible(True)
        _draw_marks(ax, cells, limit)
        ax.set_title(f"{task_set} ({protocol}, {k_shot}-shot)")
    for ax in axes[len(panels):]:
        ax.set_visible(False)  # an odd panel count leaves one square of the grid empty
    fig.set_layout_engine("constrained")
    fig.colorbar(axes[0].collections[0], ax=axes[:len(panels)], shrink=0.7,
                 label="row − column (accuracy points)")
    fig.suptitle(f"Paired differences at N = {n_way}: row A − column B\n"
                 f"hatched: the paired interval includes 0")
    return fig


def _annotate(ax, cells: HeatmapCells, limit: float) -> None:
    """Each cell's difference, dark on light colours and white on dark ones. (seaborn's own
    annotations draw the whole figure once per panel to find the colours: seconds a report.)"""
    from matplotlib import colormaps

    colors = colormaps[COLORMAP]((cells.difference.to_numpy() + limit) / (2 * limit))
    red, green, blue = (np.where(colors[..., i] <= 0.03928, colors[..., i] / 12.92,
                                 ((colors[..., i] + 0.055) / 1.055) ** 2.4) for i in range(3))
    luminance = 0.2126 * red + 0.7152 * green + 0.0722 * blue
    for (row, column), text in np.ndenumerate(cells.annotation.to_numpy()):
        if text:
            ax.text(column + 0.5, row + 0.5, text, ha="center", va="center", fontsize=10, zorder=3,
                    color=".15" if luminance[row, column] > 0.408 else "w")


def _draw_colours(ax, cells: HeatmapCells, limit: float) -> None:
    """seaborn's heatmap of the differences."""
    import seaborn

    with warnings.catch_warnings():
        # seaborn 0.13.2 calls a colormap method that newer matplotlib deprecates: not ours to fix,
        # and not worth a line on every report.
        warnings.filterwarnings("ignore", "The set_bad function", PendingDeprecationWarning)
        seaborn.heatmap(cells.difference, ax=ax, cmap=COLORMAP, center=0, vmin=-limit, vmax=limit,
                        square=True, linewidths=0.5, linecolor="white", cbar=False)


def _draw_marks(ax, cells: HeatmapCells, limit: float) -> None:
    """Over the colours: each cell's difference, a hatched square over each unsure cell, labels."""
    from matplotlib.patches import Rectangle

    _annotate(ax, cells, limit)
    for row, column in zip(*np.nonzero(cells.hatched.to_numpy())):
        # Below the annotations (zorder 3), above the colours: the number stays readable.
        ax.add_patch(Rectangle((column, row), 1, 1, fill=False, hatch=HATCH, edgecolor="0.35",
                               linewidth=0, zorder=2))
    ax.set_xlabel("B")
    ax.set_ylabel("A")
    ax.tick_params(axis="x", labelrotation=30)
    ax.tick_params(axis="y", labelrotation=0)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
