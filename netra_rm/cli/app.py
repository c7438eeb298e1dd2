"""The Typer application. Each command parses, calls one core function, maps errors to an
exit code (``context.guard``) and hands the result to the renderer. No decisions here."""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from netra_rm import __version__, numbers
from netra_rm.cli import completers as complete
from netra_rm.cli.context import AppState, finish, first_run_hint, guard, state, stop_on_signals
from netra_rm.config import env as envmod
from netra_rm.render import show

if TYPE_CHECKING:
    pass

app = typer.Typer(
    name="netra-rm",
    help="Decide whether a test layer may run now, and on what.\n\n"
         "Checks the services a layer needs, in dependency order, and hands out allocations "
         "from the layer's resource pool that other processes can see.\n\n"
         "Example: netra-rm layer core_integration --timeout 60 && pytest tests/integration",
    no_args_is_help=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
config_app = typer.Typer(help="Show or check the configuration.\n\nExample: netra-rm config validate my.yaml",
                         no_args_is_help=True)
app.add_typer(config_app, name="config")
pool_app = typer.Typer(help="Show and change pools held in the ledger: sizes, draining, ad-hoc pools.\n\n"
                            "Example: netra-rm pool show", no_args_is_help=True)
app.add_typer(pool_app, name="pool")
ledger_app = typer.Typer(help="Work on ledgers themselves: copy allocations between backends (file, Redis, "
                              "PostgreSQL).\n\nExample: netra-rm ledger migrate --help", no_args_is_help=True)
app.add_typer(ledger_app, name="ledger")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document instead of tables.")]


def _in(rng: numbers.Range) -> Callable[[Any], Any]:
    """A Typer callback that refuses NaN, infinities and numbers outside ``rng`` (exit 2,
    naming the option and the range); Typer's own ``min``/``max`` let NaN through."""

    def check(value: Any) -> Any:
        if value is not None:
            why = numbers.problem(value, rng)
            if why is not None:
                raise typer.BadParameter(f"{why}.")
        return value

    return check


# The request options `allocate` and `run` share, defined once.
LayerOpt = Annotated[Optional[str], typer.Option("--layer", metavar="LAYER",
                                                 help="The layer whose pool to draw from (optional with --pool).",
                                                 autocompletion=complete.complete_layer)]
PoolOpt = Annotated[Optional[list[str]], typer.Option(
    "--pool", metavar="NAME", help="Also take one instance of this pool, fleet-wide on a shared ledger; created in "
                                   "the ledger on first use with --instances (repeatable).")]
InstancesOpt = Annotated[Optional[int], typer.Option("--instances", metavar="N", callback=_in(numbers.INSTANCES),
                                                     help="The size of an ad-hoc --pool that the ledger does not "
                                                          "know yet.")]
PriorityOpt = Annotated[int, typer.Option("--priority", metavar="N", callback=_in(numbers.PRIORITY),
                                          help="Place in the wait queue: higher first (default 0, from -1000 to "
                                               "1000).")]
CategoryOpt = Annotated[str, typer.Option("--category", metavar="NAME", help="What kind of tests, e.g. api_tests.")]
MemoryOpt = Annotated[Optional[int], typer.Option("--memory-mb", metavar="N", callback=_in(numbers.MEMORY_MB),
                                                  help="Memory in MB (default: the layer's share).")]
CpuOpt = Annotated[Optional[float], typer.Option("--cpu-percent", metavar="N", callback=_in(numbers.CPU_PERCENT),
                                                 help="CPU in percent of the machine (default: the layer's share).")]
DedicatedOpt = Annotated[bool, typer.Option("--dedicated", help="No other allocation in the layer meanwhile.")]
RequiresOpt = Annotated[Optional[list[str]], typer.Option("--requires", metavar="SVC",
                                                          autocompletion=complete.complete_service,
                                                          help="A service the tests need (repeatable).")]
DurationOpt = Annotated[Optional[float], typer.Option("--duration-minutes", metavar="M",
                                                      callback=_in(numbers.DURATION_MINUTES),
                                                      help="Hold time before it expires (default 30).")]


class OnLost(str, Enum):
    """What `run` does when its allocation is lost while CMD runs."""

    term = "term"
    warn = "warn"


class StatusFormat(str, Enum):
    """What `status` prints: tables, JSON, OpenMetrics text, or GitHub Actions annotations."""

    table = "table"
    json = "json"
    openmetrics = "openmetrics"
    github = "github"


class LayerFormat(str, Enum):
    """What `layer` prints: the verdict as tables, JSON, or GitHub Actions annotations."""

    table = "table"
    json = "json"
    github = "github"


def _report_format(st: AppState, json_flag: bool, chosen: Optional[Enum]) -> str:
    """--format, where --json (before or after the command) means --format json; both
    naming different formats is a usage error."""
    wants_json = json_flag or st.json
    if chosen is None:
        return "json" if wants_json else "table"
    if wants_json and chosen.value != "json":
        from netra_rm.errors import UsageError

        raise UsageError(f"--json and --format {chosen.value} ask for different output; give one of them.")
    return str(chosen.value)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"netra-rm {__version__}")
        raise typer.Exit(0)


