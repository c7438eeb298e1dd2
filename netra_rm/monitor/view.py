"""The live view of ``netra-rm monitor``: a Rich renderable built from one snapshot.

:func:`build_view` is a pure function of a :class:`MonitorSnapshot` (it never calls
psutil, reads the ledger or checks a service), so rendering costs nothing but the
drawing and tests can render it to a recording console. Every level and status is
written as a word as well as coloured, so the view reads the same under ``NO_COLOR``.
"""

from __future__ import annotations

import time
from typing import Any, Iterable, Mapping, Sequence

from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.measure import Measurement
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from netra_rm.monitor.sampler import SystemSample
from netra_rm.monitor.snapshot import MonitorSnapshot, pool_utilisation, snapshot_to_ndjson_dict
from netra_rm.monitor.thresholds import Alert, Level, Threshold, classify, format_duration

__all__ = ["build_view", "snapshot_to_ndjson_dict"]

_LEVEL_STYLE = {Level.OK: "green", Level.WARNING: "yellow", Level.CRITICAL: "bold red"}
_STATUS_STYLE = {"healthy": "green", "unhealthy": "bold red", "blocked": "yellow", "unknown": "dim"}
#: Pool usage colours: a full pool is normal (that is what a pool is for), a pool over
#: its limit is not.
_POOL_THRESHOLD = Threshold(85.0, 100.0)
_BAR_WIDTH = 12
_MIN_BAR_WIDTH = 4
#: Below this console width the system and services tables are stacked ...
_SIDE_BY_SIDE_WIDTH = 110
#: ... and the allocations table leaves out the category, CPU and owner columns.
_FULL_ALLOCATIONS_WIDTH = 100


def build_view(
    snapshot: MonitorSnapshot,
    *,
    now: float | None = None,
    busiest_cores: int = 4,
    max_allocations: int = 12,
) -> RenderableType:
    """The whole monitor screen for ``snapshot``.

    What needs attention comes first: the alerts, the pools and the allocations; the
    services and the machine get the rows that are left. On a terminal (or whenever the
    console says how high it is) the view fits its height, shortening the allocations
    and summing up the details in a line each before it leaves anything out, and says
    what it left out. ``now`` (unix seconds, default the sample's time) is what ages
    and expiries are measured from; ``busiest_cores`` and ``max_allocations`` bound the
    view's height.
    """
    at = snapshot.sample.timestamp if now is None else now
    return _Screen(snapshot, at, busiest_cores=busiest_cores, max_allocations=max_allocations)


