"""The ``tcp`` checker: the port accepts a connection. For services with no better check."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

from ..errors import ServiceCheckError
from ._check import Address, Probe, os_error_reason, parse_address, run_probe
from .result import ServiceResult
from .spec import ServiceSpec

SCHEMES: dict[str, int | None] = {"tcp": None}


def check(spec: ServiceSpec) -> ServiceResult:
    """Connect to ``tcp://host:port`` within ``spec.connect_timeout`` and hang up."""
    return run_probe(spec, probe)


def probe(spec: ServiceSpec) -> Probe:
    """Connect and close; raises :class:`ServiceCheckError` when the port refuses."""
    address = parse_address(spec, SCHEMES)
    with socket_errors(spec, address), \
            socket.create_connection((address.host, address.port), timeout=spec.connect_timeout):
        pass
    return Probe(method="tcp")


@contextlib.contextmanager
def socket_errors(spec: ServiceSpec, address: Address, *, doing: str = "connect") -> Iterator[None]:
    """Translate socket errors into :class:`ServiceCheckError` naming the service."""
    try:
        yield
    except OSError as exc:
        found = os_error_reason(exc)
        reason, terminal, text = found if found else ("error", False, str(exc))
        if reason == "timeout" and doing == "connect":
            text = f"no connection within {spec.connect_timeout:g} s"
        elif reason == "timeout":
            text = f"no answer within {spec.timeout:g} s"
        raise ServiceCheckError(f"{spec.name} at {address.hostport}: {text}",
                                terminal=terminal, reason=reason) from None