@app.callback(invoke_without_command=True)
def main_callback(
    ctx: typer.Context,
    config: Annotated[Optional[str], typer.Option("--config", metavar="PATH",
                                                  help="Configuration file (default: NETRA_RM_CONFIG, "
                                                       "else the built-in one).")] = None,
    ledger: Annotated[Optional[str], typer.Option("--ledger", metavar="PATH|URL",
                                                  help="Ledger location: a file, redis://... or postgresql://... "
                                                       "(default: NETRA_RM_LEDGER, else a file in the user's "
                                                       "state directory).")] = None,
    json_: JsonOpt = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only what scripts need.")] = False,
    no_color: Annotated[bool, typer.Option("--no-color", help="No colour (NO_COLOR=1 does the same).")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
    status_flag: Annotated[bool, typer.Option("--status", help="Same as `netra-rm status`.")] = False,
    layer_flag: Annotated[Optional[str], typer.Option("--layer", metavar="NAME",
                                                      autocompletion=complete.complete_layer,
                                                      help="Same as `netra-rm layer NAME`.")] = None,
    monitor_flag: Annotated[bool, typer.Option("--monitor", help="Same as `netra-rm monitor`.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", callback=_in(numbers.WAIT_SECONDS), hidden=True)] = 0.0,
    interval: Annotated[float, typer.Option("--interval", callback=_in(numbers.INTERVAL_SECONDS),
                                            hidden=True)] = 2.0,
    count: Annotated[Optional[int], typer.Option("--count", callback=_in(numbers.COUNT), hidden=True)] = None,
    strict: Annotated[bool, typer.Option("--strict", hidden=True)] = False,
) -> None:
    """Decide whether a test layer may run now, and on what.

    Example: netra-rm layer core_integration --timeout 60 && pytest tests/integration
    """
    ctx.obj = AppState(config_path=config, ledger=ledger, json=json_, quiet=quiet,
                       color=not (no_color or envmod.no_color()))
    if ctx.invoked_subcommand is not None:
        return
    # the seed's flags; the options of the commands they stand for are accepted beside them
    if status_flag:
        status(ctx, strict=strict)
    elif layer_flag is not None:
        layer(ctx, layer_flag, timeout=timeout)
    elif monitor_flag:
        monitor(ctx, interval=interval, count=count)
    else:
        typer.echo(ctx.get_help())
    raise typer.Exit(0)


# -- status ------------------------------------------------------------------------------

@app.command()
def status(
    ctx: typer.Context,
    strict: Annotated[bool, typer.Option("--strict", help="Exit 1 when any service is not healthy.")] = False,
    json_: JsonOpt = False,
    format_: Annotated[Optional[StatusFormat], typer.Option(
        "--format", help="table (default); json (the same as --json); openmetrics (Prometheus text); github "
                         "(::error lines, and a Markdown summary to $GITHUB_STEP_SUMMARY when set).")] = None,
    output: Annotated[Optional[str], typer.Option(
        "--output", metavar="FILE", help="With --format json or openmetrics: write the report to FILE, "
                                         "replaced atomically (for node_exporter's textfile collector), "
                                         "instead of stdout.")] = None,
    every: Annotated[bool, typer.Option("--all", help="List every allocation (past 25 the table summarises "
                                                      "them; --json always lists every one).")] = False,
) -> None:
    """Services, pools, allocations and the machine.

    Exits 0 whenever it could report; gate a test run with `netra-rm layer` (or --strict).
    --format openmetrics --output FILE keeps a metrics file fresh for node_exporter.

    Example: netra-rm status --format openmetrics --output /var/lib/node_exporter/netra-rm.prom
    """
    st = state(ctx)
    out = st.output(json_ or format_ is StatusFormat.json)
    with guard(out):
        fmt = _report_format(st, json_, format_)
        if output is not None and fmt not in ("json", "openmetrics"):
            from netra_rm.errors import UsageError

            raise UsageError(f"--output works with --format json or openmetrics, not {fmt}.")
        from netra_rm import results

        report = results.status_report(st.engine(), strict=strict)
        captured = None
        if output is not None:
            import dataclasses
            import io

            captured = io.StringIO()
            out = dataclasses.replace(out, stdout=captured)
        show(out, report, fmt=fmt, first_run_hint=first_run_hint(st), every_allocation=every)
        if output is not None and captured is not None:
            _write_output(output, captured.getvalue())
        finish(report.exit_code)


def _write_output(path: str, text: str) -> None:
    """--output: replace ``path`` atomically; a path we cannot write is bad input (exit 2)."""
    from netra_rm.fsutil import write_atomically

    try:  # mode 0644: collectors (node_exporter) run as other users
        write_atomically(path, text.encode("utf-8"), mode=0o644)
    except OSError as exc:
        from netra_rm.errors import UsageError

        raise UsageError(f"cannot write --output {path}: {exc.strerror or exc}.",
                         remediation=["Check that the directory exists and that you may write to it."]) from None


# -- layer -------------------------------------------------------------------------------

@app.command()
def layer(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The layer, e.g. core_integration.",
                                        autocompletion=complete.complete_layer)],
    timeout: Annotated[float, typer.Option("--timeout", metavar="S", callback=_in(numbers.WAIT_SECONDS),
                                           help="Wait up to S seconds, with backoff, for the layer to be "
                                                "ready.")] = 0.0,
    json_: JsonOpt = False,
    format_: Annotated[Optional[LayerFormat], typer.Option(
        "--format", help="table (default); json (the same as --json); github (::error lines for what is "
                         "missing, and a Markdown summary to $GITHUB_STEP_SUMMARY when set).")] = None,
) -> None:
    """Are the layer's services (with their dependencies) healthy, and does its pool have room?

    Exits 0 when ready, 1 when not (naming each missing service and how to fix it).

    Example: netra-rm layer service_integration --timeout 120 || exit 1
    """
    st = state(ctx)
    out = st.output(json_ or format_ is LayerFormat.json)
    with guard(out):
        stop_on_signals()  # --timeout waits: SIGINT and SIGTERM end it, even if inherited ignored
        fmt = _report_format(st, json_, format_)
        from netra_rm import results

        report = results.layer_report(st.engine(), name, timeout=timeout)
        show(out, report, fmt=fmt)
        finish(report.exit_code)


