"""Rich tables and trees for people. Nothing here decides anything; it only draws."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from netra_rm.render.fit import Column, fit_table, print_fitted

_STATUS_STYLE = {"healthy": "green", "unhealthy": "red", "blocked": "yellow", "unknown": "dim"}


def duration(seconds: float | None) -> str:
    """A short human duration: 45s, 3m12s, 2h05m."""
    if seconds is None:
        return "-"
    negative = seconds < 0
    s = int(abs(seconds))
    if s < 60:
        text = f"{s}s"
    elif s < 3600:
        text = f"{s // 60}m{s % 60:02d}s"
    else:
        text = f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"-{text}" if negative else text


def bar(used: float, total: float, width: int = 12) -> Text:
    """A utilisation bar with the percentage as text (it survives NO_COLOR)."""
    share = 0.0 if total <= 0 else min(1.0, used / total)
    filled = round(share * width)
    style = "red" if share >= 0.9 else "yellow" if share >= 0.7 else "green"
    text = Text()
    text.append("█" * filled, style=style)
    text.append("░" * (width - filled), style="dim")
    text.append(f" {share * 100:3.0f}%")
    return text


def address(url: str | None) -> str:
    """Where a service is, for a table: ``host:port`` (the scheme's port when the URL has
    none), or the socket path. Never any user or password."""
    if not url:
        return "-"
    from urllib.parse import parse_qs, urlsplit

    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "-"
    query = parse_qs(parts.query)
    if parts.scheme == "unix" or (not parts.hostname and "host" in query):
        socket_path = parts.path if parts.scheme == "unix" else query["host"][0]
        return socket_path + (f":{query['port'][0]}" if "port" in query else "")
    host = parts.hostname or "localhost"
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{port or _DEFAULT_PORTS.get(parts.scheme, '?')}"


_DEFAULT_PORTS = {"postgresql": 5432, "postgres": 5432, "redis": 6379, "rediss": 6379, "http": 80, "https": 443,
                  "ws": 80, "wss": 443}
#: From this width on, the address column shows the whole (masked) URL, not only host:port.
FULL_ADDRESS_WIDTH = 120


def _detail(name: str, s: Mapping[str, Any], where: str) -> str:
    status = str(s.get("status", "unknown"))
    if status == "blocked":
        return "blocked by " + ", ".join(s.get("blocked_by") or [])
    if status == "healthy":
        return f"version {s['version']}" if s.get("version") else ""
    error = str(s.get("error") or "")
    for prefix in (f"{name} at {where}: ", f"{name} at {where} "):  # the address is in its own column
        if error.startswith(prefix):
            return error[len(prefix):]
    return error


def services_table(console: Console, services: Mapping[str, Mapping[str, Any]]) -> tuple[Table, list[str]]:
    """Each service, its status, latency, address (host and port; the masked URL on a wide
    console) and what is wrong; the columns that did not fit."""
    columns = [Column("service"), Column("status"), Column("latency", keep=3, justify="right"),
               Column("address", keep=5), Column("detail", keep=4, fold=True, min_fold=16)]
    full = console.width >= FULL_ADDRESS_WIDTH
    rows = []
    for name, s in services.items():
        status = str(s.get("status", "unknown"))
        latency = s.get("latency_ms")
        where = address(s.get("url"))
        rows.append([name, Text(status.upper() if status != "healthy" else status,
                                style=_STATUS_STYLE.get(status, "")),
                     "-" if latency is None else f"{latency:.0f} ms",
                     (s.get("url") or "-") if full else where, _detail(name, s, where)])
    return fit_table(console, columns, rows, lambda: Table(title="Services", title_justify="left"))


def usage_cell(used: float, total: float, unit: str) -> Text:
    """``used/total unit`` over a utilisation bar."""
    return Text.assemble(f"{used:g}/{total:g}{unit}\n", bar(used, total, width=8))


def pools_table(pools: Mapping[str, Mapping[str, Any]]) -> Table:
    table = Table(title="Pools", title_justify="left")
    table.add_column("layer", overflow="fold")
    table.add_column("memory", no_wrap=True)
    table.add_column("cpu", no_wrap=True)
    table.add_column("instances", no_wrap=True)
    for layer, p in pools.items():
        table.add_row(
            layer + ("\n(dedicated)" if p.get("dedicated") else "") + ("\nDRAINING" if p.get("drained") else ""),
            usage_cell(p["allocated_memory_mb"], p["max_memory_mb"], " MB"),
            usage_cell(p["allocated_cpu_percent"], p["max_cpu_percent"], "%"),
            usage_cell(p["active_instances"], p["max_parallel_instances"], ""),
        )
    return table


def shared_pools_table(pools: Mapping[str, Mapping[str, Any]]) -> Table:
    """The configuration's ``pools:`` that layers draw from as well (``uses:``); memory
    and CPU show only where the pool limits them."""
    table = Table(title="Shared pools", title_justify="left")
    for column in ("pool", "scope", "instances", "memory", "cpu"):
        table.add_column(column, no_wrap=column != "pool")
    for name, p in pools.items():
        memory, cpu = p.get("max_memory_mb"), p.get("max_cpu_percent")
        unlimited = Text("no limit", style="dim")
        table.add_row(
            name + (" (ad hoc)" if p.get("adhoc") else "") + ("\nDRAINING" if p.get("drained") else ""),
            str(p.get("scope", "host")),
            usage_cell(p["active_instances"], p["max_parallel_instances"], ""),
            usage_cell(p["allocated_memory_mb"], memory, " MB") if memory is not None else unlimited,
            usage_cell(p["allocated_cpu_percent"], cpu, "%") if cpu is not None else unlimited,
        )
    return table


#: past this many allocations, ``status`` summarises them (``--all`` shows every row)
SUMMARY_THRESHOLD = 25
#: how many of the oldest and the longest-held the summary lists
SUMMARY_ROWS = 5


def _owner(owner: Mapping[str, Any]) -> str:
    who = f"{owner.get('user', '?')}@{owner.get('host', '?')}"
    return who + (f" pid {owner['pid']}" if owner.get("pid") is not None else " (until released)")


def _where(a: Mapping[str, Any]) -> str:
    """The layer, else the pools of an allocation (or waiter) that has none."""
    return a.get("layer") or ", ".join(a.get("pools") or ()) or "-"


def _used(allocation: Mapping[str, Any]) -> Text:
    """What the allocation's owner uses now (red when more than it reserved), or "-"."""
    used = allocation.get("used_memory_mb")
    if used is None:
        return Text("-")
    over = used > (allocation.get("owner_reserved_mb") or allocation["memory_mb"])
    return Text(f"{used:.0f} MB", style="bold red" if over else "")


