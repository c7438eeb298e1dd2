"""Human output of ``verify`` and ``history``. Nothing here decides anything; it only draws."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from netra_rm.render.fit import Column, fit_table, print_fitted


def clock_time(seconds: float | None) -> str:
    """A Unix time as local ``YYYY-mm-dd HH:MM:SS.mmm``."""
    if seconds is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds)) + f".{int(seconds * 1000) % 1000:03d}"


def short_time(seconds: float | None) -> str:
    """A Unix time as local ``HH:MM:SS.mmm``, for narrow tables."""
    return clock_time(seconds)[11:]


def render_verify(console: Console, report: Mapping[str, Any], *, quiet: bool = False) -> None:
    """The verdict line, the findings, and where the ledger and journal are (each path on
    its own line, never broken); with ``quiet`` only the verdict line."""
    span = f"from {clock_time(report['first_time'])} to {clock_time(report['last_time'])}" \
        if report["events_checked"] else "no events yet"
    if report["clean"]:
        console.print(Text(f"CLEAN  {report['events_checked']} event(s) checked, {span}", style="bold green"),
                      soft_wrap=True)
    else:
        console.print(Text(f"FOUND {len(report['findings'])} problem(s) in {report['events_checked']} event(s), "
                           f"{span}", style="bold red"), soft_wrap=True)
    if quiet:
        return
    if not report["clean"]:
        columns = [Column("kind"), Column("when", keep=2), Column("seq", keep=1, justify="right"),
                   Column("what", fold=True, min_fold=20)]
        rows = [[f["kind"], clock_time(f["time"]), "-" if f["seq"] is None else str(f["seq"]), f["message"]]
                for f in report["findings"]]
        print_fitted(console, *fit_table(console, columns, rows, lambda: Table(show_header=True)))
    for note in report["notes"]:
        console.print(Text(f"note: {note}", style="dim"))
    console.print(Text(f"ledger: {report['ledger']}", style="dim"), soft_wrap=True)
    for path in report["journal_files"] or ["(no journal yet)"]:
        console.print(Text(f"journal: {path}", style="dim"), soft_wrap=True)


def render_history(console: Console, events: Sequence[Mapping[str, Any]], *, quiet: bool = False) -> None:
    """The events as a table whose ids are never cut; with ``quiet``, one plain line per
    event: time, event, id, layer/category (tab-separated, for scripts)."""
    notes = [_note(e) for e in events]
    if quiet:
        console.file.writelines(f"{clock_time(e.get('time'))}\t{e['event']}\t{e.get('id', '')}\t"
                                f"{e.get('layer', '')}/{e.get('category', '')}\n" for e in events)
        console.file.flush()
        return
    columns = [Column("time", keep=8), Column("event"), Column("id"), Column("layer", keep=7),
               Column("category", keep=6, fold=True),
               Column("slot", keep=2, justify="right"), Column("amounts", keep=4), Column("token", keep=3,
                                                                                           justify="right"),
               Column("pid", keep=5, justify="right")]
    measured = any("peak_memory_mb" in e for e in events)
    if measured:
        columns.append(Column("used", keep=4, fold=True, min_fold=14))
    if any(notes):
        columns.append(Column("note", keep=1, fold=True, min_fold=14))
    styles = {"grant": "green", "release": "", "expire": "yellow", "reclaim": "yellow"}
    rows = []
    for e, note in zip(events, notes, strict=True):
        owner = e.get("owner") or {}
        rows.append([short_time(e.get("time")), Text(e["event"], style=styles.get(e["event"], "")), e.get("id", ""),
                     e.get("layer", ""), e.get("category", ""), str(e.get("slot", "-")),
                     f"{e.get('memory_mb', 0)}MB {e.get('cpu_percent', 0):g}%", str(e.get("fencing_token", "-")),
                     "-" if owner.get("pid") is None else str(owner["pid"]), *([_used(e)] if measured else []),
                     *([note] if any(notes) else [])])
    print_fitted(console, *fit_table(console, columns, rows, lambda: Table(
        title=f"History (last {len(events)})", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)))


def _used(event: Mapping[str, Any]) -> str:
    """What the holder used, for a measured release: peak memory, CPU and wall seconds."""
    if "peak_memory_mb" not in event:
        return ""
    text = (f"peak {event['peak_memory_mb']:.0f}MB, {event.get('cpu_seconds', 0):.1f} CPU s in "
            f"{event.get('wall_seconds', 0):.1f}s")
    return text + (", OOM-killed" if event.get("oom_killed") else "")


def _note(event: Mapping[str, Any]) -> str:
    if event.get("waited_seconds") is not None:
        return f"waited {event['waited_seconds']:.1f}s"
    return str(event.get("reason") or "")


def render_recommendations(console: Console, found: Sequence[Any]) -> None:
    """``recommend``: a table of what each layer and category used, then one sentence each."""
    table = Table(title="Measured use per layer and category", title_justify="left", box=box.SIMPLE_HEAD,
                  pad_edge=False)
    for column in ("layer / category", "runs", "reserved", "peak MB p50/p95/max", "CPU s p50/p95/max",
                   "suggested"):
        table.add_column(column, overflow="fold")
    for r in found:
        table.add_row(f"{r.layer} / {r.category}", str(r.runs),
                      f"{r.reserved_memory_mb} MB {r.reserved_cpu_percent:g}%",
                      f"{r.peak_memory_mb_p50:.0f} / {r.peak_memory_mb_p95:.0f} / {r.peak_memory_mb_max:.0f}",
                      f"{r.cpu_seconds_p50:.1f} / {r.cpu_seconds_p95:.1f} / {r.cpu_seconds_max:.1f}",
                      f"{r.suggested_memory_mb} MB {r.suggested_cpu_percent:g}%")
    console.print(table)
    for r in found:
        console.print(r.sentence(), highlight=False)