# -- up / down --------------------------------------------------------------------------

class DiscoverSource(str, Enum):
    """Where `up`/`down` may find the services' addresses besides the configuration."""

    compose = "compose"
    none = "none"


TargetsArg = Annotated[Optional[list[str]], typer.Argument(
    metavar="[LAYER|SERVICE]...", autocompletion=complete.complete_target,
    help="Layers or services (with what they depend on); all services when none is given.")]
DiscoverOpt = Annotated[Optional[DiscoverSource], typer.Option(
    "--discover", help="compose: take the services' host ports from Docker Compose (`docker compose config` "
                       "and `ps`, else the compose file read by netra-rm); none: only the configuration. "
                       "Default: the configuration's `discovery` section.")]


@app.command()
def up(
    ctx: typer.Context,
    targets: TargetsArg = None,
    timeout: Annotated[Optional[float], typer.Option("--timeout", metavar="S", callback=_in(numbers.WAIT_SECONDS),
                                                     help="One deadline for the whole run (default 60).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check the services and print the plan; start "
                                                            "nothing.")] = False,
    discover: DiscoverOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Start what the layers or services need and is down, in dependency order.

    Healthy services are left alone. The others are started with their
    configured `start` commands level by level (a level in parallel), each
    level once the one before is healthy, all under one deadline.

    Exits 0 when everything is healthy; 1 naming the service that failed (its
    command, exit code and last output) or that is down with no start command.
    --dry-run exits the same way.

    Example: netra-rm up core_integration --timeout 120 && pytest tests/integration
    """
    st = state(ctx)
    out = st.output(json_)
    with guard(out):
        from netra_rm.core.startup import DEFAULT_UP_TIMEOUT, bring_up
        from netra_rm.results import Started

        result = Started(bring_up(st.engine(), targets or [],
                                  timeout=DEFAULT_UP_TIMEOUT if timeout is None else timeout, dry_run=dry_run,
                                  discover=discover.value if discover else None,
                                  progress=lambda text: out.info(f"netra-rm: {text}")), "up")
        show(out, result)
        finish(result.exit_code)


@app.command()
def down(
    ctx: typer.Context,
    targets: TargetsArg = None,
    timeout: Annotated[Optional[float], typer.Option("--timeout", metavar="S", callback=_in(numbers.WAIT_SECONDS),
                                                     help="One deadline for the whole run (default 60).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what would be stopped; stop nothing.")] = False,
    discover: DiscoverOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Stop what `netra-rm up` started, dependents first, and check each no longer answers.

    Runs each service's `stop` command; a service without one whose start command
    kept running (a server in the foreground) gets SIGTERM to its process group,
    SIGKILL after 10 s. With LAYER or SERVICE, stops those and what netra-rm
    started on top of them.

    Exits 0 when all stopped; 1 naming the first that could not be stopped.

    Example: netra-rm down core_integration --timeout 30
    """
    st = state(ctx)
    out = st.output(json_)
    with guard(out):
        from netra_rm.core.startup import DEFAULT_DOWN_TIMEOUT, bring_down
        from netra_rm.results import Started

        result = Started(bring_down(st.engine(), targets or [],
                                    timeout=DEFAULT_DOWN_TIMEOUT if timeout is None else timeout, dry_run=dry_run,
                                    discover=discover.value if discover else None,
                                    progress=lambda text: out.info(f"netra-rm: {text}")), "down")
        show(out, result)
        finish(result.exit_code)


# -- allocate / release / cleanup --------------------------------------------------------

@app.command()
def allocate(
    ctx: typer.Context,
    category: CategoryOpt,
    layer_name: LayerOpt = None,
    memory_mb: MemoryOpt = None,
    cpu_percent: CpuOpt = None,
    dedicated: DedicatedOpt = False,
    requires: RequiresOpt = None,
    duration_minutes: DurationOpt = None,
    pools: PoolOpt = None,
    instances: InstancesOpt = None,
    priority: PriorityOpt = 0,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for room instead of failing.")] = False,
    timeout: Annotated[Optional[float], typer.Option("--timeout", metavar="S", callback=_in(numbers.WAIT_SECONDS),
                                                     help="Wait at most S seconds for the required services and "
                                                          "room (exit 1 / 3); implies --wait.")] = None,
    owner_pid: Annotated[Optional[int], typer.Option("--owner-pid", metavar="PID", callback=_in(numbers.PID),
                                                     help="Release automatically when process PID ends (on a "
                                                          "shared ledger a detached keeper renews its lease "
                                                          "meanwhile).")] = None,
    on_lost: Annotated[Optional[OnLost], typer.Option(
        "--on-lost", help="With --owner-pid: term sends PID SIGTERM when the allocation is lost (released by "
                          "another, reclaimed, expired, the ledger reset); warn only journals it.")] = None,
    json_: JsonOpt = False,
) -> None:
    """Admit one allocation into the ledger and print its id.

    --requires services (with what they depend on) must be healthy first, else exit 1;
    with --wait they are waited for within the same --timeout. Without --owner-pid the
    allocation lives until released or expired.

    Example: ID=$(netra-rm allocate --layer core_integration --category db_tests --memory-mb 256)
    """
    st = state(ctx)
    out = st.output(json_)
    with guard(out):
        from netra_rm import deadline
        from netra_rm.core.readiness import require_services
        from netra_rm.core.waiting import allocate_waiting

        with deadline.bounded(timeout):
            engine = st.engine()
            request = engine.resolve_request(layer_name, category, memory_mb=memory_mb, cpu_percent=cpu_percent,
                                             dedicated=dedicated, requires=requires or (),
                                             duration_minutes=duration_minutes, pools=pools or (),
                                             instances=instances, priority=priority)
            if on_lost is not None and owner_pid is None:
                from netra_rm.errors import UsageError

                raise UsageError("--on-lost needs --owner-pid: it says what happens to that process when the "
                                 "allocation is lost.")
            owner = engine.owner(owner_pid)
            waiting = wait or timeout is not None
            spent = require_services(engine, request.requires, wait=waiting, timeout=timeout)
            allocation = allocate_waiting(engine, request, owner, wait=waiting,
                                          timeout=None if timeout is None else max(0.0, timeout - spent))
        if allocation.lease_expires_at is not None or on_lost is not None:
            # a keeper renews a shared ledger's lease while PID lives, and acts when the allocation is lost
            from netra_rm.core.lease import keep_for_owner

            keep_for_owner(engine, allocation, on_lost=None if on_lost is None else on_lost.value)
        from netra_rm.results import Granted

        show(out, Granted(allocation))


@app.command()
def release(
    ctx: typer.Context,
    ids: Annotated[list[str], typer.Argument(metavar="ID...", help="Allocation ids to release.",
                                             autocompletion=complete.complete_allocation_id)],
    json_: JsonOpt = False,
) -> None:
    """Release allocations. Ids not found exit 4; the others are still released.

    Example: netra-rm release "$ID"
    """
    st = state(ctx)
    out = st.output(json_)
    with guard(out):
        from netra_rm import results

        result = results.release(st.engine(), ids)
        show(out, result)
        finish(result.exit_code)


@app.command()
def cleanup(
    ctx: typer.Context,
    force: Annotated[bool, typer.Option("--force", help="Release every allocation, and start a fresh ledger.")] = False,
    json_: JsonOpt = False,
) -> None:
    """Release expired allocations and those whose owning process is gone.

    Example: netra-rm cleanup && netra-rm status
    """
    st = state(ctx)
    out = st.output(json_)
    with guard(out):
        from netra_rm import results

        show(out, results.cleanup(st.engine(), force=force))


# -- run / verify / history -------------------------------------------------------------

@app.command("run", context_settings={"allow_interspersed_args": False})
def run_(
    ctx: typer.Context,
    command: Annotated[list[str], typer.Argument(metavar="-- CMD [ARGS]...", help="The command to run, without a "
                                                                                  "shell.")],
    category: CategoryOpt,
    layer_name: LayerOpt = None,
    memory_mb: MemoryOpt = None,
    cpu_percent: CpuOpt = None,
    dedicated: DedicatedOpt = False,
    requires: RequiresOpt = None,
    duration_minutes: DurationOpt = None,
    pools: PoolOpt = None,
    instances: InstancesOpt = None,
    priority: PriorityOpt = 0,
    wait: Annotated[bool, typer.Option("--wait", help="Queue for room instead of failing (higher --priority "
                                                      "first, then arrival; see the README).")] = False,
    timeout: Annotated[Optional[float], typer.Option("--timeout", metavar="S", callback=_in(numbers.WAIT_SECONDS),
                                                     help="Wait at most S seconds for the required services and "
                                                          "room (exit 1 / 3); implies --wait.")] = None,
    on_lost: Annotated[OnLost, typer.Option("--on-lost", help="When the allocation is lost while CMD runs: term "
                                                                 "stops CMD and exits 6; warn only warns.")]
    = "term",  # type: ignore[assignment]
    kill_after: Annotated[float, typer.Option("--kill-after", metavar="S", callback=_in(numbers.KILL_SECONDS),
                                              help="With --on-lost term: SIGKILL S seconds after SIGTERM.")] = 10.0,
    enforce: Annotated[bool, typer.Option("--enforce", help="Confine CMD to the allocation's memory and CPU (a "
                                                            "cgroup, else a watchdog).")] = False,
    no_measure: Annotated[bool, typer.Option("--no-measure", help="Do not measure CMD's memory and CPU.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Say how CMD is enforced and what it "
                                                                  "used.")] = False,
) -> None:
    """Hold an allocation for exactly as long as CMD runs.

    CMD runs without a shell, owns the allocation (it is reclaimed once CMD is gone, even
    if netra-rm is killed) and finds NETRA_RM_ALLOCATION_ID, NETRA_RM_LAYER,
    NETRA_RM_CATEGORY, NETRA_RM_SLOT, NETRA_RM_MEMORY_MB, NETRA_RM_CPU_PERCENT,
    NETRA_RM_FENCING_TOKEN and, for pools with named instances, NETRA_RM_INSTANCE and
    NETRA_RM_INSTANCE_<PROPERTY> in its environment. SIGINT, SIGTERM and SIGHUP are passed
    on to CMD. --requires services must be healthy first (exit 1). CMD's peak memory and
    CPU time are measured and journaled; with --enforce CMD is killed past its memory. When
    the allocation is lost while CMD runs, CMD is stopped and run exits 6 (--on-lost).
    Exits with CMD's code whatever it is (pytest's 4 and 5 included, which are not
    netra-rm's "not found" and "ledger unusable" here), 128+N if signal N ended it; when
    CMD never ran: 2 if it cannot be run, 3 if there is no room (or --timeout ran out), 5
    if the ledger cannot be used.

    Example: netra-rm run --layer core_integration --category db --wait --timeout 600 -- pytest tests/db
    """
    st = state(ctx)
    out = st.output(False)
    with guard(out):
        from netra_rm import deadline
        from netra_rm.core.run import RunOptions, run_command, run_summary

        with deadline.bounded(timeout):
            engine = st.engine()
            request = engine.resolve_request(layer_name, category, memory_mb=memory_mb, cpu_percent=cpu_percent,
                                             dedicated=dedicated, requires=requires or (),
                                             duration_minutes=duration_minutes, pools=pools or (),
                                             instances=instances, priority=priority)
            layer_enforces = layer_name is not None and engine.config.layer(layer_name).enforce
            options = RunOptions(on_lost=str(getattr(on_lost, "value", on_lost)), kill_after=kill_after,
                                 enforce=enforce or layer_enforces,
                                 measure=not no_measure and engine.config.machine.measure,
                                 say=out.info if verbose else None, warn=out.info)
            outcome = run_command(engine, request, command, wait=wait or timeout is not None, timeout=timeout,
                                  options=options)
        if outcome.error:
            out.error(outcome.error)
        for note in outcome.notes:
            out.info(f"netra-rm: {note}")
        if verbose:
            out.info(run_summary(outcome))
        finish(outcome.exit_code)


@app.command()
def verify(ctx: typer.Context, json_: JsonOpt = False) -> None:
    """Replay the allocation journal and prove the pools were never over-subscribed.

    Reports any moment a pool or global cap was over-subscribed (judged by the limits each
    grant was admitted under; older journal lines without them by the configuration in
    use now), any slot held twice, any fencing token that did not grow, any release
    without a grant, and any ledger allocation the journal does not explain.
    Exits 0 when clean, 1 with findings.

    Example: netra-rm verify --json | jq '.findings'
    """
    st = state(ctx)
    out = st.output(json_)
    with guard(out):
        from netra_rm import results

        result = results.verify(st.engine())
        show(out, result)
        finish(result.exit_code)


@app.command()
def history(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option("--limit", "-n", metavar="N", callback=_in(numbers.EVENTS),
                                       help="Show the last N events.")] = 20,
    json_: JsonOpt = False,
) -> None:
    """Recent grants, releases, expiries and reclaims, from the journal (oldest first).

    Example: netra-rm history --limit 50 --json | jq '.events[] | select(.event == "reclaim")'
    """
    st = state(ctx)
    out = st.output(json_)
    with guard(out):
        from netra_rm import results

        show(out, results.history(st.engine(), limit=limit))


