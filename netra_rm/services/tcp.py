"""The ``tcp`` kind: the port accepts a connection. For services with no better check."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator, Mapping
from typing import ClassVar

from netra_rm.config.service import ServiceSpec
from netra_rm.errors import ServiceCheckError

from .kind import ServiceKind
from .probe import Address, Probe, os_error_reason, parse_address


class Tcp(ServiceKind):
    """Any server: healthy when its port accepts a connection."""

    name = "tcp"
    schemes: ClassVar[Mapping[str, int | None]] = {"tcp": None}

    def probe(self, spec: ServiceSpec) -> Probe:
        """Connect to ``tcp://host:port`` within ``spec.connect_timeout`` and hang up."""
        address = parse_address(spec, self.schemes)
        with socket_errors(spec, address), \
                socket.create_connection((address.host, address.port), timeout=spec.connect_timeout):
            pass
        return Probe(method="tcp")


KIND = Tcp()


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
