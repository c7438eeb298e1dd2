"""Check many services at once, each bounded, then judge them through the dependency graph:
:func:`check_services` is one round, :class:`ServiceRounds` the same services round after
round (the monitor, ``layer --timeout``).

Each check runs in a daemon thread (not a pool): a check stuck on a silent server is
abandoned at its timeout and can never hold up the interpreter's exit. Seven services
with one silent cost about one timeout, not seven.
"""

from __future__ import annotations

import errno
import ipaddress
import select
import socket
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

from netra_rm.config import graph
from netra_rm.config.service import ServiceSpec
from netra_rm.errors import ServiceCheckError, UnknownNameError
from netra_rm.redact import mask_url

from .kind import find_kind
from .probe import failed_result, parse_address, run_probe
from .remediation import blocked_steps, remediation_for
from .result import ServiceResult

DEFAULT_DEADLINE = 5.0


class _Slot:
    """One running check: its thread fills ``result`` unless the runner gave up first."""

    def __init__(self, spec: ServiceSpec, limit: float) -> None:
        self.spec = spec
        self.limit = limit  # monotonic time by which the check must be done
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.result: ServiceResult | None = None
        self.abandoned = False

    def run(self) -> None:
        try:
            result = check_one(self.spec)
        except Exception as exc:  # noqa: BLE001 - a checker bug is still a result, not a hang
            error = ServiceCheckError(f"{self.spec.name}: {type(exc).__name__}: {exc}",
                                      reason="error")
            result = failed_result(self.spec, error)
        with self.lock:
            if not self.abandoned:
                self.result = result
        self.done.set()

    def outcome(self, started: float, deadline_at: float) -> ServiceResult:
        with self.lock:
            if self.result is not None:
                return self.result
            self.abandoned = True
        spec = self.spec
        if spec.timeout > deadline_at - started:
            message = (f"{spec.name}: still checking at the deadline of "
                       f"{deadline_at - started:g} s")
        else:
            message = f"{spec.name}: no answer within {spec.timeout:g} s"
        return failed_result(spec, ServiceCheckError(message, reason="timeout"),
                             latency_ms=(time.monotonic() - started) * 1000.0)


def _import_kinds(kinds: Iterable[str]) -> None:
    """Import the kinds' modules and their drivers one after another, before the clock.

    Imports hold the GIL: done in the check threads they slow each other down and eat
    into the checks' timeouts, which should measure the services, not our start-up.
    A kind whose driver is missing fails later, in its thread, as an unhealthy result.
    """
    for name in sorted(set(kinds)):
        try:
            kind = find_kind(name)
            if kind is not None:
                kind.load_drivers()
        except ImportError:
            pass


def check_one(spec: ServiceSpec) -> ServiceResult:
    """Check one service with its kind's probe (its driver imported now, not before)."""
    kind = None
    try:
        kind = find_kind(spec.kind)
        if kind is not None:
            kind.load_drivers()
    except ImportError as exc:
        missing = exc.name or str(exc)
        pip_name = kind.drivers.get(missing, missing) if kind is not None else missing
        error = ServiceCheckError(
            f"{spec.name}: cannot check a {spec.kind} service: {missing} is not installed",
            terminal=True, reason="driver_missing",
            remediation=[(f"Install netra-rm with its dependencies (`pip install netra-rm`), "
                          f"or `pip install {pip_name}`.")])
        return failed_result(spec, error)
    if kind is None:
        steps = remediation_for(spec, "unknown_kind")
        return ServiceResult(name=spec.name, kind=spec.kind, status="unknown",
                             url=mask_url(spec.url), reason="unknown_kind",
                             error=f"{spec.name}: no checker for kind {spec.kind!r}",
                             depends_on=tuple(spec.depends_on), remediation=tuple(steps))
    return run_probe(spec, kind.probe)


