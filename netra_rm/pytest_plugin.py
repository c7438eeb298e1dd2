"""The netra-rm pytest plugin (entry point ``pytest11``, name ``netra_rm``).

``pytest --netra-layer core_integration`` checks the layer's services before the session
(failing it with the remediation steps, or waiting up to ``--netra-timeout`` seconds),
holds one allocation from the layer's pool for the session — one per worker under
pytest-xdist, all taken by the controller before any worker starts — and releases it at
the end. Under ``netra-rm run`` for the same layer it uses ``run``'s allocation instead
(for the first xdist worker) and leaves its release to ``run``. Tests see it through the
``netra_allocation`` fixture (id, slot, fencing token).
``@pytest.mark.netra_services("postgresql", "redis")`` skips a test (or fails it, with
``--netra-missing fail``) when those services are down, naming why.

pytest imports this module in every run of every project that has netra-rm installed,
so it imports nothing of netra-rm at import time: option and marker registration only.
The layer gate and the allocations run only when ``--netra-layer`` (or the ``netra_layer``
ini value) is given; service checks only for tests that carry the marker.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from netra_rm.core.engine import Engine
    from netra_rm.services.result import ServiceResult

MARKER = "netra_services"
MISSING_MODES = ("skip", "fail")
DEFAULT_CATEGORY = "pytest"
#: Long enough for a slow suite; the allocation is owned by the pytest process, so it is
#: reclaimed as soon as that process is gone, whatever is left of this.
DEFAULT_DURATION_MINUTES = 240.0
_WORKERINPUT_KEY = "netra_rm_allocation"


@dataclass(frozen=True)
class NetraAllocation:
    """The allocation this session (or this xdist worker) holds in the netra-rm ledger.

    ``slot`` is stable and unique among the layer's live allocations (use it to pick a
    database name or a port range); ``fencing_token`` grows with every grant, so a
    shared resource can refuse writes from a holder that has since been replaced.
    """

    id: str
    layer: str
    category: str
    slot: int
    fencing_token: int
    memory_mb: int
    cpu_percent: float
    expires_at: float
    worker: str
    #: the named instance it holds (the first pool that names its instances), if any
    instance: str | None = None
    #: every named instance it holds, by pool: {"staging_db": "db2"}
    instances: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NetraAllocation:
        return cls(**{name: data[name] for name in cls.__dataclass_fields__ if name in data})

    @classmethod
    def of(cls, allocation: Any, worker: str) -> NetraAllocation:
        from netra_rm.records import parse_key

        named = {parse_key(k)[1]: v for k, v in allocation.instances.items()}
        first = next((allocation.instances[k] for k in allocation.charges if k in allocation.instances), None)
        return cls(id=allocation.id, layer=allocation.layer or "", category=allocation.category,
                   slot=allocation.slot, fencing_token=allocation.fencing_token, memory_mb=allocation.memory_mb,
                   cpu_percent=allocation.cpu_percent, expires_at=allocation.expires_at, worker=worker,
                   instance=first, instances=named)


# -- options and markers (at import: nothing of netra-rm is loaded) --------------------

def _number(range_name: str) -> Callable[[str], float | int]:
    """An option type that accepts a finite number within :mod:`netra_rm.numbers`'
    ``range_name`` (NaN and infinities are refused like out-of-range values)."""

    def parse(text: str) -> float | int:
        from netra_rm import numbers

        rng: numbers.Range = getattr(numbers, range_name)
        why = numbers.problem(text, rng)
        if why is not None:
            raise argparse.ArgumentTypeError(why)
        return numbers.finite("value", text, rng)

    return parse


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("netra-rm", "netra-rm: service readiness and resource pools")
    group.addoption("--netra-layer", metavar="NAME", default=None,
                    help="check this layer's services before the session and hold one allocation from its "
                         "pool (one per xdist worker) until it ends. ini: netra_layer")
    group.addoption("--netra-timeout", metavar="S", type=_number("WAIT_SECONDS"), default=None,
                    help="wait up to S seconds for the layer's services and pool room (default 0: fail at "
                         "once). ini: netra_timeout")
    group.addoption("--netra-category", metavar="NAME", default=None,
                    help=f"the allocation's category (default {DEFAULT_CATEGORY!r}). ini: netra_category")
    group.addoption("--netra-memory-mb", metavar="N", type=_number("MEMORY_MB"), default=None,
                    help="memory per allocation in MB (default: the layer's share)")
    group.addoption("--netra-cpu-percent", metavar="N", type=_number("CPU_PERCENT"), default=None,
                    help="CPU per allocation in percent of the machine (default: the layer's share)")
    group.addoption("--netra-duration-minutes", metavar="M", type=_number("DURATION_MINUTES"), default=None,
                    help=f"hold time before the allocation expires (default {DEFAULT_DURATION_MINUTES:g}; it "
                         "is released when the session ends, or reclaimed if pytest dies)")
    group.addoption("--netra-priority", metavar="N", type=_number("PRIORITY"), default=None,
                    help="place in the wait queue for the pool: higher first (default 0)")
    group.addoption("--netra-requires", metavar="SVC", action="append", default=None,
                    help="a service the session needs besides the layer's (repeatable): it and what it depends on "
                         "must be healthy, or the session stops (waiting up to --netra-timeout)")
    group.addoption("--netra-missing", choices=MISSING_MODES, default=None,
                    help="what @pytest.mark.netra_services does when a service is down: skip (default) or "
                         "fail the test. ini: netra_missing")
    group.addoption("--netra-config", metavar="PATH", default=None,
                    help="netra-rm configuration file (default: NETRA_RM_CONFIG, else the built-in one)")
    group.addoption("--netra-ledger", metavar="PATH", default=None,
                    help="netra-rm ledger (default: NETRA_RM_LEDGER, else the user's state directory)")
    parser.addini("netra_layer", "netra-rm layer to gate the session on (like --netra-layer)", default="")
    parser.addini("netra_timeout", "seconds to wait for the layer (like --netra-timeout)", default="0")
    parser.addini("netra_category", "category of the session's allocations", default=DEFAULT_CATEGORY)
    parser.addini("netra_missing", "skip or fail tests whose netra_services are down", default="skip")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(*names, on_missing=None): skip the test (or fail it: on_missing='fail' or "
        "--netra-missing fail) when any of these netra-rm services, or one they depend on, is not healthy.")
    config.stash[_STATE] = _SessionState()


# -- session state -----------------------------------------------------------------------

class _SessionState:
    """What the plugin holds for one pytest process: its engine, allocations and check cache."""

    def __init__(self) -> None:
        self.engine: Engine | None = None
        self.layer: str | None = None
        self.held: dict[str, NetraAllocation] = {}  # by worker id ("main" without xdist)
        self.pending: list[NetraAllocation] = []  # taken for xdist workers not yet started
        self.mine: NetraAllocation | None = None  # what the netra_allocation fixture returns
        self.inherited: NetraAllocation | None = None  # from `netra-rm run`, not yet handed out
        self.borrowed: str | None = None  # its id once handed out: `run` releases it, not us
        self.service_results: dict[str, ServiceResult] = {}
        self.waited = 0.0  # seconds the layer gate already spent of --netra-timeout
        self.watches: dict[str, Any] = {}  # allocation id -> HoldingWatch, for the allocations we hold
        self.lost: str | None = None  # why an allocation we hold was lost, once it is
        self.sampler: Any = None  # samples this process tree for the session's measurement


_STATE = pytest.StashKey[_SessionState]()


def _option(config: pytest.Config, name: str) -> Any:
    """A command-line option, else its ini value (when it has one)."""
    value = config.getoption(name)
    if value is None and name in ("netra_layer", "netra_timeout", "netra_category", "netra_missing"):
        value = config.getini(name) or None
    return value


def _layer(config: pytest.Config) -> str | None:
    value = _option(config, "netra_layer")
    return str(value) if value else None


def _timeout(config: pytest.Config) -> float:
    from netra_rm import numbers

    raw = _option(config, "netra_timeout")
    why = numbers.problem(raw or 0, numbers.WAIT_SECONDS)
    if why is not None:
        raise pytest.UsageError(f"netra_timeout (--netra-timeout) {why}")
    return float(numbers.finite("netra_timeout", raw or 0, numbers.WAIT_SECONDS))


def _engine(config: pytest.Config) -> Engine:
    state = config.stash[_STATE]
    if state.engine is None:
        from netra_rm.core.engine import Engine

        state.engine = Engine.from_options(config_path=config.getoption("netra_config"),
                                           ledger=config.getoption("netra_ledger"))
    return state.engine


def _is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def _is_xdist_controller(config: pytest.Config) -> bool:
    return config.pluginmanager.has_plugin("dsession")


def _gate_skipped(config: pytest.Config) -> bool:
    """No gate for runs that execute no test: --collect-only, --fixtures."""
    option = config.option
    return bool(getattr(option, "collectonly", False) or getattr(option, "showfixtures", False)
                or getattr(option, "show_fixtures_per_test", False))


def _stop_session(config: pytest.Config, headline: str, details: list[str]) -> None:
    """End the session before any test runs: the whole story on the terminal, then exit 1."""
    writer = config.get_terminal_writer()
    writer.line()
    writer.line(headline, red=True, bold=True)
    for line in details:
        writer.line(line)
    writer.flush()
    pytest.exit(headline, returncode=pytest.ExitCode.TESTS_FAILED)


def _stop_for(config: pytest.Config, exc: BaseException, headline: str,
              extra_steps: tuple[str, ...] | list[str] = ()) -> None:
    """Stop the session for one of our errors: bad input (an unknown layer, a bad value) is
    pytest's usage error; anything else (no capacity, the ledger) ends the session."""
    from netra_rm.errors import UsageError

    steps = [*getattr(exc, "remediation", []), *extra_steps]
    if isinstance(exc, UsageError):
        raise pytest.UsageError(headline + "".join(f"\n  - {step}" for step in steps)) from None
    _stop_session(config, headline, [f"  - {step}" for step in steps])