@app.command()
def recommend(
    ctx: typer.Context,
    layer_name: Annotated[Optional[str], typer.Option("--layer", metavar="LAYER", help="Only this layer.",
                                                      autocompletion=complete.complete_layer)] = None,
    json_: JsonOpt = False,
) -> None:
    """What each layer and category really used, from the journal, and what to reserve.

    Per layer and category: the runs measured (by `run` and the pytest plugin), what
    they reserved, the p50/p95/max of their peak memory and CPU seconds, and a
    suggested reservation (p95 plus 20 %, rounded up to a step).

    Example: netra-rm recommend --layer core_integration
    """
    st = state(ctx)
    out = st.output(json_)
    with guard(out):
        from netra_rm import results

        show(out, results.recommend(st.engine(), layer=layer_name))


# -- monitor -----------------------------------------------------------------------------

@app.command()
def monitor(
    ctx: typer.Context,
    interval: Annotated[float, typer.Option("--interval", metavar="S", callback=_in(numbers.INTERVAL_SECONDS),
                                            help="Seconds between samples (at least 0.5).")] = 2.0,
    count: Annotated[Optional[int], typer.Option("--count", metavar="N", callback=_in(numbers.COUNT),
                                                 help="Stop after N samples.")] = None,
    services_interval: Annotated[Optional[float], typer.Option(
        "--services-interval", metavar="S", callback=_in(numbers.SERVICES_INTERVAL_SECONDS),
        help="Seconds between service checks, in the background (default: 5 samples, at least 10 s; "
             "0: no service checks).")] = None,
    json_: JsonOpt = False,
) -> None:
    """A live view of the machine, the pools, the allocations and the services.

    On a terminal it redraws in place; with --json, or when stdout is not a terminal, it
    prints one JSON object per sample (NDJSON). Ctrl-C ends it.

    Services are checked in the background, every 5 samples but at least 10 s apart
    unless --services-interval says otherwise.

    Example: netra-rm monitor --json --interval 5 --count 12 > monitor.ndjson
    """
    st = state(ctx)
    out = st.output(json_)
    with guard(out):
        stop_on_signals()  # runs until stopped: SIGINT and SIGTERM end it, even if inherited ignored
        import sys

        from netra_rm.core.readiness import check_service_results
        from netra_rm.monitor.loop import run_monitor
        from netra_rm.monitor.snapshot import SnapshotSource
        from netra_rm.monitor.thresholds import Thresholds
        from netra_rm.services.rounds import ServiceRounds

        engine = st.engine()

        def ledger_state() -> tuple[list[dict], list[dict]]:
            from netra_rm.machine import live

            pools, allocations = engine.pool_usage()
            live.annotate(allocations, engine.host)  # what each owner uses now, for the over-use conflicts
            return [{"layer": name, **pool} for name, pool in pools.items()], allocations

        ledger_state()  # a ledger unusable from the start is an error (exit 5); later, a caption

        rounds = ServiceRounds(deadline=engine.config.checks.deadline)  # down services: a knock a round

        def services() -> list[dict]:
            results = check_service_results(engine, None, rounds=rounds)
            return [{"name": name, **r.to_dict()} for name, r in results.items()]

        source = SnapshotSource(thresholds=Thresholds.from_mapping(engine.config.thresholds),
                                ledger_state=ledger_state)
        json_lines = out.json or not sys.stdout.isatty()
        every = max(10.0, interval * 5) if services_interval is None else services_interval
        if 0 < every < 1:
            from netra_rm.errors import UsageError

            raise UsageError(f"--services-interval must be 0 (no service checks) or at least 1 second, "
                             f"not {every:g}.")
        checks: dict[str, Any] = {"services_provider": services, "services_interval": every} if every else {}
        run_monitor(source, interval=interval, count=count, json_lines=json_lines, out=out.stdout,
                    console=None if json_lines else out.console(), **checks)


