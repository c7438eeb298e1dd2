"""The one renderer: every command's result (see :mod:`netra_rm.results`) is drawn here,
as a table, as its JSON document, as OpenMetrics or GitHub annotations, or quietly.

:func:`show` decides the form in one place; the modules beside it draw the tables.
:class:`Output` is where text goes (stdout for data, stderr for people). Rich is imported
only when a table is drawn, so ``allocate`` and ``release`` stay fast.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any, TextIO

from netra_rm.errors import NetraRMError
from netra_rm.redact import mask_text
from netra_rm.results import JSON_SCHEMA_VERSION, Result

__all__ = ["JSON_SCHEMA_VERSION", "Output", "envelope", "show"]


@dataclass
class Output:
    """Where and how to print: JSON or human, quiet or not, colour or not."""

    json: bool = False
    quiet: bool = False
    color: bool = True
    stdout: TextIO = sys.stdout
    stderr: TextIO = sys.stderr

    # -- plain lines ---------------------------------------------------------------------

    def line(self, text: str) -> None:
        """A line of data on stdout (printed even when quiet: scripts read it)."""
        self.stdout.write(text + "\n")
        self.stdout.flush()

    def info(self, text: str) -> None:
        """A message for people, on stderr; dropped by --quiet."""
        if not self.quiet:
            self.stderr.write(text + "\n")
            self.stderr.flush()

    def emit_json(self, data: Any) -> None:
        self.stdout.write(json.dumps(data, indent=2, default=_json_default) + "\n")
        self.stdout.flush()

    def error(self, exc: NetraRMError | str, remediation: list[str] | None = None) -> None:
        """One sentence naming what is wrong, then the remediation steps; never a traceback."""
        message = exc.message if isinstance(exc, NetraRMError) else str(exc)
        steps = list(exc.remediation) if isinstance(exc, NetraRMError) else list(remediation or [])
        prefix = "\x1b[1;31merror:\x1b[0m " if self.color and _isatty(self.stderr) else "error: "
        self.stderr.write(f"netra-rm: {prefix}{mask_text(message)}\n")
        for step in steps:
            self.stderr.write(f"  - {mask_text(step)}\n")
        self.stderr.flush()

    # -- rich ----------------------------------------------------------------------------

    def console(self, *, stderr: bool = False) -> Any:
        from rich.console import Console

        return Console(file=self.stderr if stderr else self.stdout, no_color=not self.color,
                       highlight=False, soft_wrap=False)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _json_default(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


# -- the one renderer -----------------------------------------------------------------------------

def envelope(result: Result) -> dict[str, Any]:
    """A result's JSON document in the envelope every ``--json`` output shares."""
    return result.json_document()


def show(out: Output, result: Result, *, fmt: str = "table", **hints: Any) -> None:
    """Print ``result`` as ``fmt`` says (``table``, ``json``, ``openmetrics``, ``github``;
    ``--json`` and ``--quiet`` live in ``out``). ``hints`` are a form's extras (the
    status table's ``first_run_hint`` and ``every_allocation``)."""
    if fmt == "json" or (out.json and fmt == "table"):
        out.emit_json(envelope(result))
        _after(out, result, fmt="json")
        return
    drawer = _DRAWERS.get(result.kind)
    if drawer is None:  # pragma: no cover - every result kind has a drawer (tested)
        raise TypeError(f"no way to show a {result.kind} result")
    drawer(out, result, fmt, hints)
    _after(out, result, fmt=fmt)


def _after(out: Output, result: Any, *, fmt: str) -> None:
    """What a result says on stderr whatever its form: ids not found, a start that failed."""
    if result.kind == "release" and result.missing:
        out.error(f"allocation {', '.join(result.missing)} not found (already released or expired).")
    elif result.kind == "startup":
        failure = result.result.error()
        if failure is not None:
            from netra_rm.render import startup

            out.error(failure)
            startup.write_output_tail(out.stderr, failure.service_name, failure.output_tail, failure.log)


def _status(out: Output, result: Any, fmt: str, hints: dict[str, Any]) -> None:
    import time

    if fmt == "openmetrics":
        from netra_rm import __version__
        from netra_rm.render.openmetrics import render_openmetrics

        out.stdout.write(render_openmetrics(result.resources, result.services, now=time.time(), version=__version__))
    elif fmt == "github":
        _github(out, result.resources, result.services, status=True)
    else:
        from netra_rm.render.human import render_status

        render_status(out.console(), result.resources, result.services, result.conflicts, time.time(),
                      quiet=out.quiet, first_run_hint=hints.get("first_run_hint"),
                      every_allocation=bool(hints.get("every_allocation")))


def _github(out: Output, *data: Any, status: bool) -> None:
    from netra_rm.config import env as envmod
    from netra_rm.render import github

    lines = github.status_annotations(*data) if status else github.layer_annotations(*data)
    for line in lines:
        out.line(line)
    summary = envmod.github_step_summary()
    if summary:
        text = github.status_summary(*data) if status else github.layer_summary(*data)
        github.append_summary(summary, text, stderr=out.stderr)