def allocations_table(console: Console, allocations: Sequence[Mapping[str, Any]], *,
                      title: str | None = None) -> tuple[Table, list[str]]:
    """The active allocations; ids are never cut (other columns fold, then go). The slot
    column names the instances held where pools name them."""
    columns = [Column("id"), Column("layer", keep=9), Column("category", keep=8, fold=True),
               Column("slot", keep=3, justify="right"), Column("memory", keep=5, justify="right"),
               Column("used now", keep=5, justify="right"), Column("cpu", keep=4, justify="right"),
               Column("enforced", keep=2), Column("age", keep=2, justify="right"),
               Column("expires", keep=7, justify="right"), Column("owner", keep=6, fold=True)]
    rows = [[a["id"], _where(a), a["category"],
             ", ".join(f"{pool}={name}" for pool, name in a["instances"].items()) if a.get("instances")
             else str(a.get("slot", "-")), f"{a['memory_mb']} MB", _used(a),
             f"{a['cpu_percent']:g}%", a.get("enforcement") or "-", duration(a.get("age_seconds")),
             duration(a.get("expires_in_seconds")), _owner(a.get("owner") or {})] for a in allocations]
    heading = title or f"Allocations ({len(allocations)})"
    return fit_table(console, columns, rows, lambda: Table(title=heading, title_justify="left", box=box.SIMPLE_HEAD))