# -- graph -------------------------------------------------------------------------------

@app.command()
def graph(ctx: typer.Context, json_: JsonOpt = False) -> None:
    """The service dependency graph and its startup order.

    Example: netra-rm graph --json | jq '.levels'
    """
    st = state(ctx)
    out = st.output(json_)
    with guard(out):
        from netra_rm import results

        show(out, results.graph(st.config()))


# -- config ------------------------------------------------------------------------------

@config_app.command("show")
def config_show(ctx: typer.Context, json_: JsonOpt = False) -> None:
    """Print the effective configuration (environment applied, secrets masked).

    The output is a valid configuration file; where a value came from the environment is
    said in comments at its top.

    Example: DATABASE_URL=postgresql://app@db/test netra-rm config show > netra-rm.yaml
    """
    st = state(ctx)
    out = st.output(json_)
    with guard(out):
        from netra_rm.results import ConfigShown

        show(out, ConfigShown(st.config()))


@config_app.command("validate")
def config_validate(
    ctx: typer.Context,
    path: Annotated[Optional[str], typer.Argument(metavar="[PATH]", help="The file to check (default: the "
                                                                            "one in use).")] = None,
    json_: JsonOpt = False,
) -> None:
    """Check a configuration file; exit 2 naming the key at fault.

    With Compose discovery on, the compose project it finds is read too: a compose file or
    .env that cannot be read is an error here (elsewhere only a warning).

    Example: netra-rm config validate config/netra-rm.yaml
    """
    st = state(ctx)
    out = st.output(json_)
    with guard(out):
        from netra_rm import results

        show(out, results.config_validate(path or st.config_path or envmod.config_path()))


