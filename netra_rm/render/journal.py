"""Human output of ``verify`` and ``history``. Nothing here decides anything; it only draws."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text


def clock_time(seconds: float | None) -> str:
    """A Unix time as local ``YYYY-mm-dd HH:MM:SS.mmm``."""
    if seconds is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds)) + f".{int(seconds * 1000) % 1000:03d}"


def short_time(seconds: float | None) -> str:
    """A Unix time as local ``HH:MM:SS.mmm``, for narrow tables."""
    return clock_time(seconds)[11:]


def render_verify(console: Console, report: Mapping[str, Any]) -> None:
    span = f"from {clock_time(report['first_time'])} to {clock_time(report['last_time'])}" \
        if report["events_checked"] else "no events yet"
    if report["clean"]:
        console.print(Text(f"CLEAN  {report['events_checked']} event(s) checked, {span}", style="bold green"))
    else:
        console.print(Text(f"FOUND {len(report['findings'])} problem(s) in {report['events_checked']} event(s), "
                           f"{span}", style="bold red"))
        table = Table(show_header=True)
        for column in ("kind", "when", "seq", "what"):
            table.add_column(column, overflow="fold")
        for f in report["findings"]:
            table.add_row(f["kind"], clock_time(f["time"]), "-" if f["seq"] is None else str(f["seq"]), f["message"])
        console.print(table)
    for note in report["notes"]:
        console.print(Text(f"note: {note}", style="dim"))
    files = ", ".join(report["journal_files"]) or "(no journal yet)"
    console.print(Text(f"ledger: {report['ledger']}  journal: {files}", style="dim"))


def render_history(console: Console, events: Sequence[Mapping[str, Any]]) -> None:
    notes = [_note(e) for e in events]
    columns = ["time", "event", "id", "layer/category", "slot", "amounts", "token", "pid"]
    if any(notes):
        columns.append("note")
    table = Table(title=f"History (last {len(events)})", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in columns:
        wraps = column in ("layer/category", "note")
        table.add_column(column, overflow="fold", no_wrap=not wraps, min_width=14 if wraps else None)
    styles = {"grant": "green", "release": "", "expire": "yellow", "reclaim": "yellow"}
    for e, note in zip(events, notes, strict=True):
        owner = e.get("owner") or {}
        row = [short_time(e.get("time")), Text(e["event"], style=styles.get(e["event"], "")), e.get("id", ""),
               f"{e.get('layer', '')}/{e.get('category', '')}", str(e.get("slot", "-")),
               f"{e.get('memory_mb', 0)}MB {e.get('cpu_percent', 0):g}%", str(e.get("fencing_token", "-")),
               "-" if owner.get("pid") is None else str(owner["pid"])]
        table.add_row(*row, *([note] if len(columns) > len(row) else []))
    console.print(table)


def _note(event: Mapping[str, Any]) -> str:
    if event.get("waited_seconds") is not None:
        return f"waited {event['waited_seconds']:.1f}s"
    return str(event.get("reason") or "")
