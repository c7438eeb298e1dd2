"""``--format github``: failures as GitHub Actions workflow commands (``::error``), and a
Markdown summary for ``$GITHUB_STEP_SUMMARY``.

The runner turns each ``::error`` line into an annotation on the run's page, so a missing
service shows up where people look, with its remediation steps. Nothing here decides
anything: it formats the dicts ``status`` and ``layer`` already built.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

_BAD = ("unhealthy", "blocked", "unknown")


def escape_data(text: str) -> str:
    """A workflow command's message, escaped as the runner expects (``%``, CR, LF)."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """A workflow command's property value (``title=...``): also ``:`` and ``,``."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def command(kind: str, message: str, *, title: str | None = None) -> str:
    """One workflow command line, e.g. ``::error title=...::message``."""
    props = f" title={escape_property(title)}" if title else ""
    return f"::{kind}{props}::{escape_data(message)}"


def _service_message(name: str, s: Mapping[str, Any]) -> str:
    status = str(s.get("status", "unknown"))
    if status == "blocked":
        why = f"blocked by {', '.join(s.get('blocked_by') or []) or 'a dependency'}"
    else:
        why = str(s.get("error") or status)
    lines = [f"service {name} is {status}: {why}"]
    lines += [f"- {step}" for step in s.get("remediation") or []]
    return "\n".join(lines)


def service_errors(services: Mapping[str, Mapping[str, Any]], *, context: str = "") -> list[str]:
    """One ``::error`` per service that is not healthy, root causes before blocked ones."""
    bad = [(name, s) for name, s in services.items() if s.get("status") in _BAD]
    bad.sort(key=lambda item: item[1].get("status") == "blocked")
    prefix = f"{context}: " if context else ""
    return [command("error", _service_message(name, s), title=f"netra-rm: {prefix}{name} {s.get('status')}")
            for name, s in bad]


def status_annotations(resources: Mapping[str, Any], services: Mapping[str, Any]) -> list[str]:
    """``status``: an error per unhealthy service, a warning per conflict, then one plain line."""
    lines = service_errors(services.get("services") or {})
    lines += [command("warning", c, title="netra-rm: conflict") for c in resources.get("conflicts") or []]
    lines.append(f"netra-rm: {services.get('healthy_services', 0)} of {services.get('total_services', 0)} "
                 f"services healthy, {resources.get('total_allocations', 0)} active allocations")
    return lines


def layer_annotations(verdict: Mapping[str, Any]) -> list[str]:
    """``layer``: when not ready, an error per missing service and per reason the pool has no
    room; then one plain line with the verdict."""
    layer = verdict["layer"]
    if verdict.get("ready"):
        return [f"netra-rm: layer {layer} is ready"]
    services = verdict.get("services") or {}
    missing = {name: services[name] for name in verdict.get("missing") or [] if name in services}
    lines = service_errors(missing, context=f"layer {layer}")
    pool = verdict.get("pool") or {}
    reasons = pool.get("reasons") or []
    if reasons:
        message = "\n".join([f"layer {layer} has no room:"] + [f"- {reason}" for reason in reasons])
        lines.append(command("error", message, title=f"netra-rm: layer {layer} has no room"))
    for conflict in verdict.get("conflicts") or []:
        lines.append(command("error", conflict, title=f"netra-rm: layer {layer} conflict"))
    lines.append(f"netra-rm: layer {layer} is NOT ready")
    return lines


# -- Markdown for $GITHUB_STEP_SUMMARY ---------------------------------------------------

def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _join(lines: Sequence[str]) -> str:
    """Markdown lines as one block: no runs of blank lines, ending with one blank line."""
    kept: list[str] = []
    for line in lines:
        if line or (kept and kept[-1]):
            kept.append(line)
    return "\n".join(kept).rstrip("\n") + "\n\n"


def _status_cell(status: str) -> str:
    return "✅ healthy" if status == "healthy" else f"❌ {status}"


def services_markdown(services: Mapping[str, Mapping[str, Any]]) -> list[str]:
    rows = []
    for name, s in services.items():
        status = str(s.get("status", "unknown"))
        latency = s.get("latency_ms")
        if status == "blocked":
            detail = "blocked by " + ", ".join(s.get("blocked_by") or [])
        else:
            detail = s.get("error") or ""
        rows.append((f"`{name}`", _status_cell(status), "-" if latency is None else f"{latency:.0f} ms", detail))
    return _table(("service", "status", "latency", "detail"), rows)


def pools_markdown(pools: Mapping[str, Mapping[str, Any]]) -> list[str]:
    rows = [(f"`{layer}`", f"{p['allocated_memory_mb']}/{p['max_memory_mb']} MB",
             f"{p['allocated_cpu_percent']:g}/{p['max_cpu_percent']:g}%",
             f"{p['active_instances']}/{p['max_parallel_instances']}") for layer, p in pools.items()]
    return _table(("layer", "memory", "cpu", "instances"), rows)


def _remediation_markdown(services: Mapping[str, Mapping[str, Any]]) -> list[str]:
    lines: list[str] = []
    for name, s in services.items():
        if s.get("status") in _BAD and s.get("remediation") and s.get("status") != "blocked":
            lines.append(f"**{name}**:")
            lines += [f"- {step}" for step in s["remediation"]]
            lines.append("")
    return lines


def status_summary(resources: Mapping[str, Any], services: Mapping[str, Any]) -> str:
    """The step summary for ``status``: services, pools, allocations and conflicts."""
    per_service = services.get("services") or {}
    lines = ["## netra-rm status", "",
             f"{services.get('healthy_services', 0)} of {services.get('total_services', 0)} services healthy; "
             f"{resources.get('total_allocations', 0)} active allocations.", ""]
    if per_service:
        lines += services_markdown(per_service) + [""]
    lines += _remediation_markdown(per_service)
    lines += pools_markdown(resources.get("resource_pools") or {}) + [""]
    conflicts = resources.get("conflicts") or []
    if conflicts:
        lines += ["**Conflicts**", ""] + [f"- {c}" for c in conflicts] + [""]
    return _join(lines)


def layer_summary(verdict: Mapping[str, Any]) -> str:
    """The step summary for ``layer``: the verdict, its services, its pool, what to do."""
    layer = verdict["layer"]
    ready = bool(verdict.get("ready"))
    lines = [f"## netra-rm layer `{layer}`: {'✅ ready' if ready else '❌ not ready'}", ""]
    services = verdict.get("services") or {}
    if services:
        lines += services_markdown(services) + [""]
    else:
        lines += ["The layer needs no services.", ""]
    pool = verdict.get("pool") or {}
    if pool:
        lines += pools_markdown({layer: pool}) + [""]
        lines += [f"- no room: {reason}" for reason in pool.get("reasons") or []]
    lines += [f"- conflict: {c}" for c in verdict.get("conflicts") or []]
    if not ready:
        lines += [""] + _remediation_markdown(services)
    return _join(lines)


def append_summary(path: str, markdown: str, *, stderr: TextIO | None = None) -> bool:
    """Append to ``$GITHUB_STEP_SUMMARY`` (other steps' summaries in the job stay).

    A summary is a courtesy: one that cannot be written (a missing directory, a full
    disk) is a warning on stderr, never a change of the verdict. Returns whether it was
    written."""
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(markdown)
    except OSError as exc:
        (stderr or sys.stderr).write(f"netra-rm: warning: cannot write the step summary to {path} "
                                     f"({exc.strerror or exc}); the verdict is unchanged.\n")
        return False
    return True