def check_services(specs: Mapping[str, ServiceSpec], names: Iterable[str] | None = None, *,
                   deadline: float = DEFAULT_DEADLINE) -> dict[str, ServiceResult]:
    """Check ``names`` (all when None) and their transitive dependencies, concurrently.

    Each check is cut at its spec's ``timeout`` and all of them at ``deadline`` seconds;
    a check cut short is unhealthy with reason ``"timeout"``. A service with an unhealthy
    dependency (however deep) is ``"blocked"`` and names the root causes in
    ``blocked_by``. The results come in startup order.

    Raises :class:`~netra_rm.errors.UnknownNameError` for a name not in ``specs``.
    """
    return ServiceRounds(deadline=deadline).check(specs, names)


class ServiceRounds:
    """The same services checked round after round, as the monitor checks them.

    Each :meth:`check` is a :func:`check_services`, with one economy: a service on this
    machine (``localhost`` or an IP address) whose own check found its port closed last
    round (``refused``) is first knocked on with a bare TCP connect, all of them at once,
    and keeps that result while its port still refuses. A stack that is down then costs a
    socket per service and round instead of a thread and a driver's connect; the round
    after a port opens checks the service properly. Not thread-safe: one caller.
    """

    def __init__(self, *, deadline: float = DEFAULT_DEADLINE) -> None:
        self.deadline = deadline
        self._refused: dict[str, ServiceResult] = {}  # own results of the last round

    def check(self, specs: Mapping[str, ServiceSpec],
              names: Iterable[str] | None = None) -> dict[str, ServiceResult]:
        """One round; see :func:`check_services`."""
        deps = {name: tuple(spec.depends_on) for name, spec in specs.items()}
        if names is None:
            wanted = [name for level in graph.startup_levels(deps) for name in level]
        else:
            requested = list(names)
            unknown = [name for name in requested if name not in specs]
            if unknown:
                known = ", ".join(sorted(specs)) or "none"
                raise UnknownNameError(f"unknown service {unknown[0]!r} (known: {known})")
            wanted = graph.transitive_dependencies(deps, requested)
        wanted = [name for name in wanted if name in specs]

        _import_kinds({specs[name].kind for name in wanted})
        started = time.monotonic()
        deadline_at = started + max(0.0, self.deadline)
        slots: dict[str, _Slot] = {}

        def start(name: str) -> None:
            spec = specs[name]
            slot = _Slot(spec, min(started + max(0.0, spec.timeout), deadline_at))
            slots[name] = slot
            threading.Thread(target=slot.run, name=f"netra-rm-check-{name}", daemon=True).start()

        knockable = self._knockable(specs, wanted)
        for name in wanted:
            if name not in knockable:
                start(name)
        checked = self._still_refused(knockable)
        for name in knockable:
            if name not in checked:
                start(name)

        for name, slot in slots.items():
            slot.done.wait(max(0.0, slot.limit - time.monotonic()))
            checked[name] = slot.outcome(started, deadline_at)
        checked = {name: checked[name] for name in wanted}  # startup order
        self._refused = {name: result for name, result in checked.items() if result.reason == "refused"}
        return apply_dependencies(checked, {name: deps[name] for name in wanted})

    def _knockable(self, specs: Mapping[str, ServiceSpec], wanted: Sequence[str]) -> dict[str, tuple[str, int]]:
        """The services on this machine whose port refused last round, at the same address."""
        targets: dict[str, tuple[str, int]] = {}
        for name in wanted:
            last = self._refused.get(name)
            if last is not None and last.url == mask_url(specs[name].url):  # not moved since
                address = _local_address(specs[name])
                if address is not None:
                    targets[name] = address
        return targets

    def _still_refused(self, targets: Mapping[str, tuple[str, int]]) -> dict[str, ServiceResult]:
        """Last round's results of ``targets`` whose port still refuses, timed anew."""
        if not targets:
            return {}
        started = time.perf_counter()
        refused = knock(targets, timeout=min(_KNOCK_TIMEOUT, self.deadline))
        latency_ms = (time.perf_counter() - started) * 1000.0
        return {name: replace(self._refused[name], latency_ms=latency_ms) for name in refused}