class _Screen:
    """The monitor's view, laid out for the console's width and height at each draw."""

    def __init__(self, snapshot: MonitorSnapshot, at: float, *, busiest_cores: int, max_allocations: int) -> None:
        self.snapshot = snapshot
        self.at = at
        self.busiest_cores = busiest_cores
        self.max_allocations = max_allocations

    def _allocations(self, limit: int, *, short: bool = False) -> RenderableType:
        allocations = self.snapshot.allocations
        return _ByWidth(wide=_allocations_table(allocations, self.at, limit, compact=False, short=short),
                        narrow=_allocations_table(allocations, self.at, limit, compact=True, short=short),
                        min_width=_FULL_ALLOCATIONS_WIDTH)

    def _urgent(self, alerts: Sequence[Alert], *, short: bool) -> list[RenderableType]:
        """Alerts (when there are any), pools and allocations: what the screen shows first."""
        conflicts = self.snapshot.conflicts
        parts: list[RenderableType] = [_alerts_table(alerts, compact=short, conflicts=conflicts)] \
            if alerts or conflicts else []
        return parts + [_pools_table(self.snapshot.pools, self.snapshot.ledger_error, compact=short),
                         self._allocations(self.max_allocations, short=short)]

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        snapshot = self.snapshot
        alerts = list(snapshot.alerts)
        system = _system_table(snapshot, self.busiest_cores)
        services = _services_table(snapshot, self.at)
        height = options.height if options.height is not None else (console.height if console.is_terminal else None)
        free = options.update(height=None)
        if height is None:  # no height to fit: everything, most urgent first
            parts: list[RenderableType] = [_header(snapshot.sample, alerts)]
            if alerts or snapshot.conflicts:
                parts.append(_alerts_table(alerts, conflicts=snapshot.conflicts))
            parts += [_pools_table(snapshot.pools, snapshot.ledger_error), self._allocations(self.max_allocations),
                      _side_by_side(system, services)]
            yield Group(*parts)
            return
        lines: list[list[Segment]] = []
        left_out: list[str] = []

        def take(renderable: RenderableType, *, reserve: int = 1) -> bool:
            rendered = console.render_lines(renderable, free, pad=False)
            if len(lines) + len(rendered) + reserve > height:
                return False
            lines.extend(rendered)
            return True

        take(_header(snapshot.sample, alerts), reserve=0)
        # frames cost rows: on a terminal too short for the urgent part boxed, none is boxed
        urgent = sum(len(console.render_lines(part, free, pad=False)) for part in self._urgent(alerts, short=False))
        short = urgent + 2 > height
        if (alerts or snapshot.conflicts) and not take(_alerts_table(alerts, compact=short,
                                                                      conflicts=snapshot.conflicts)):
            take(Text(f"{len(alerts)} alert(s): " + "; ".join(a.message for a in alerts), no_wrap=True,
                      overflow="ellipsis", style="bold red"))
        if not take(_pools_table(snapshot.pools, snapshot.ledger_error, compact=short)):
            take(_pools_line(snapshot.pools))
        limit = self.max_allocations
        while limit > 0 and not take(self._allocations(limit, short=short)):
            limit -= 1
        if limit == 0:
            take(Text(f"allocations: {len(snapshot.allocations)} active", style="dim"))
        if not take(_side_by_side(system, services)):
            if not take(services):
                left_out.append("service details" if take(_services_line(snapshot)) else "services")
            if not take(system):
                left_out.append("machine details" if take(_system_line(snapshot)) else "machine")
        if left_out:
            take(Text(f"(not shown on {console.width}x{height}: {', '.join(dict.fromkeys(left_out))}; "
                      "a taller terminal shows them)", style="dim", no_wrap=True, overflow="ellipsis"), reserve=0)
        for line in lines[:height]:
            yield from line
            yield Segment.line()


def _pools_line(pools: Sequence[Mapping[str, Any]]) -> Text:
    parts = []
    for pool in pools:
        u = pool_utilisation(pool)
        parts.append(f"{u['layer']} {u['active_instances']}/{u['max_parallel_instances']}")
    return Text("pools: " + ", ".join(parts), no_wrap=True, overflow="ellipsis")


def _services_line(snapshot: MonitorSnapshot) -> Text:
    rows = list(snapshot.services)
    down = [str(s.get("name")) for s in rows if s.get("status") != "healthy"]
    text = f"services: {len(rows) - len(down)} of {len(rows)} healthy"
    return Text(text + (f"; not: {', '.join(down)}" if down else ""), no_wrap=True, overflow="ellipsis",
                style="red" if down else "")


def _system_line(snapshot: MonitorSnapshot) -> Text:
    sample = snapshot.sample
    levels = snapshot.levels()
    return Text.assemble(
        "machine: ", (f"CPU {sample.cpu_percent:.0f}%", _LEVEL_STYLE[levels["cpu_percent"]]), "  ",
        (f"memory {sample.memory_percent:.0f}%", _LEVEL_STYLE[levels["memory_percent"]]), "  ",
        (f"load {sample.load_per_core[0]:.2f}/core", _LEVEL_STYLE[levels["load_per_core"]]), "  ",
        f"{sample.process_count:,} processes", no_wrap=True, overflow="ellipsis")


# -- pieces -----------------------------------------------------------------------------


def _header(sample: SystemSample, alerts: Sequence[Alert] = ()) -> Text:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(sample.timestamp))
    text = Text.assemble(("netra-rm monitor", "bold"), "  ", stamp)
    if sample.interval_seconds is not None:
        text.append(f"  (over {sample.interval_seconds:.1f}s)", style="dim")
    if alerts:
        worst = max((a.level for a in alerts), key=lambda level: list(Level).index(level))
        text.append(f"  {len(alerts)} alert(s)", style=_LEVEL_STYLE[worst])
    else:
        text.append("  no alerts", style="green")
    text.no_wrap, text.overflow = True, "ellipsis"
    return text