def _netra_errors() -> tuple[type[BaseException], ...]:
    from netra_rm.errors import NetraRMError

    return (NetraRMError,)


# -- the session gate --------------------------------------------------------------------

@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """Check the layer (once, in the controller) and, without xdist, take the allocation."""
    config = session.config
    layer = _layer(config)
    state = config.stash[_STATE]
    if _is_xdist_worker(config):
        data = config.workerinput.get(_WORKERINPUT_KEY)  # type: ignore[attr-defined]
        state.mine = NetraAllocation.from_dict(data) if data else None
        return
    if layer is None or _gate_skipped(config):
        return
    state.layer = layer
    try:
        state.waited = _check_layer(config, layer)
        requires = list(dict.fromkeys(config.getoption("netra_requires") or []))
        if requires:
            from netra_rm.core.readiness import require_services

            timeout = _timeout(config)
            state.waited += require_services(_engine(config), requires, wait=timeout > 0,
                                             timeout=max(0.0, timeout - state.waited))
        state.inherited = _inherited(config, layer)
        if not _is_xdist_controller(config):
            state.mine = _allocate(config, ["main"])[0]
    except _netra_errors() as exc:
        _stop_for(config, exc, f"netra-rm: {exc}")


def _check_layer(config: pytest.Config, layer: str) -> float:
    """Fail the session unless the layer's services are healthy (waiting up to the
    timeout); return the seconds spent waiting. Pool room is the allocation's business."""
    from netra_rm.core.readiness import check_layer, missing_details

    engine = _engine(config)
    timeout = _timeout(config)
    verdict = check_layer(engine, layer, timeout=0)
    if verdict.missing and not verdict.terminal and timeout > 0:
        writer = config.get_terminal_writer()
        writer.line(f"netra-rm: layer {layer} is not ready (missing: {', '.join(verdict.missing)}); "
                    f"waiting up to {timeout:g}s")
        writer.flush()
        verdict = check_layer(engine, layer, timeout=timeout)
    if verdict.missing:
        details = []
        for row in missing_details(verdict):
            why = row.get("error") or row.get("status")
            details.append(f"missing: {why}")
            details += [f"  - {step}" for step in row.get("remediation") or []]
        waited = f" after waiting {verdict.waited_seconds:.0f}s" if timeout > 0 else ""
        _stop_session(config, f"netra-rm: layer {layer} is not ready{waited}: "
                              f"{', '.join(verdict.missing)} unavailable; no test was run.", details)
    return verdict.waited_seconds


