"""Human output of ``netra-rm up`` and ``netra-rm down``: a table of what was done, and
the end of a failed command's output. Draws already-masked results; decides nothing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text

_ACTION_STYLE = {
    "started": "green", "waited": "green", "left_alone": "dim", "stopped": "green", "gone": "dim",
    "would_start": "cyan", "would_wait": "cyan", "would_stop": "cyan",
    "failed": "red", "no_start_command": "red", "cannot_start": "red", "cannot_stop": "red",
    "not_reached": "yellow", "cancelled": "yellow",
}
_ACTION_TEXT = {
    "left_alone": "left alone (healthy)", "no_start_command": "no start command", "cannot_start": "cannot start",
    "not_reached": "not reached", "would_start": "would start", "would_wait": "would wait",
    "would_stop": "would stop", "cannot_stop": "cannot stop",
}


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def render_up(console: Console, data: Mapping[str, Any]) -> None:
    """The services of an ``up`` run in startup order: what happened to each and why."""
    targets = ", ".join(data.get("targets") or []) or "all services"
    if not data.get("services"):
        console.print(f"nothing to start: {targets} needs no services")
        return
    if data.get("dry_run"):
        title = f"Plan for {targets} (dry run)"
    else:
        started = len(data.get("started") or [])
        title = f"Up {targets}: {started} started in {data.get('elapsed_seconds', 0):.1f} s"
    table = Table(title=title, title_justify="left")
    table.add_column("level", justify="right", no_wrap=True)
    table.add_column("service", no_wrap=True)
    table.add_column("action", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("time", justify="right", no_wrap=True)
    table.add_column("detail", overflow="fold", ratio=1)
    for s in data.get("services") or []:
        action = str(s.get("action"))
        if action in ("started", "would_start"):
            detail = s.get("command") or ""
            if s.get("running"):
                detail += "  (runs in the foreground; `netra-rm down` stops it)"
        elif action in ("left_alone", "waited", "would_wait"):
            detail = s.get("url") or ""
        else:
            detail = s.get("error") or (s.get("command") if action == "not_reached" else "") or ""
        table.add_row(str(s.get("level", "")), str(s.get("name")),
                      Text(_ACTION_TEXT.get(action, action), style=_ACTION_STYLE.get(action, "")),
                      str(s.get("status")), _seconds(s.get("seconds")), detail)
    console.print(table)


def render_down(console: Console, data: Mapping[str, Any]) -> None:
    """What ``down`` stopped (dependents first) and how."""
    services = data.get("services") or []
    if not services:
        console.print("nothing to stop: netra-rm has started no service (or `down` stopped them already)")
        return
    title = "Down (dry run)" if data.get("dry_run") else f"Down: {len(data.get('stopped') or [])} stopped"
    table = Table(title=title, title_justify="left")
    table.add_column("service", no_wrap=True)
    table.add_column("action", no_wrap=True)
    table.add_column("time", justify="right", no_wrap=True)
    table.add_column("detail", overflow="fold", ratio=1)
    for s in services:
        action = str(s.get("action"))
        detail = s.get("error") or s.get("command") or ""
        if action == "gone":
            detail = "it had stopped already"
        table.add_row(str(s.get("name")), Text(_ACTION_TEXT.get(action, action),
                                               style=_ACTION_STYLE.get(action, "")),
                      _seconds(s.get("seconds")), detail)
    console.print(table)


def write_output_tail(stream: TextIO, name: str, tail: Sequence[str], log: str | None) -> None:
    """The last lines a failed command printed (already masked), under the error."""
    if not tail:
        if log:
            stream.write(f"  (the command of {name} printed nothing; its log is {log})\n")
        return
    stream.write(f"  last output of {name}{f' (from {log})' if log else ''}:\n")
    stream.writelines(f"    | {line}\n" for line in tail)
    stream.flush()
