"""Tables that fit the console: what a reader must copy is never cut.

A CI log is 80 columns wide (no terminal, no ``COLUMNS``), a developer's terminal
anything from 60 up. :func:`fit_table` keeps the columns that must be read whole (an
allocation id to paste into ``release``) at their full width, lets the columns marked
``fold`` wrap onto more lines, and when that is not enough drops the least needed
columns, one at a time, naming them in one line under the table.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rich.cells import cell_len
from rich.console import Console, RenderableType
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

#: ``keep`` of a column that is never dropped.
ALWAYS = 1_000


@dataclass(frozen=True)
class Column:
    """A column of a fitted table. Lower ``keep`` goes first when space runs out."""

    header: str
    keep: int = ALWAYS
    fold: bool = False  # may wrap onto more lines (else it is shown whole, or dropped)
    justify: str = "left"
    min_fold: int = 10  # the narrowest a folding column gets


def _width(cell: Any) -> int:
    text = cell.plain if isinstance(cell, Text) else str(cell)
    return max((cell_len(line) for line in text.split("\n")), default=0)


def fit_table(console: Console, columns: Sequence[Column], rows: Sequence[Sequence[Any]],
              make_table: Callable[[], Table]) -> tuple[Table, list[str]]:
    """A table of ``rows`` (one cell per column) made by ``make_table`` that fits
    ``console.width``, and the headers of the columns left out to fit."""
    naturals = [max([_width(c.header), *(_width(row[i]) for row in rows)]) for i, c in enumerate(columns)]
    minimums = [min(n, c.min_fold) if c.fold else n for c, n in zip(columns, naturals)]
    kept = list(range(len(columns)))
    while True:
        probe = make_table()
        for _ in kept:
            probe.add_column("")
        probe.add_row(*["x"] * len(kept))
        overhead = Measurement.get(console, console.options, probe).maximum - len(kept)
        if sum(minimums[i] for i in kept) + overhead <= console.width:
            break
        droppable = [i for i in kept if columns[i].keep < ALWAYS]
        if not droppable:
            break
        kept.remove(min(reversed(droppable), key=lambda i: columns[i].keep))
    table = make_table()
    for i in kept:
        c = columns[i]
        if c.fold:
            table.add_column(c.header, justify=c.justify, overflow="fold")  # type: ignore[arg-type]
        else:
            table.add_column(c.header, justify=c.justify, no_wrap=True, min_width=naturals[i])  # type: ignore[arg-type]
    for row in rows:
        table.add_row(*(row[i] for i in kept))
    dropped = [c.header for i, c in enumerate(columns) if i not in kept]
    return table, dropped


def dropped_note(console: Console, dropped: Sequence[str]) -> RenderableType | None:
    """One line naming the columns a table left out, and how to see them."""
    if not dropped:
        return None
    return Text(f"(not shown at {console.width} columns: {', '.join(dropped)}; "
                "widen the terminal, set COLUMNS, or use --json)", style="dim")


def print_fitted(console: Console, table: Table, dropped: Sequence[str]) -> None:
    console.print(table)
    note = dropped_note(console, dropped)
    if note is not None:
        console.print(note, soft_wrap=True)
