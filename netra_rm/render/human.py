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
            layer + ("\n(dedicated)" if p.get("dedicated") else ""),
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
            name, str(p.get("scope", "host")),
            usage_cell(p["active_instances"], p["max_parallel_instances"], ""),
            usage_cell(p["allocated_memory_mb"], memory, " MB") if memory is not None else unlimited,
            usage_cell(p["allocated_cpu_percent"], cpu, "%") if cpu is not None else unlimited,
        )
    return table


def allocations_table(allocations: Sequence[Mapping[str, Any]]) -> Table:
    table = Table(title=f"Allocations ({len(allocations)})", title_justify="left")
    for column in ("id", "layer", "category", "slot", "memory", "cpu", "age", "expires in", "owner"):
        table.add_column(column)
    for a in allocations:
        owner = a.get("owner") or {}
        who = f"{owner.get('user', '?')}@{owner.get('host', '?')}"
        who += f" pid {owner['pid']}" if owner.get("pid") is not None else " (until released)"
        table.add_row(a["id"], a["layer"], a["category"], str(a.get("slot", "-")), f"{a['memory_mb']} MB",
                      f"{a['cpu_percent']:g}%", duration(a.get("age_seconds")),
                      duration(a.get("expires_in_seconds")), who)
    return table


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
    for column in ("position", "layer", "category", "memory", "cpu", "waited", "owner"):
        table.add_column(column)
    for i, w in enumerate(waiters, 1):
        owner = w.get("owner") or {}
        table.add_row(str(i), w.get("layer", "?"), w.get("category", "?"), f"{w.get('memory_mb', 0)} MB",
                      f"{w.get('cpu_percent', 0):g}%", duration(now - w.get("since", now)),
                      f"{owner.get('user', '?')}@{owner.get('host', '?')} pid {owner.get('pid', '?')}")
    return table


def render_status(console: Console, resources: Mapping[str, Any], services: Mapping[str, Any],
                  conflicts: Sequence[str], now: float) -> None:
    console.print(services_table(services.get("services", {})))
    console.print(f"{services.get('healthy_services', 0)} of {services.get('total_services', 0)} services healthy")
    console.print()
    console.print(pools_table(resources["resource_pools"]))
    if resources.get("shared_pools"):
        console.print(shared_pools_table(resources["shared_pools"]))
    console.print(allocations_table(resources["active_allocations"]))
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