def _level_text(level: Level | None) -> Text:
    if level is None:
        return Text("")
    return Text(level.value, style=_LEVEL_STYLE[level])


def _system_table(snapshot: MonitorSnapshot, busiest_cores: int) -> Table:
    sample = snapshot.sample
    levels = snapshot.levels()
    table = Table(title="System", box=box.ROUNDED, expand=True, title_justify="left")
    table.add_column("metric", no_wrap=True)
    table.add_column("value", ratio=1)
    table.add_column("level", no_wrap=True, min_width=8)

    memory = f"{sample.memory_percent:.1f}%  {_bytes(sample.memory_used)} / {_bytes(sample.memory_total)}"
    table.add_row("CPU", _Meter(sample.cpu_percent, f"{sample.cpu_percent:.1f}%", levels["cpu_percent"],
                                label_width=len(memory)), _level_text(levels["cpu_percent"]))
    table.add_row("cores", Text(_busiest_cores(sample.cpu_percent_per_core, busiest_cores)), "")
    table.add_row("memory", _Meter(sample.memory_percent, memory, levels["memory_percent"]),
                  _level_text(levels["memory_percent"]))
    if sample.swap_total > 0:
        swap = Text(f"{sample.swap_percent:.1f}%  {_bytes(sample.swap_used)} of {_bytes(sample.swap_total)}")
    else:
        swap = Text("none", style="dim")
    table.add_row("swap", swap, "")
    one, five, fifteen = sample.load_average
    load = Text(f"{one:.2f} {five:.2f} {fifteen:.2f}  ({sample.load_per_core[0]:.2f} per core)")
    table.add_row("load", load, _level_text(levels["load_per_core"]))
    table.add_row("disk", _rate_pair("read", sample.disk_read_bytes_per_second,
                                     "write", sample.disk_write_bytes_per_second), "")
    table.add_row("network", _rate_pair("sent", sample.net_sent_bytes_per_second,
                                        "received", sample.net_recv_bytes_per_second), "")
    table.add_row("processes", Text(f"{sample.process_count:,}"), _level_text(levels["processes"]))
    return table


def _busiest_cores(per_core: Sequence[float], n: int) -> str:
    """``cpu1 91%  cpu0 40%  (6 more, mean 12%)``: the busiest ``n`` and a mean of the rest."""
    if not per_core:
        return "-"
    ranked = sorted(enumerate(per_core), key=lambda item: (-item[1], item[0]))
    shown = "  ".join(f"cpu{i} {p:.0f}%" for i, p in ranked[:n])
    rest = [p for _, p in ranked[n:]]
    if rest:
        shown += f"  ({len(rest)} more, mean {sum(rest) / len(rest):.0f}%)"
    return shown


def _rate_pair(label_a: str, a: float | None, label_b: str, b: float | None) -> Text:
    if a is None and b is None:
        return Text("- (needs two samples)", style="dim")
    return Text(f"{label_a} {_rate(a)}  {label_b} {_rate(b)}")


def _services_table(snapshot: MonitorSnapshot, now: float) -> Table:
    if snapshot.services_checked_at is None:
        when = "checking..."
    else:
        when = f"checked {format_duration(now - snapshot.services_checked_at)} ago"
    table = Table(title=f"Services ({when})", box=box.ROUNDED, expand=True, title_justify="left")
    table.add_column("service", no_wrap=True)
    table.add_column("status", no_wrap=True, min_width=9)
    table.add_column("latency", justify="right", no_wrap=True)
    table.add_column("error", ratio=1, overflow="ellipsis", no_wrap=True)
    if snapshot.services_error:
        table.caption = f"last check failed: {snapshot.services_error}"
    if not snapshot.services:
        message = "none configured" if snapshot.services_checked_at is not None else "not checked yet"
        table.add_row(Text(message, style="dim"), "", "", "")
        return table
    for service in snapshot.services:
        status = str(service.get("status") or "unknown")
        latency = service.get("latency_ms")
        table.add_row(
            Text(str(service.get("name", "?"))),
            Text(status, style=_STATUS_STYLE.get(status, "")),
            Text("-" if latency is None else f"{float(latency):.0f} ms"),
            Text(str(service.get("error") or ""), style="dim"),
        )
    return table