def allocations_summary(console: Console, allocations: Sequence[Mapping[str, Any]]
                        ) -> list[tuple[Table, list[str]]]:
    """Many allocations in a few lines: counts per layer and category, then the oldest
    and the longest-held few (``status --all`` lists every one)."""
    counts: dict[tuple[str, str], list[float]] = {}
    for a in allocations:
        key = (_where(a), a.get("category", ""))
        entry = counts.setdefault(key, [0, 0, 0.0])
        entry[0] += 1
        entry[1] += a.get("memory_mb", 0)
        entry[2] += a.get("cpu_percent", 0.0)
    table = Table(title=f"Allocations ({len(allocations)}; `netra-rm status --all` lists every one)",
                  title_justify="left")
    for column in ("layer", "category", "count", "memory", "cpu"):
        table.add_column(column, justify="right" if column in ("count", "memory", "cpu") else "left")
    for (layer, category), (n, memory, cpu) in sorted(counts.items(), key=lambda kv: -kv[1][0]):
        table.add_row(layer, category, str(int(n)), f"{int(memory)} MB", f"{cpu:g}%")
    oldest = sorted(allocations, key=lambda a: -(a.get("age_seconds") or 0))[:SUMMARY_ROWS]
    longest = sorted(allocations, key=lambda a: -((a.get("expires_at") or 0) - (a.get("created_at") or 0)))
    longest = [a for a in longest if a not in oldest][:SUMMARY_ROWS]
    tables: list[tuple[Table, list[str]]] = [(table, []),
                                             allocations_table(console, oldest, title=f"Oldest {len(oldest)}")]
    if longest:
        tables.append(allocations_table(console, longest, title=f"Longest-held {len(longest)}"))
    return tables


def render_pools(console: Console, pools: Sequence[Mapping[str, Any]]) -> None:
    """``pool show``: each pool's capacity and use, its state and where its size comes from."""
    table = Table(title="Pools", title_justify="left")
    for column in ("pool", "kind", "scope", "instances", "memory", "cpu", "state", "capacity from"):
        table.add_column(column, no_wrap=column not in ("pool", "capacity from"))
    for p in pools:
        limit = p.get("max_parallel_instances")
        memory, cpu = p.get("max_memory_mb"), p.get("max_cpu_percent")
        unlimited = Text("no limit", style="dim")
        source = {"admin": "netra-rm pool set", "config": "ledger (registered from configuration)",
                  "configuration": "this host's configuration"}.get(str(p.get("source")), str(p.get("source")))
        if p.get("configured"):
            source += f"; configuration here says {p['configured'].get('instances')} instance(s)"
        table.add_row(
            p["name"] + (f"\n{', '.join(p['instances'])}" if p.get("instances") else ""), p["kind"], p["scope"],
            usage_cell(p["active_instances"], limit, "") if limit is not None else "?",
            usage_cell(p["allocated_memory_mb"], memory, " MB") if memory is not None else unlimited,
            usage_cell(p["allocated_cpu_percent"], cpu, "%") if cpu is not None else unlimited,
            Text("DRAINING", style="yellow") if p.get("drained") else "granting", source)
    console.print(table)