def _inherited(config: pytest.Config, layer: str) -> NetraAllocation | None:
    """The allocation ``netra-rm run`` holds for this very process tree, when it is in
    ``layer`` and the ledger still has it: the session uses it instead of taking another."""
    from netra_rm.config import env as envmod

    given = envmod.run_allocation()
    if given is None or given[1] != layer:
        return None
    from netra_rm.ledger import Scope

    found = _engine(config).ledger.read(Scope(ids=(given[0],))).known.get(given[0])
    return NetraAllocation.of(found, "main") if found is not None else None


def _allocate(config: pytest.Config, workers: list[str]) -> list[NetraAllocation]:
    """One allocation per worker, all or none: on failure the ones taken are released.

    The first worker gets the allocation of the ``netra-rm run`` this session runs
    under, when there is one for the layer (see :func:`_inherited`).
    """
    from netra_rm.core.waiting import allocate_waiting

    engine = _engine(config)
    state = config.stash[_STATE]
    if state.inherited is not None and workers:
        held = NetraAllocation(**{**state.inherited.to_dict(), "worker": workers[0]})
        state.inherited, state.borrowed = None, held.id
        state.held[held.worker] = held
        try:
            return [held, *_allocate(config, workers[1:])]
        except BaseException:
            state.held.pop(held.worker, None)
            state.inherited, state.borrowed = held, None
            raise
    layer = state.layer
    assert layer is not None
    category = str(_option(config, "netra_category") or DEFAULT_CATEGORY)
    duration = config.getoption("netra_duration_minutes") or DEFAULT_DURATION_MINUTES
    request = engine.resolve_request(layer, category, memory_mb=config.getoption("netra_memory_mb"),
                                     cpu_percent=config.getoption("netra_cpu_percent"),
                                     requires=config.getoption("netra_requires") or (),
                                     duration_minutes=duration, priority=config.getoption("netra_priority") or 0)
    owner = engine.current_process_owner()
    timeout = _timeout(config)
    wait = timeout > 0
    deadline = time.monotonic() + max(0.0, timeout - state.waited)  # one --netra-timeout for everything
    taken: list[NetraAllocation] = []
    try:
        for worker in workers:
            left = max(0.0, deadline - time.monotonic())
            allocation = allocate_waiting(engine, request, owner, wait=wait, timeout=left)
            held = NetraAllocation.of(allocation, worker)
            state.held[worker] = held
            taken.append(held)
            _watch(config, allocation)
    except BaseException:
        _release(config, [a.worker for a in taken])
        raise
    return taken


