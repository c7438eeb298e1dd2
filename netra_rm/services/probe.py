"""What every kind's check shares: timing a probe, masking its failure, reading its address.

A kind (:class:`~netra_rm.services.kind.ServiceKind`) supplies a *probe*, a method that
proves the service works and returns a :class:`Probe` or raises
:class:`~netra_rm.errors.ServiceCheckError`; :func:`run_probe` turns either into a
:class:`~netra_rm.services.result.ServiceResult`. Nothing here imports a driver.
"""

from __future__ import annotations

import errno
import socket
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

from netra_rm.config.service import ServiceSpec
from netra_rm.errors import ServiceCheckError
from netra_rm.redact import mask_text, mask_url, url_secrets

from .remediation import remediation_for
from .result import ServiceResult


@dataclass(frozen=True)
class Probe:
    """What a successful probe learnt: the server's version and the way it asked."""

    version: str | None = None
    method: str | None = None


@dataclass(frozen=True)
class Address:
    """A service URL taken apart; ``password`` must never be printed."""

    scheme: str
    host: str
    port: int
    path: str
    username: str | None
    password: str | None = None
    socket_path: str | None = None  # a Unix socket instead of host and port

    @property
    def hostport(self) -> str:
        """``host:port`` with IPv6 hosts bracketed, or the socket's path, for messages."""
        if self.socket_path is not None:
            return self.socket_path
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


#: The scheme of a Unix socket URL (redis-py's ``unix:///run/redis.sock?db=0``).
UNIX_SCHEME = "unix"


def parse_address(spec: ServiceSpec, schemes: Mapping[str, int | None], *,
                  socket_file: str | None = None) -> Address:
    """Split ``spec.url``; ``schemes`` maps each accepted scheme to its default port.

    Unix sockets: a ``unix`` entry in ``schemes`` accepts ``unix:///path/to.sock``; a
    ``socket_file`` pattern (``".s.PGSQL.{port}"``) accepts libpq's form, no host and a
    socket directory in the query (``postgresql://u@/db?host=/run/postgresql``).

    Raises a terminal ``bad_url`` :class:`ServiceCheckError` for anything malformed,
    since no amount of waiting repairs a URL.
    """
    shown = mask_url(spec.url)
    try:
        parts = urlsplit(spec.url)
        scheme = parts.scheme.lower()
        if scheme not in schemes:
            accepted = ", ".join(f"{s}://" for s in schemes)
            raise ValueError(f"scheme {parts.scheme or '(none)'!r} is not one of {accepted}")
        socket_path = None
        host = parts.hostname
        port = parts.port or schemes[scheme]
        if scheme == UNIX_SCHEME:
            if not parts.path.startswith("/"):
                raise ValueError("no socket path (unix:///path/to/server.sock)")
            host, port, socket_path = "localhost", 0, parts.path
        elif not host and socket_file is not None:
            query = parse_qs(parts.query)
            directory, query_port = query.get("host", [""])[0], query.get("port", [""])[0]
            if not directory.startswith("/"):
                raise ValueError("no host")
            port = int(query_port) if query_port else port
            host, socket_path = "localhost", f"{directory.rstrip('/')}/{socket_file.format(port=port)}"
        if not host:
            raise ValueError("no host")
        if port is None:
            raise ValueError("no port")
    except ValueError as exc:
        raise ServiceCheckError(
            f"{spec.name}: malformed URL {shown!r}: {exc}", terminal=True, reason="bad_url"
        ) from None
    return Address(
        scheme=scheme,
        host=host,
        port=port,
        path="" if scheme == UNIX_SCHEME else parts.path or "",
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        socket_path=socket_path,
    )


def os_error_reason(exc: BaseException) -> tuple[str, bool, str] | None:
    """Classify the socket error behind ``exc`` (walking its causes) as (reason, terminal, text).

    Drivers wrap socket errors in their own types; the OS error underneath tells a
    refused port (transient) from an unresolvable host (terminal).
    """
    seen: set[int] = set()
    node: BaseException | None = exc
    while node is not None and id(node) not in seen:
        seen.add(id(node))
        if isinstance(node, socket.gaierror):
            transient = node.errno == socket.EAI_AGAIN
            return "dns", not transient, f"cannot resolve host ({node.strerror or node})"
        if isinstance(node, ConnectionRefusedError):
            return "refused", False, "connection refused"
        if isinstance(node, FileNotFoundError):  # a Unix socket nobody has made (yet)
            return "refused", False, "no server listening on the socket"
        if isinstance(node, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
            return "reset", False, "connection reset by the server"
        if isinstance(node, TimeoutError):
            return "timeout", False, "timed out"
        ssl = sys.modules.get("ssl")
        if ssl is not None and isinstance(node, ssl.SSLError):
            return "tls", True, f"TLS failed ({node})"
        if isinstance(node, OSError) and node.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            return "unreachable", False, f"host unreachable ({node.strerror})"
        node = node.__cause__ or node.__context__
    return None


def reason_from_text(text: str, fallback: str) -> tuple[str, bool, str]:
    """Like :func:`os_error_reason`, from a driver's message when it kept no OS error:
    (reason, terminal, text); an unrecognised message is an ``error`` with its first line."""
    lowered = text.lower()
    if "refused" in lowered:
        return "refused", False, "connection refused"
    if any(words in lowered for words in ("name or service not known", "nodename nor servname",
                                          "failed to resolve")):
        return "dns", True, "cannot resolve host"
    if "timeout" in lowered or "timed out" in lowered:
        return "timeout", False, "timed out"
    if "closed by server" in lowered or "reset" in lowered:
        return "reset", False, "connection closed by the server"
    return "error", False, text.splitlines()[0][:200] if text else fallback


def run_probe(spec: ServiceSpec, probe: Callable[[ServiceSpec], Probe]) -> ServiceResult:
    """Run ``probe`` against ``spec`` and time it; every failure becomes an unhealthy result."""
    started = time.perf_counter()
    try:
        found = probe(spec)
    except ServiceCheckError as exc:
        return failed_result(spec, exc, latency_ms=_ms_since(started))
    except Exception as exc:  # noqa: BLE001 - an untranslated driver error is still a result
        error = ServiceCheckError(f"{spec.name}: {type(exc).__name__}: {exc}", reason="error")
        return failed_result(spec, error, latency_ms=_ms_since(started))
    return ServiceResult(
        name=spec.name,
        kind=spec.kind,
        status="healthy",
        url=mask_url(spec.url),
        latency_ms=_ms_since(started),
        version=found.version,
        method=found.method,
        depends_on=tuple(spec.depends_on),
    )


def failed_result(spec: ServiceSpec, exc: ServiceCheckError, *,
                  latency_ms: float | None = None) -> ServiceResult:
    """An unhealthy result for ``exc``, its message masked and remediation attached."""
    secrets = url_secrets(spec.url)
    # our own steps never hold the password (they are built from the masked URL), so a
    # password that is also a word in them (`postgres`) must not turn `-U postgres` into `-U ***`
    steps = [mask_text(step, secrets) for step in exc.remediation] + remediation_for(spec, exc.reason)
    return ServiceResult(
        name=spec.name,
        kind=spec.kind,
        status="unhealthy",
        url=mask_url(spec.url),
        latency_ms=latency_ms,
        error=mask_text(exc.message, secrets),
        terminal=exc.terminal,
        reason=exc.reason,
        depends_on=tuple(spec.depends_on),
        remediation=tuple(mask_text(step) for step in steps),
    )


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0