def limits_table(limits: Mapping[str, Any], system: Mapping[str, Any]) -> Table:
    table = Table(title="Machine and global caps", title_justify="left", show_header=False)
    table.add_column("what")
    table.add_column("value")
    sources = limits.get("sources", {})
    table.add_row("global memory", Text.assemble(f"{limits['allocated_memory_mb']}/{limits['max_memory_mb']} MB ",
                                                 bar(limits["allocated_memory_mb"], limits["max_memory_mb"]),
                                                 f"  ({sources.get('max_memory_mb', 'config')})"))
    table.add_row("global CPU", Text.assemble(f"{limits['allocated_cpu_percent']:g}/{limits['max_cpu_percent']:g}% ",
                                              bar(limits["allocated_cpu_percent"], limits["max_cpu_percent"]),
                                              f"  ({sources.get('max_cpu_percent', 'config')})"))
    table.add_row("global instances", Text.assemble(
        f"{limits['active_instances']}/{limits['max_parallel_instances']} ",
        bar(limits["active_instances"], limits["max_parallel_instances"]),
        f"  ({sources.get('max_parallel_instances', 'config')})"))
    capacity = system.get("capacity") or {}
    if capacity:
        table.add_row("machine memory", f"{capacity['memory_available_mb']:.0f} MB available of "
                                        f"{capacity['memory_total_mb']:.0f} MB (source: {capacity['memory_source']})")
        table.add_row("machine CPUs", f"{capacity['cpu_count']:g} (source: {capacity['cpu_source']})")
    cpu, memory, load = system.get("cpu") or {}, system.get("memory") or {}, system.get("load") or {}
    if cpu.get("percent") is not None:
        table.add_row("CPU in use", f"{cpu['percent']:.0f}%")
    if memory.get("percent") is not None:
        table.add_row("memory in use", f"{memory['percent']:.0f}%")
    if load.get("average"):
        table.add_row("load average", " ".join(f"{x:.2f}" for x in load["average"]))
    return table


def waiters_table(console: Console, waiters: Sequence[Mapping[str, Any]], now: float) -> tuple[Table, list[str]]:
    columns = [Column("position", justify="right"), Column("layer", keep=9),
               Column("category", keep=8, fold=True), Column("priority", keep=3, justify="right"),
               Column("memory", keep=6, justify="right"), Column("cpu", keep=4, justify="right"),
               Column("waited", keep=7, justify="right"), Column("owner", keep=5, fold=True)]
    rows = []
    for i, w in enumerate(waiters, 1):
        owner = w.get("owner") or {}
        priority = str(w.get("priority", 0))
        if w.get("effective_priority", w.get("priority", 0)) != w.get("priority", 0):
            priority += f" (now {w['effective_priority']})"
        rows.append([str(i), _where(w), w.get("category", "?"), priority, f"{w.get('memory_mb', 0)} MB",
                     f"{w.get('cpu_percent', 0):g}%", duration(now - w.get("since", now)),
                     f"{owner.get('user', '?')}@{owner.get('host', '?')} pid {owner.get('pid', '?')}"])
    return fit_table(console, columns, rows, lambda: Table(title=f"Waiting ({len(waiters)})", title_justify="left",
                                                           box=box.SIMPLE_HEAD))


def services_summary(services: Mapping[str, Any]) -> str:
    """``5 of 7 services healthy`` (and which are not)."""
    rows = services.get("services", {})
    down = [name for name, s in rows.items() if s.get("status") != "healthy"]
    text = f"{services.get('healthy_services', 0)} of {services.get('total_services', 0)} services healthy"
    return text + (f" (not: {', '.join(down)})" if down else "")


