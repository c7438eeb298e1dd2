"""Rich tables and trees for people. Nothing here decides anything; it only draws."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

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


def services_table(services: Mapping[str, Mapping[str, Any]]) -> Table:
    table = Table(title="Services", title_justify="left")
    table.add_column("service", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("latency", no_wrap=True, justify="right")
    table.add_column("address", overflow="ellipsis", max_width=20, no_wrap=True)
    table.add_column("detail", overflow="fold", min_width=16, ratio=1)
    for name, s in services.items():
        status = str(s.get("status", "unknown"))
        latency = s.get("latency_ms")
        if status == "blocked":
            detail = "blocked by " + ", ".join(s.get("blocked_by") or [])
        elif status == "healthy":
            detail = f"version {s['version']}" if s.get("version") else ""
        else:
            detail = s.get("error") or ""
        table.add_row(name, Text(status.upper() if status != "healthy" else status,
                                 style=_STATUS_STYLE.get(status, "")),
                      "-" if latency is None else f"{latency:.0f} ms", s.get("url") or "-", detail)
    return table


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


def allocations_table(allocations: Sequence[Mapping[str, Any]], *, title: str | None = None) -> Table:
    table = Table(title=title or f"Allocations ({len(allocations)})", title_justify="left")
    for column in ("id", "layer", "category", "slot", "memory", "cpu", "age", "expires in", "owner"):
        table.add_column(column, no_wrap=column == "id")
    for a in allocations:
        owner = a.get("owner") or {}
        who = f"{owner.get('user', '?')}@{owner.get('host', '?')}"
        who += f" pid {owner['pid']}" if owner.get("pid") is not None else " (until released)"
        where = a.get("layer") or ", ".join(a.get("pools") or ()) or "-"
        slot = ", ".join(f"{pool}={name}" for pool, name in a["instances"].items()) if a.get("instances") \
            else str(a.get("slot", "-"))
        table.add_row(a["id"], where, a["category"], slot, f"{a['memory_mb']} MB",
                      f"{a['cpu_percent']:g}%", duration(a.get("age_seconds")),
                      duration(a.get("expires_in_seconds")), who)
    return table


def allocations_summary(allocations: Sequence[Mapping[str, Any]]) -> list[Table]:
    """Many allocations in a few lines: counts per layer and category, then the oldest
    and the longest-held few (``status --all`` lists every one)."""
    counts: dict[tuple[str, str], list[float]] = {}
    for a in allocations:
        key = (a.get("layer") or ", ".join(a.get("pools") or ()) or "-", a.get("category", ""))
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
    tables = [table, allocations_table(oldest, title=f"Oldest {len(oldest)}")]
    if longest:
        tables.append(allocations_table(longest, title=f"Longest-held {len(longest)}"))
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


def waiters_table(waiters: Sequence[Mapping[str, Any]], now: float) -> Table:
    table = Table(title=f"Waiting ({len(waiters)})", title_justify="left")
    for column in ("position", "layer", "category", "priority", "memory", "cpu", "waited", "owner"):
        table.add_column(column)
    for i, w in enumerate(waiters, 1):
        owner = w.get("owner") or {}
        priority = str(w.get("priority", 0))
        if w.get("effective_priority", w.get("priority", 0)) != w.get("priority", 0):
            priority += f" (now {w['effective_priority']})"
        table.add_row(str(i), w.get("layer") or ", ".join(w.get("pools") or ()) or "?", w.get("category", "?"),
                      priority, f"{w.get('memory_mb', 0)} MB",
                      f"{w.get('cpu_percent', 0):g}%", duration(now - w.get("since", now)),
                      f"{owner.get('user', '?')}@{owner.get('host', '?')} pid {owner.get('pid', '?')}")
    return table


def render_status(console: Console, resources: Mapping[str, Any], services: Mapping[str, Any],
                  conflicts: Sequence[str], now: float, *, every_allocation: bool = False) -> None:
    console.print(services_table(services.get("services", {})))
    console.print(f"{services.get('healthy_services', 0)} of {services.get('total_services', 0)} services healthy")
    console.print()
    console.print(pools_table(resources["resource_pools"]))
    if resources.get("shared_pools"):
        console.print(shared_pools_table(resources["shared_pools"]))
    allocations = resources["active_allocations"]
    if every_allocation or len(allocations) <= SUMMARY_THRESHOLD:
        console.print(allocations_table(allocations))
    else:
        for table in allocations_summary(allocations):
            console.print(table)
    if resources.get("waiters"):
        console.print(waiters_table(resources["waiters"], now))
    console.print(limits_table(resources["global_limits"], resources.get("system_metrics", {})))
    if conflicts:
        console.print(Text("Conflicts", style="bold red"))
        for c in conflicts:
            console.print(Text(f"  CONFLICT {c}", style="red"))
    console.print(Text(f"ledger: {resources.get('ledger')}", style="dim"))


def render_layer(console: Console, verdict: Mapping[str, Any]) -> None:
    layer = verdict["layer"]
    if verdict["ready"]:
        console.print(Text(f"READY  layer {layer}", style="bold green"))
    else:
        console.print(Text(f"NOT READY  layer {layer}", style="bold red"))
    services = verdict.get("services") or {}
    if services:
        console.print(services_table(services))
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


def render_graph(console: Console, graph: Mapping[str, Any]) -> None:
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