def _boxed(compact: bool) -> dict[str, Any]:
    """A table's frame: rounded boxes, or on a short terminal only a rule under the header."""
    return {"box": box.SIMPLE_HEAD, "show_edge": False} if compact else {"box": box.ROUNDED}


def _pools_table(pools: Sequence[Mapping[str, Any]], ledger_error: str | None = None, *,
                 compact: bool = False) -> Table:
    table = Table(title="Pools", expand=True, title_justify="left", **_boxed(compact))
    if ledger_error:
        table.caption = Text(f"ledger not read now, showing the last read: {ledger_error}", style="red")
    # The meters shrink their bars to fit, so those columns may be narrowed first.
    table.add_column("layer", no_wrap=True)
    table.add_column("memory")
    table.add_column("CPU")
    table.add_column("instances")
    table.add_column("state", no_wrap=True)
    if not pools:
        table.add_row(Text("no pools configured", style="dim"), "", "", "", "")
        return table
    rows = [pool_utilisation(pool) for pool in pools]
    labels = [
        (
            f"{u['memory_used_percent']:>3.0f}% {u['allocated_memory_mb']}/{u['max_memory_mb']} MB",
            f"{u['cpu_used_percent']:>3.0f}% {u['allocated_cpu_percent']}/{u['max_cpu_percent']}%",
            f"{u['active_instances']}/{u['max_parallel_instances']}",
        )
        for u in rows
    ]
    widths = [max(len(row[i]) for row in labels) for i in range(3)]  # same bar length per column
    for u, (mem_label, cpu_label, inst_label) in zip(rows, labels):
        mem, cpu, inst = u["memory_used_percent"], u["cpu_used_percent"], u["instances_used_percent"]
        worst = max(mem, cpu, inst)
        if worst > 100:
            state = Text("over", style="bold red")
        elif worst >= 100:
            state = Text("full", style="yellow")
        else:
            state = Text("room", style="green")
        table.add_row(
            Text(u["layer"]),
            _Meter(mem, mem_label, _pool_level(mem), label_width=widths[0]),
            _Meter(cpu, cpu_label, _pool_level(cpu), label_width=widths[1]),
            _Meter(inst, inst_label, _pool_level(inst), label_width=widths[2]),
            state,
        )
    return table


def _pool_level(percent: float) -> Level:
    return classify(percent, _POOL_THRESHOLD)


def _allocations_table(
    allocations: Sequence[Mapping[str, Any]], now: float, limit: int, *, compact: bool, short: bool = False
) -> Table:
    table = Table(title=f"Allocations ({len(allocations)} active)", expand=True, **_boxed(short),
                  title_justify="left")
    columns = ["id", "layer", "memory", "age", "expires"] if compact else [
        "id", "layer", "category", "memory", "CPU", "age", "expires", "owner"]
    for name in columns:
        if name in ("id", "layer", "category"):
            table.add_column(name, no_wrap=True, overflow="ellipsis")
        elif name == "owner":
            table.add_column(name, ratio=1, no_wrap=True, overflow="ellipsis")
        else:
            table.add_column(name, justify="right", no_wrap=True)
    blank = [""] * (len(columns) - 1)
    if not allocations:
        table.add_row(Text("none", style="dim"), *blank)
        return table
    ordered = sorted(allocations, key=lambda a: _float(a.get("created_at")) or 0.0)
    for allocation in ordered[:limit]:
        created, expires = _float(allocation.get("created_at")), _float(allocation.get("expires_at"))
        cells: dict[str, Text] = {
            "id": Text(str(allocation.get("id", "?"))),
            "layer": Text(str(allocation.get("layer", "?"))),
            "category": Text(str(allocation.get("category", ""))),
            "memory": Text(_number(allocation.get("memory_mb"), " MB")),
            "CPU": Text(_number(allocation.get("cpu_percent"), "%")),
            "age": Text("-" if created is None else format_duration(now - created)),
            "expires": _expiry(expires, now),
            "owner": Text(_owner(allocation.get("owner"))),
        }
        table.add_row(*(cells[name] for name in columns))
    if len(ordered) > limit:
        table.add_row(Text(f"... and {len(ordered) - limit} more", style="dim"), *blank)
    return table