def render_status(console: Console, resources: Mapping[str, Any], services: Mapping[str, Any],
                  conflicts: Sequence[str], now: float, *, quiet: bool = False,
                  first_run_hint: str | None = None, every_allocation: bool = False) -> None:
    """The whole report; with ``quiet`` one line: the services, allocations and conflicts."""
    unhealthy = services.get("healthy_services", 0) < services.get("total_services", 0)
    if quiet:
        console.print(f"{services_summary(services)}; {len(resources['active_allocations'])} allocation(s) active"
                      + (f"; {len(conflicts)} conflict(s)" if conflicts else ""), soft_wrap=True)
        return
    print_fitted(console, *services_table(console, services.get("services", {})))
    console.print(services_summary(services))
    if first_run_hint and unhealthy:
        console.print(Text(first_run_hint, style="yellow"), soft_wrap=True)
    console.print()
    console.print(pools_table(resources["resource_pools"]))
    if resources.get("shared_pools"):
        console.print(shared_pools_table(resources["shared_pools"]))
    allocations = resources["active_allocations"]
    if every_allocation or len(allocations) <= SUMMARY_THRESHOLD:
        print_fitted(console, *allocations_table(console, allocations))
    else:
        for table, dropped in allocations_summary(console, allocations):
            print_fitted(console, table, dropped)
    if resources.get("waiters"):
        print_fitted(console, *waiters_table(console, resources["waiters"], now))
    console.print(limits_table(resources["global_limits"], resources.get("system_metrics", {})))
    if conflicts:
        console.print(Text("Conflicts", style="bold red"))
        for c in conflicts:
            console.print(Text(f"  CONFLICT {c}", style="red"))
    console.print(Text(f"ledger: {resources.get('ledger')}", style="dim"), soft_wrap=True)
    for warning in resources.get("ledger_warnings") or ():
        console.print(Text(f"  WARNING {warning}", style="yellow"), soft_wrap=True)


def render_layer(console: Console, verdict: Mapping[str, Any], *, quiet: bool = False) -> None:
    """The verdict line, then (unless ``quiet``) the services and the pool behind it."""
    layer = verdict["layer"]
    services = verdict.get("services") or {}
    if verdict["ready"]:
        console.print(Text(f"READY  layer {layer}", style="bold green"), soft_wrap=True)
    else:
        missing = [name for name, s in services.items() if s.get("status") != "healthy"]
        reasons = []
        if missing:
            reasons.append(f"missing {', '.join(missing)}")
        if verdict["pool"].get("reasons"):
            reasons.append("no room")
        if verdict.get("conflicts"):
            reasons.append("conflicts")
        console.print(Text(f"NOT READY  layer {layer}" + (f": {'; '.join(reasons)}" if reasons else ""),
                           style="bold red"), soft_wrap=True)
    if quiet:
        return
    if services:
        print_fitted(console, *services_table(console, services))
    else:
        console.print("needs no services")
    pool = verdict["pool"]
    console.print(pools_table({layer: pool}))
    for reason in pool.get("reasons") or []:
        console.print(Text(f"  no room: {reason}", style="yellow"))
    for c in verdict.get("conflicts") or []:
        console.print(Text(f"  CONFLICT {c}", style="red"))


def render_missing(stream: Any, rows: Sequence[Mapping[str, Any]]) -> None:
    """For stderr, as plain lines (never wrapped): each missing service, why, and what to do."""
    for s in rows:
        why = s.get("error") or s.get("status")
        if s.get("status") == "blocked":
            why = f"blocked by {', '.join(s.get('blocked_by') or [])}"
        stream.write(f"missing: {s.get('name')} ({why})\n")
        for step in s.get("remediation") or []:
            stream.write(f"  - {step}\n")
    stream.flush()


def render_graph(console: Console, graph: Mapping[str, Any], *, quiet: bool = False) -> None:
    """The dependency tree and the startup order; with ``quiet`` only the order, one level
    per line."""
    if quiet:
        for level in graph["levels"]:
            console.print(" ".join(level), soft_wrap=True)
        return
    tree = Tree("services (each needs the ones under it)")
    deps: Mapping[str, Sequence[str]] = graph["dependencies"]

    def add(node: Tree, name: str, path: tuple[str, ...]) -> None:
        branch = node.add(name)
        for dep in deps.get(name, ()):
            if dep not in path:
                add(branch, dep, path + (dep,))

    dependents = {d for ds in deps.values() for d in ds}
    for name in deps:
        if name not in dependents:
            add(tree, name, (name,))
    console.print(tree)
    console.print("startup order:")
    for i, level in enumerate(graph["levels"], 1):
        console.print(f"  {i}. {', '.join(level)}")