def _layer(out: Output, result: Any, fmt: str, hints: dict[str, Any]) -> None:
    data = result.document()
    if fmt == "github":
        _github(out, data, status=False)
        return
    from netra_rm.render.human import render_layer, render_missing

    render_layer(out.console(), data, quiet=out.quiet)
    if not result.verdict.ready and not out.quiet:
        from netra_rm.core.readiness import missing_details

        render_missing(out.stderr, missing_details(result.verdict))


def _allocation(out: Output, result: Any, fmt: str, hints: dict[str, Any]) -> None:
    out.line(result.allocation.id)


def _release(out: Output, result: Any, fmt: str, hints: dict[str, Any]) -> None:
    if out.quiet:
        return
    for a in result.released:
        out.line(f"released {a.id}")
    for missing in result.missing:
        out.line(f"not found {missing}")


def _cleanup(out: Output, result: Any, fmt: str, hints: dict[str, Any]) -> None:
    for r in result.reclaimed if not out.quiet else ():
        out.line(f"released {r.allocation.id} ({r.allocation.layer}/{r.allocation.category}): {r.reason}")
    if not result.reclaimed:
        out.info("nothing to release")


def _verify(out: Output, result: Any, fmt: str, hints: dict[str, Any]) -> None:
    from netra_rm.render.journal import render_verify

    render_verify(out.console(), result.report.to_dict(), quiet=out.quiet)


def _history(out: Output, result: Any, fmt: str, hints: dict[str, Any]) -> None:
    from netra_rm.render.journal import render_history

    render_history(out.console(), result.events, quiet=out.quiet)
    if result.unreadable:
        shown = ", ".join(str(n) for n in result.unreadable[:10])
        out.info(f"{len(result.unreadable)} journal line(s) could not be read and were skipped (line {shown}"
                 f"{', ...' if len(result.unreadable) > 10 else ''}).")


def _recommend(out: Output, result: Any, fmt: str, hints: dict[str, Any]) -> None:
    if not result.found:
        out.info("nothing measured yet: run suites with `netra-rm run` (or the pytest plugin) first.")
    elif out.quiet:
        for r in result.found:
            out.line(r.sentence())
    else:
        from netra_rm.render.journal import render_recommendations

        render_recommendations(out.console(), result.found)


def _pools(out: Output, result: Any, fmt: str, hints: dict[str, Any]) -> None:
    if out.quiet:
        for p in result.pools:
            out.line(f"{p['name']}\t{p['active_instances']}/{p.get('max_parallel_instances', '?')}\t"
                     f"{'draining' if p['drained'] else 'granting'}")
        return
    from netra_rm.render.human import render_pools

    render_pools(out.console(), result.pools)


def _pool(out: Output, result: Any, fmt: str, hints: dict[str, Any]) -> None:
    if out.quiet:
        return
    cap = result.record.capacity
    out.line(f"pool {result.name}: {cap.instances} instance(s)"
             + (f", {cap.memory_mb} MB" if cap.memory_mb is not None else "")
             + (f", {cap.cpu_percent:g}% CPU" if cap.cpu_percent is not None else "")
             + f"; {'draining' if result.record.drained else 'granting'}")


def _migrate(out: Output, result: Any, fmt: str, hints: dict[str, Any]) -> None:
    done = result.result
    for ident in done.copied:
        out.line(f"copied {ident}")
    out.info(f"copied {len(done.copied)} allocation(s) from {done.source} to {done.target} "
             f"({len(done.already_there)} already there, {len(done.expired)} expired left behind); "
             f"fencing counter now {done.fencing_counter}")


def _graph(out: Output, result: Any, fmt: str, hints: dict[str, Any]) -> None:
    from netra_rm.render.human import render_graph

    render_graph(out.console(), result.document(), quiet=out.quiet)


def _config(out: Output, result: Any, fmt: str, hints: dict[str, Any]) -> None:
    from netra_rm.config.show import render_yaml

    out.stdout.write(render_yaml(result.config))


def _config_valid(out: Output, result: Any, fmt: str, hints: dict[str, Any]) -> None:
    if not out.quiet:
        cfg = result.config
        out.line(f"{cfg.source}: valid ({len(cfg.layers)} layers, {len(cfg.services)} services)")


def _startup(out: Output, result: Any, fmt: str, hints: dict[str, Any]) -> None:
    if out.quiet:
        return
    from netra_rm.render import startup

    (startup.render_up if result.verb == "up" else startup.render_down)(out.console(), result.result.to_dict())


_DRAWERS = {"status": _status, "layer": _layer, "allocation": _allocation, "release": _release,
            "cleanup": _cleanup, "verify": _verify, "history": _history, "recommend": _recommend,
            "pools": _pools, "pool": _pool, "migrate": _migrate, "graph": _graph, "config": _config,
            "config-valid": _config_valid, "startup": _startup}