def _watch(config: pytest.Config, allocation: Any) -> None:
    """Renew ``allocation`` and notice its loss while the session runs: the session then
    fails with the cause (see :mod:`netra_rm.core.holding`)."""
    from netra_rm.core.holding import HoldingWatch
    from netra_rm.core.lease import heartbeat_interval

    state = config.stash[_STATE]
    engine = _engine(config)

    def lost() -> None:
        if state.lost is None:
            state.lost = watch.sentence
            engine.record_lost(allocation, watch.cause or "unknown", action="fail")

    watch = HoldingWatch(engine, allocation, hold_seconds=None,
                         renew_interval=heartbeat_interval(engine.config.lease_seconds), on_lost=lost,
                         holder="the pytest session")
    state.watches[allocation.id] = watch
    watch.start()
    if state.sampler is None and engine.config.machine.measure and not _is_xdist_controller(config):
        from netra_rm.machine.measure import SessionSampler

        state.sampler = SessionSampler(os.getpid())
        state.sampler.start()


def _release(config: pytest.Config, workers: list[str]) -> None:
    state = config.stash[_STATE]
    ids = [state.held.pop(worker).id for worker in workers if worker in state.held]
    for ident in ids:
        watch = state.watches.pop(ident, None)
        if watch is not None:
            watch.stop()
    ids = [ident for ident in ids if ident != state.borrowed]  # `netra-rm run` releases its own
    if ids and state.engine is not None:
        measured = None
        if state.sampler is not None and not state.watches:  # the last one: the session is over
            measured = state.sampler.stop().to_event()
            state.sampler = None
        state.engine.release(ids, measured=measured)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    """Stop the session after the test during which an allocation we hold was lost."""
    yield
    state = item.config.stash.get(_STATE, None)
    if state is not None and state.lost is not None and not item.session.shouldfail:
        item.session.shouldfail = f"netra-rm: {state.lost}"


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A lost allocation fails the session, whatever the tests said, naming the cause."""
    state = session.config.stash.get(_STATE, None)
    if state is None or state.lost is None:
        return
    writer = session.config.get_terminal_writer()
    writer.line()
    writer.line(f"netra-rm: {state.lost} The session fails.", red=True, bold=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


# -- xdist: the controller allocates for its workers -------------------------------------

@pytest.hookimpl(optionalhook=True)
def pytest_xdist_setupnodes(config: pytest.Config, specs: list[Any]) -> None:
    """Before any worker starts: one allocation per worker, or stop the session."""
    state = config.stash[_STATE]
    if state.layer is None:
        return
    try:
        state.pending = _allocate(config, [f"pending-{i}" for i in range(len(specs))])
    except _netra_errors() as exc:
        _stop_for(config, exc, f"netra-rm: cannot hold {len(specs)} allocations (one per xdist worker) in "
                               f"layer {state.layer}: {exc}",
                  ["Or run fewer xdist workers (-n) than the layer has room for."])


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """Hand a worker its allocation (a restarted worker gets a fresh one)."""
    config = node.config
    state = config.stash[_STATE]
    if state.layer is None:
        return
    worker = str(node.gateway.id)
    if worker in state.held:  # a restarted worker: its predecessor's allocation was released
        _release(config, [worker])
    if state.pending:
        pending = state.pending.pop(0)
        state.held.pop(pending.worker, None)
        allocation = NetraAllocation(**{**pending.to_dict(), "worker": worker})
    else:
        allocation = _allocate(config, [worker])[0]
    state.held[worker] = allocation
    node.workerinput[_WORKERINPUT_KEY] = allocation.to_dict()


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """A worker is gone: its allocation goes back to the pool now."""
    config = node.config
    if config.stash[_STATE].layer is not None:
        _release(config, [str(node.gateway.id)])


def pytest_unconfigure(config: pytest.Config) -> None:
    """Release whatever this process still holds (the session ended, or stopped early)."""
    state = config.stash.get(_STATE, None)
    if state is None:
        return
    remaining = list(state.held) + [p.worker for p in state.pending]
    state.pending = []
    if remaining:
        _release(config, remaining)


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    state = config.stash.get(_STATE, None)
    if state is None or state.layer is None:
        return None
    if state.mine is not None:
        a = state.mine
        whose = " of netra-rm run" if a.id == state.borrowed else ""
        return [f"netra-rm: layer {a.layer} ready; holding allocation {a.id}{whose} (slot {a.slot}, fencing token "
                f"{a.fencing_token})"]
    return [f"netra-rm: layer {state.layer} ready; one allocation per xdist worker"]


# -- the fixture -------------------------------------------------------------------------

@pytest.fixture(scope="session")
def netra_allocation(pytestconfig: pytest.Config) -> NetraAllocation:
    """The allocation this session (or xdist worker) holds: ``id``, ``layer``, ``slot``,
    ``fencing_token``, ``memory_mb``, ``cpu_percent``, ``expires_at``, ``worker``."""
    mine = pytestconfig.stash[_STATE].mine
    if mine is None:
        pytest.fail("netra_allocation needs a layer: run pytest with --netra-layer NAME (or set netra_layer "
                    "in the pytest configuration).", pytrace=False)
    return mine


# -- the marker --------------------------------------------------------------------------

@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before the test's fixtures run (they may need the very service that is down): skip
    it, or fail its setup, when a service its netra_services marker names is not healthy."""
    markers = list(item.iter_markers(MARKER))
    if not markers:
        return
    names = list(dict.fromkeys(str(name) for m in markers for name in m.args))
    mode = next((m.kwargs["on_missing"] for m in markers if m.kwargs.get("on_missing")), None)
    mode = mode or _option(item.config, "netra_missing") or "skip"
    if mode not in MISSING_MODES:
        pytest.fail(f"{MARKER}: on_missing must be one of {', '.join(MISSING_MODES)}, got {mode!r}",
                    pytrace=False)
    if not names:
        return
    try:
        results = _service_results(item.config, names)
    except _netra_errors() as exc:
        pytest.fail(f"{MARKER}: {exc}", pytrace=False)
    down = [results[name] for name in names if name in results and not results[name].healthy]
    if not down:
        return
    reason = "; ".join(_why(r) for r in down)
    if mode == "fail":
        steps = [step for r in down for step in r.remediation]
        pytest.fail("netra-rm: " + reason + "".join(f"\n  - {s}" for s in steps), pytrace=False)
    # reported at the test's own location, as a skip marker's skip is
    raise pytest.skip.Exception("netra-rm: " + reason, _use_item_location=True)


