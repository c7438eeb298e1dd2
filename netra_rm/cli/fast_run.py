"""A fast path for ``netra-rm run``: the same command without loading Typer and Rich.

``run`` wraps every test command of a CI step, so its start-up counts twice: it is
measured against GNU ``sem`` and ``flock``. Typer, Click and Rich cost about a third of
its start-up, and ``run`` needs none of them to parse its options and call
:func:`netra_rm.core.run.run_command`. This module parses exactly the options of the
Typer command ``run`` (a test checks the two lists agree) and handles the errors the way
``cli.context.guard`` does. Anything else (``--help``, an unknown or malformed option, a
value that does not parse, global options other than ``--config``/``--ledger``/
``--quiet``/``--no-color``) returns None, and the Typer application takes over, with its
usual help and messages.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from netra_rm import numbers

#: The global options (before ``run``) this path understands, and whether they take a value.
GLOBAL_OPTIONS = {"--config": True, "--ledger": True, "--quiet": False, "-q": False, "--no-color": False}
#: The options of ``run`` and whether they take a value; keep in step with ``app.run_``.
RUN_OPTIONS = {"--layer": True, "--category": True, "--memory-mb": True, "--cpu-percent": True,
               "--dedicated": False, "--requires": True, "--duration-minutes": True, "--wait": False,
               "--timeout": True, "--pool": True, "--instances": True, "--priority": True, "--on-lost": True,
               "--kill-after": True, "--enforce": False, "--no-measure": False, "--verbose": False, "-v": False}

#: The range each numeric option of ``run`` accepts (the Typer command checks the same).
RUN_NUMBERS = {"--memory-mb": numbers.MEMORY_MB, "--cpu-percent": numbers.CPU_PERCENT,
               "--duration-minutes": numbers.DURATION_MINUTES, "--timeout": numbers.WAIT_SECONDS,
               "--kill-after": numbers.KILL_SECONDS}


@dataclass
class RunArgs:
    """``run``'s command line, parsed."""

    config: str | None = None
    ledger: str | None = None
    quiet: bool = False
    color: bool = True
    options: dict[str, str] = field(default_factory=dict)
    flags: set[str] = field(default_factory=set)
    requires: list[str] = field(default_factory=list)
    pools: list[str] = field(default_factory=list)
    command: list[str] = field(default_factory=list)


def parse(argv: Sequence[str]) -> RunArgs | None:
    """Parse ``[GLOBAL OPTIONS] run [OPTIONS] [--] CMD [ARGS]...``; None when this path
    should not handle it."""
    args = RunArgs()
    i = _options(argv, 0, GLOBAL_OPTIONS, args, stop="run")
    if i is None or i >= len(argv) or argv[i] != "run":
        return None
    i = _options(argv, i + 1, RUN_OPTIONS, args, stop="--")
    if i is None:
        return None
    if i < len(argv) and argv[i] == "--":
        i += 1
    args.command = list(argv[i:])
    if not args.command or ("--layer" not in args.options and not args.pools) or "--category" not in args.options:
        return None
    return args


def _options(argv: Sequence[str], i: int, known: dict[str, bool], args: RunArgs, *, stop: str) -> int | None:
    """Consume ``known`` options from ``argv[i:]``; the index of the first other word."""
    while i < len(argv):
        word = argv[i]
        if word == stop or not word.startswith("-") or word == "-":
            return i
        name, eq, inline = word.partition("=")
        if name not in known or (eq and not known[name]):
            return None  # --help, -h, unknown, or a value given to a flag
        if known[name]:
            if eq:
                value = inline
            elif i + 1 < len(argv):
                i += 1
                value = argv[i]
            else:
                return None
            _store(args, name, value)
        else:
            _store(args, name, None)
        i += 1
    return i


def _store(args: RunArgs, name: str, value: str | None) -> None:
    if name == "--config":
        args.config = value
    elif name == "--ledger":
        args.ledger = value
    elif name in ("--quiet", "-q"):
        args.quiet = True
    elif name == "--no-color":
        args.color = False
    elif name == "--requires":
        args.requires.append(value or "")
    elif name == "--pool":
        args.pools.append(value or "")
    elif value is None:
        args.flags.add(name)
    else:
        args.options[name] = value


def _int(text: str | None) -> int | None:
    return None if text is None else int(text)


def _float(text: str | None) -> float | None:
    return None if text is None else float(text)


def main(argv: Sequence[str]) -> int | None:
    """Run ``netra-rm run`` from ``argv``; its exit code, or None to let Typer handle it."""
    args = parse(argv)
    if args is None:
        return None
    try:
        memory = _int(args.options.get("--memory-mb"))
        cpu = _float(args.options.get("--cpu-percent"))
        duration = _float(args.options.get("--duration-minutes"))
        timeout = _float(args.options.get("--timeout"))
        instances = _int(args.options.get("--instances"))
        priority = _int(args.options.get("--priority")) or 0
        kill_after = _float(args.options.get("--kill-after"))
    except ValueError:
        return None  # Typer says which value is wrong
    for name, rng in RUN_NUMBERS.items():
        if name in args.options and numbers.problem(args.options[name], rng) is not None:
            return None  # NaN, infinite or out of range: Typer says so, naming the range
    on_lost = args.options.get("--on-lost", "term")
    if on_lost not in ("term", "warn"):
        return None
    verbose = bool({"--verbose", "-v"} & args.flags)

    from netra_rm.config import env as envmod
    from netra_rm.errors import ExitCode, NetraRMError
    from netra_rm.render import Output

    out = Output(quiet=args.quiet, color=args.color and not envmod.no_color(), stdout=sys.stdout,
                 stderr=sys.stderr)
    try:
        from netra_rm import deadline
        from netra_rm.core.engine import Engine
        from netra_rm.core.run import DEFAULT_KILL_AFTER, RunOptions, run_command, run_summary

        with deadline.bounded(timeout):
            engine = Engine.from_options(config_path=args.config, ledger=args.ledger)
            request = engine.resolve_request(args.options.get("--layer"), args.options["--category"],
                                             memory_mb=memory, cpu_percent=cpu, dedicated="--dedicated" in args.flags,
                                             requires=args.requires, duration_minutes=duration, pools=args.pools,
                                             instances=instances, priority=priority)
            enforce = "--enforce" in args.flags or (request.layer is not None
                                                    and engine.config.layer(request.layer).enforce)
            measure = "--no-measure" not in args.flags and engine.config.machine.measure
            options = RunOptions(on_lost=on_lost,
                                 kill_after=DEFAULT_KILL_AFTER if kill_after is None else kill_after,
                                 enforce=enforce, measure=measure, say=out.info if verbose else None, warn=out.info)
            outcome = run_command(engine, request, args.command,
                                  wait="--wait" in args.flags or timeout is not None, timeout=timeout, options=options)
    except NetraRMError as exc:
        out.error(exc)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        out.info("interrupted")
        return int(ExitCode.INTERRUPTED)
    except Exception as exc:  # noqa: BLE001 - the last line of defence, as in cli.context.guard
        if envmod.debug():
            raise
        out.error(f"unexpected {exc.__class__.__name__}: {exc}",
                  ["This is a bug in netra-rm; rerun with NETRA_RM_DEBUG=1 for a traceback and report it."])
        return int(ExitCode.UNAVAILABLE)
    if outcome.error:
        out.error(outcome.error)
    for note in outcome.notes:
        out.info(f"netra-rm: {note}")
    if verbose:
        out.info(run_summary(outcome))
    return outcome.exit_code
