"""Tables for the terminal: numbers right-aligned, floats to 4 digits, missing values as "–", fitted to the width."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pandas is imported by whoever made the frame; the CLI starts quicker without it
    import pandas as pd


def _cell(value, kind: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if kind == "f":
        return f"{value:.4f}"
    return str(value)


def print_table(df: "pd.DataFrame", title: str | None = None, console=None) -> None:
    """Print ``df`` as a rich table that wraps text columns rather than cutting numbers at narrow widths."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = console or Console()
    # titles and headers are Text, never rich markup: a bracket in a model name or a column is printed as written
    table = Table(title=None if title is None else Text(str(title)), show_lines=False, title_justify="left")
    kinds = [df[c].dtype.kind for c in df.columns]
    cells = [[_cell(v, k) for v, k in zip(row, kinds)] for row in df.itertuples(index=False)]
    spans = []  # per column: numeric?, its longest cell, its header's length
    for i, (col, kind) in enumerate(zip(df.columns, kinds)):
        longest = max((len(r[i]) for r in cells), default=1)
        spans.append((kind in "fiu", longest, len(str(col))))
    natural = 1 + sum(max(cell, head) + 3 for _, cell, head in spans)  # + padding and a border per column
    fits = natural <= console.width
    needed = 1  # the narrowest width at which no number is cut
    for col, (numeric, longest, head) in zip(df.columns, spans):
        # numbers are never cut and short labels (method, group names) not folded; when the table does not fit,
        # long headers fold within their column (a numeric column then has the fixed width of its longest cell
        # or a short header: rich only shrinks the others) and long texts wrap
        if numeric:
            width = max(longest, min(head, 6))
            table.add_column(Text(str(col)), justify="right", overflow="fold",
                             **({"min_width": width} if fits else {"width": width}))
        else:
            width = min(longest, 14)
            table.add_column(Text(str(col)), justify="left", overflow="fold", min_width=width)
        needed += width + 3
    for row in cells:
        table.add_row(*[Text(c) for c in row])
    if needed > console.width:  # too many columns: drawn on a wider console on the same stream (the terminal
        console = Console(file=console.file, width=needed, color_system=console.color_system,  # wraps its lines)
                          force_terminal=console.is_terminal)
    console.print(table)