# -- pools -------------------------------------------------------------------------------

PoolNameArg = Annotated[str, typer.Argument(metavar="NAME", help="A layer, a shared pool or an ad-hoc pool.")]
HostOpt = Annotated[Optional[str], typer.Option("--host", metavar="HOST",
                                                help="For a per-host pool: that host's (default: this one).")]


@pool_app.command("show")
def pool_show(
    ctx: typer.Context,
    name: Annotated[Optional[str], typer.Argument(metavar="[NAME]", help="Only this pool.")] = None,
    json_: JsonOpt = False,
) -> None:
    """Every pool: capacity, use, draining, and where the capacity comes from.

    Example: netra-rm pool show staging_db
    """
    st = state(ctx)
    out = st.output(json_)
    with guard(out):
        from netra_rm import results

        show(out, results.pools(st.engine(), name=name))


@pool_app.command("set")
def pool_set(
    ctx: typer.Context,
    name: PoolNameArg,
    instances: Annotated[Optional[int], typer.Option("--instances", metavar="N", callback=_in(numbers.INSTANCES),
                                                     help="How many may hold it at once.")] = None,
    memory_mb: Annotated[Optional[int], typer.Option("--memory-mb", metavar="M",
                                                     callback=_in(numbers.POOL_MEMORY_MB),
                                                     help="Memory it may hand out, in MB.")] = None,
    cpu_percent: Annotated[Optional[float], typer.Option("--cpu-percent", metavar="C",
                                                         callback=_in(numbers.FLEET_CPU_PERCENT),
                                                         help="CPU it may hand out, in percent.")] = None,
    host: HostOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Change a pool's capacity in the ledger, for every host at once.

    Growing it wakes the waiters it now has room for; shrinking it keeps the allocations
    it holds and grants nothing new until it is under the new size. The ledger's figures
    then win over each host's configuration.

    Example: netra-rm pool set staging_db --instances 3
    """
    _change_pool(ctx, name, json_, host=host, instances=instances, memory_mb=memory_mb,
                 cpu_percent_value=cpu_percent)


@pool_app.command("drain")
def pool_drain(ctx: typer.Context, name: PoolNameArg, host: HostOpt = None, json_: JsonOpt = False) -> None:
    """Stop new grants from a pool (requests exit 3; waiters keep waiting); what it holds
    runs on.

    Example: netra-rm pool drain staging_db && netra-rm status
    """
    _change_pool(ctx, name, json_, host=host, drained=True)


@pool_app.command("resume")
def pool_resume(ctx: typer.Context, name: PoolNameArg, host: HostOpt = None, json_: JsonOpt = False) -> None:
    """End a drain: the pool grants again, and its waiters are woken.

    Example: netra-rm pool resume staging_db
    """
    _change_pool(ctx, name, json_, host=host, drained=False)


def _change_pool(ctx: typer.Context, name: str, json_: bool, **change: Any) -> None:
    st = state(ctx)
    out = st.output(json_)
    with guard(out):
        from netra_rm import results

        show(out, results.change_pool(st.engine(), name, **change))


# -- ledger ------------------------------------------------------------------------------

@ledger_app.command("migrate")
def ledger_migrate(
    ctx: typer.Context,
    source: Annotated[str, typer.Option("--from", metavar="PATH|URL", help="The ledger to copy from.")],
    target: Annotated[str, typer.Option("--to", metavar="PATH|URL", help="The ledger to copy into.")],
    json_: JsonOpt = False,
) -> None:
    """Copy the active allocations of one ledger into another (file, redis:// or postgresql://).

    Any backend into any other, from any schema (an older ledger is upgraded as it is
    read). The target is written in one transaction; allocations it already holds are
    left alone and expired ones are not copied; its fencing counter is raised to at
    least the source's. The source is not changed: point --ledger or NETRA_RM_LEDGER at
    the target afterwards.

    Example: netra-rm ledger migrate --from ~/.local/state/netra-rm/ledger.json --to redis://redis.ci:6379/0
    """
    st = state(ctx)
    out = st.output(json_)
    with guard(out):
        from netra_rm import results

        show(out, results.migrate(source, target, engine=st.engine()))