def _expiry(expires: float | None, now: float) -> Text:
    if expires is None:
        return Text("never", style="dim")
    if expires <= now:
        return Text(f"expired {format_duration(now - expires)} ago", style="bold red")
    return Text(f"in {format_duration(expires - now)}")


def _owner(owner: Any) -> str:
    if not isinstance(owner, Mapping):
        return "" if owner is None else str(owner)
    user, host, pid = owner.get("user"), owner.get("host"), owner.get("pid")
    who = "@".join(str(x) for x in (user, host) if x)
    return f"{who} pid {pid}" if pid is not None else who


def _alerts_table(alerts: Iterable[Alert], *, compact: bool = False, conflicts: Iterable[str] = ()) -> Table:
    frame = {"box": None} if compact else {"box": box.ROUNDED}
    table = Table(title="Alerts", expand=True, title_justify="left", show_header=False, **frame)
    table.add_column("level", no_wrap=True, min_width=8)
    table.add_column("alert", ratio=1)
    rows = list(alerts)
    over = list(conflicts)
    if not rows and not over:
        table.add_row(_level_text(Level.OK), Text("no alerts", style="dim"))
    for alert in rows:
        table.add_row(_level_text(alert.level), Text(alert.message))
    for conflict in over:  # an allocation using more memory than it reserved
        table.add_row(_level_text(Level.WARNING), Text(conflict))
    return table


# -- formatting -------------------------------------------------------------------------


class _ByWidth:
    """One renderable on a console at least ``min_width`` wide, another on a narrower one."""

    def __init__(self, *, wide: RenderableType, narrow: RenderableType, min_width: int) -> None:
        self.wide = wide
        self.narrow = narrow
        self.min_width = min_width

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.wide if options.max_width >= self.min_width else self.narrow


def _side_by_side(left: RenderableType, right: RenderableType) -> _ByWidth:
    """``left`` and ``right`` next to each other on a wide console, stacked otherwise."""
    grid = Table.grid(expand=True, padding=(0, 1))
    grid.add_column(ratio=1)
    grid.add_column(ratio=1)
    grid.add_row(left, right)
    return _ByWidth(wide=grid, narrow=Group(left, right), min_width=_SIDE_BY_SIDE_WIDTH)


class _Meter:
    """A utilisation bar and its label on one line, e.g. ``█████░░░░░░░ 40%``.

    The bar is drawn in block characters (``#``/``.`` on consoles that can only do
    ASCII), so its length reads without colour.
    """

    def __init__(
        self, percent: float, label: str, level: Level, *, width: int = _BAR_WIDTH, label_width: int = 0
    ) -> None:
        self.percent = percent
        self.label = label.ljust(label_width)  # equal labels give equal bars down a column
        self.level = level
        self.width = width

    @staticmethod
    def bar_text(percent: float, level: Level, *, width: int = _BAR_WIDTH, ascii_only: bool = False) -> Text:
        """Just the bar."""
        filled = round(max(0.0, min(100.0, percent)) / 100.0 * width)
        full, empty = ("#", ".") if ascii_only else ("\u2588", "\u2591")
        return Text.assemble((full * filled, _LEVEL_STYLE[level]), (empty * (width - filled), "dim"))

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        # On a narrow console the bar shrinks, then goes, before the label is cut.
        width = min(self.width, options.max_width - 1 - len(self.label))
        if width < _MIN_BAR_WIDTH:
            yield Text(self.label, style=_LEVEL_STYLE[self.level], no_wrap=True, overflow="ellipsis")
            return
        bar = self.bar_text(self.percent, self.level, width=width, ascii_only=options.ascii_only)
        yield Text.assemble(bar, " ", self.label, no_wrap=True, overflow="ellipsis")

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement(len(self.label), self.width + 1 + len(self.label))


def _bytes(n: float) -> str:
    """``1.5 GiB``: binary units, one decimal above bytes."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} PiB"  # pragma: no cover - the loop returns at TiB


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{_bytes(value)}/s"


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _number(value: Any, suffix: str) -> str:
    number = _float(value)
    if number is None:
        return "-"
    return f"{number:.0f}{suffix}" if number.is_integer() else f"{number:.1f}{suffix}"
