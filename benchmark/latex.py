"""summary.tex: a report's accuracy tables as LaTeX, ready for a paper.

One booktabs table per task set, laid out as summary.md's (rows N, columns methods, cells
"accuracy [low, high]" in %). In each row the best method is in bold only where the paired
interval of its difference to the second best excludes 0: the two ran on the same episodes,
so the paired interval, not the overlap of their own intervals, says whether it is better.
"""

from __future__ import annotations

import re

import pandas as pd

from tasks.protocols import SPLIT_DESCRIPTIONS

# Characters LaTeX reads as commands in text, and what prints them.
LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                  "^": r"\textasciicircum{}"}
PREAMBLE = "% Tables of a benchmark report. Needs \\usepackage{booktabs} in the preamble."


def latex_escape(text: str) -> str:
    """`text` as LaTeX prints it literally (method names hold underscores)."""
    return "".join(LATEX_SPECIALS.get(character, character) for character in str(text))


def summary_latex(summary: pd.DataFrame, paired: pd.DataFrame, confidence: float) -> str:
    """One booktabs table per task set of `summary`; `paired` decides which cells are bold."""
    tables = [PREAMBLE]
    for (task_set, split, protocol, k_shot), table in summary.groupby(
            ["task_set", "split", "protocol", "k_shot"], sort=False):
        caption = _caption(task_set, split, protocol, k_shot, table, confidence)
        # One label per table: with several k, a task set has several tables.
        label = f"tab:{re.sub(r'[^A-Za-z0-9]+', '-', task_set)}"
        if summary.loc[summary.task_set == task_set, "k_shot"].nunique() > 1:
            label += f"-{k_shot}shot"
        tables.append(_table(table, paired, caption, label))
    return "\n\n".join(tables) + "\n"


def _caption(task_set: str, split: str, protocol: str, k_shot: int, table: pd.DataFrame,
             confidence: float) -> str:
    level = f"{100 * confidence:g}\\%"
    episodes = "/".join(map(str, sorted(set(table["episodes"]))))
    return (f"{latex_escape(task_set)}: {latex_escape(protocol)} protocol, "
            f"{latex_escape(SPLIT_DESCRIPTIONS.get(split, split))}, "
            f"{k_shot}-shot, {episodes} episodes per $N$. Accuracy in \\% with its {level} "
            f"percentile-bootstrap interval over episodes; chance is $100/N$. Bold: the best method "
            f"of a row, where the {level} paired interval of its difference to the second best "
            f"excludes 0.")


def _table(table: pd.DataFrame, paired: pd.DataFrame, caption: str, label: str) -> str:
    """A table environment: rows N, a chance column, then a column per method."""
    methods = list(dict.fromkeys(table["method"]))
    names = [_column_name(m, int(table[table.method == m].seeds.max())) for m in methods]
    lines = ["\\begin{table}[htbp]", "\\centering", "\\small", f"\\caption{{{caption}}}",
             f"\\label{{{label}}}", f"\\begin{{tabular}}{{rr{'c' * len(methods)}}}", "\\toprule",
             " & ".join(["$N$", "chance", *names]) + " \\\\", "\\midrule"]
    for n_way, row in table.groupby("n_way", sort=True):
        bold = bold_method(row, paired)
        cells = {r.method: _cell(r, bold=r.method == bold) for r in row.itertuples()}
        lines.append(" & ".join([str(n_way), f"{100 / n_way:.1f}", *(cells.get(m, "--") for m in methods)])
                     + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(lines)


def _column_name(method: str, seeds: int) -> str:
    """The method, and its seed count when it trained with several (the mean over seeds is shown)."""
    return latex_escape(method) + (f" ({seeds} seeds)" if seeds > 1 else "")


def _cell(row, bold: bool) -> str:
    text = f"{100 * row.accuracy:.1f} [{100 * row.ci_low:.1f}, {100 * row.ci_high:.1f}]"
    return f"\\textbf{{{text}}}" if bold else text


def bold_method(row: pd.DataFrame, paired: pd.DataFrame) -> str | None:
    """The best method of one row (one task set and N) when the paired interval of its
    difference to the second best excludes 0; None when it does not, or is not in `paired`."""
    ranked = row.sort_values("accuracy", ascending=False, kind="stable")
    if len(ranked) < 2 or ranked["accuracy"].iloc[0] == ranked["accuracy"].iloc[1]:
        return None
    best, second = ranked["method"].iloc[0], ranked["method"].iloc[1]
    first = ranked.iloc[0]
    pairs = paired[(paired.task_set == first.task_set) & (paired.n_way == first.n_way)
                   & (paired.k_shot == first.k_shot)]
    for pair in pairs.itertuples():
        # A pair is stored once, either way round: (second, best) holds second - best.
        if (pair.method_a, pair.method_b) == (best, second):
            return best if pair.ci_low > 0 else None
        if (pair.method_a, pair.method_b) == (second, best):
            return best if pair.ci_high < 0 else None
    return None
