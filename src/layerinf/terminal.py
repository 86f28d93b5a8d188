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
    for i, (col, kind) in enumerate(zip(df.columns, kinds)):
        numeric = kind in "fiu"
        longest = max((len(r[i]) for r in cells), default=1)
        # numbers are never cut and short labels (method, group names) never folded: long headers and long
        # texts give way instead (a header wraps at "_" boundaries as rich pleases)
        table.add_column(Text(str(col)), justify="right" if numeric else "left", overflow="fold",
                         min_width=longest if numeric else min(longest, 14))
    for row in cells:
        table.add_row(*[Text(c) for c in row])
    console.print(table)