_KNOCK_TIMEOUT = 0.25  # seconds a knock on this machine waits for its answer


def _local_address(spec: ServiceSpec) -> tuple[str, int] | None:
    """``(host, port)`` of a service on this machine (``localhost`` or an IP address),
    where a knock needs no DNS and a closed port answers at once; None otherwise (a Unix
    socket, too: a TCP knock cannot tell whether a server listens on it)."""
    try:
        kind = find_kind(spec.kind)
        if kind is None:
            return None
        address = parse_address(spec, kind.schemes)
    except (ImportError, ServiceCheckError):
        return None
    if address.socket_path is not None:
        return None
    if address.host.lower() != "localhost":
        try:
            ipaddress.ip_address(address.host)
        except ValueError:
            return None
    return address.host, address.port


def knock(targets: Mapping[str, tuple[str, int]], *, timeout: float) -> set[str]:
    """The names in ``targets`` whose every address refuses a TCP connection.

    All connects start at once, non-blocking, and are awaited together for at most
    ``timeout`` seconds; an address that accepts, or has not answered by then, means
    "not refused". Hosts should be ``localhost`` or IP addresses (no DNS is awaited).
    """
    if not hasattr(select, "poll"):
        return set()
    refused = dict.fromkeys(targets, True)
    pending: dict[int, tuple[str, socket.socket]] = {}
    sockets: list[socket.socket] = []
    try:
        for name, (host, port) in targets.items():
            flags = 0 if host.lower() == "localhost" else socket.AI_NUMERICHOST
            try:
                addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=flags)
            except OSError:
                refused[name] = False
                continue
            for family, kind, proto, _, sockaddr in addresses:
                try:
                    sock = socket.socket(family, kind, proto)
                except OSError:  # no IPv6 here, out of descriptors: check it properly instead
                    refused[name] = False
                    continue
                sockets.append(sock)
                sock.setblocking(False)
                error = sock.connect_ex(sockaddr)
                if error == errno.EINPROGRESS:
                    pending[sock.fileno()] = (name, sock)
                elif error != errno.ECONNREFUSED:
                    refused[name] = False
        poller = select.poll()
        for fd in pending:
            poller.register(fd, select.POLLOUT)
        give_up = time.monotonic() + timeout
        while pending and (left := give_up - time.monotonic()) > 0:
            for fd, _ in poller.poll(left * 1000.0):
                name, sock = pending.pop(fd)
                poller.unregister(fd)
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != errno.ECONNREFUSED:
                    refused[name] = False
        for name, _ in pending.values():
            refused[name] = False
    finally:
        for sock in sockets:
            sock.close()
    return {name for name, still in refused.items() if still}


def apply_dependencies(results: Mapping[str, ServiceResult],
                       deps: Mapping[str, Sequence[str]]) -> dict[str, ServiceResult]:
    """Mark every service with an unhealthy dependency as blocked by the root causes.

    A service's own check result (latency, version, error) is kept beside the verdict.
    """
    down = [name for name, result in results.items() if result.status != "healthy"]
    blockers = graph.blocked_by(deps, down)
    judged: dict[str, ServiceResult] = {}
    for name, result in results.items():
        roots = [root for root in blockers.get(name, ()) if root in results]
        if not roots:
            judged[name] = result
            continue
        causes = "; ".join(f"{root}: {results[root].reason}" for root in roots)
        error = f"{name}: blocked by {', '.join(roots)} ({causes})"
        if result.status != "healthy" and result.error:
            error += f"; its own check also failed: {result.error}"
        judged[name] = replace(
            result,
            status="blocked",
            reason="blocked",
            error=error,
            terminal=any(results[root].terminal for root in roots),
            blocked_by=tuple(roots),
            remediation=tuple(blocked_steps(name, roots)),
        )
    return judged