def _why(result: ServiceResult) -> str:
    if result.status == "blocked":
        return f"service {result.name} is blocked by {', '.join(result.blocked_by)}"
    detail = result.error or result.reason
    return f"service {result.name} is {result.status} ({detail})"


def _marker_services(config: pytest.Config) -> tuple[Any, dict[str, Any]]:
    """The configuration, and its services as ``layer`` and the session check see them
    (Compose discovery applied when the configuration turns it on)."""
    state = config.stash[_STATE]
    if state.engine is not None:
        from netra_rm.core.readiness import effective_services

        specs, _ = effective_services(state.engine)
        return state.engine.config, specs
    from netra_rm.config import load_config
    from netra_rm.services.addresses import announce, resolve_addresses

    cfg = load_config(config.getoption("netra_config"))
    found = resolve_addresses(cfg)
    announce(found.discovery)
    return cfg, found.specs


def _service_results(config: pytest.Config, names: list[str]) -> dict[str, ServiceResult]:
    """Health of ``names`` (and what they depend on), checked once per session and worker."""
    state = config.stash[_STATE]
    todo = [name for name in names if name not in state.service_results]
    if todo:
        from netra_rm.services.rounds import check_services

        cfg, specs = _marker_services(config)
        for name in todo:
            cfg.service(name)  # an unknown name is the test's mistake: say which names exist
        state.service_results.update(check_services(specs, todo, deadline=cfg.checks.deadline))
    return {name: state.service_results[name] for name in names}
