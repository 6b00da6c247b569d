"""Aligned plain-text tables for the terminal: the one table formatter of the command line."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def text_table(header: Sequence[str], rows: Iterable[Sequence], right: Iterable[int] = ()) -> str:
    """Columns padded to their widest cell, two spaces apart; columns in `right` (numbers)
    aligned right. Cells are shown with str()."""
    body = [[str(cell) for cell in row] for row in rows]
    lines = [list(header), *body]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    right = set(right)
    return "\n".join("  ".join(cell.rjust(width) if i in right else cell.ljust(width)
                               for i, (cell, width) in enumerate(zip(line, widths))).rstrip()
                     for line in lines)
