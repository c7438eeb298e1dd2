"""The ``websocket`` kind: a real RFC 6455 opening handshake over a raw socket.

A port that merely accepts TCP, or an HTTP server that ignores ``Upgrade``, is not a
WebSocket service: the answer must be ``101`` with the ``Sec-WebSocket-Accept`` that
RFC 6455 section 4.2.2 derives from our key.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import time
from collections.abc import Mapping
from typing import ClassVar
from urllib.parse import urlsplit

from netra_rm.config.service import ServiceSpec
from netra_rm.errors import ServiceCheckError

from .kind import ServiceKind, Where
from .probe import Address, Probe, parse_address
from .tcp import socket_errors

#: The GUID RFC 6455 appends to the client's key before hashing.
WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_MAX_HEADER_BYTES = 16384


class WebSocket(ServiceKind):
    """A WebSocket endpoint, checked with an RFC 6455 opening handshake."""

    name = "websocket"
    schemes: ClassVar[Mapping[str, int | None]] = {"ws": 80, "wss": 443}

    def probe(self, spec: ServiceSpec) -> Probe:
        """Handshake and close; raises :class:`ServiceCheckError` on anything but a proper 101."""
        address = parse_address(spec, self.schemes)
        deadline = time.monotonic() + spec.timeout
        key = base64.b64encode(os.urandom(16)).decode("ascii")
        with socket_errors(spec, address):
            sock = socket.create_connection((address.host, address.port),
                                            timeout=spec.connect_timeout)
        try:
            with socket_errors(spec, address, doing="handshake"):
                if address.scheme == "wss":
                    import ssl  # only when needed: it costs a few ms to import

                    context = ssl.create_default_context()
                    sock.settimeout(_remaining(deadline))
                    sock = context.wrap_socket(sock, server_hostname=address.host)
                sock.sendall(_request(spec, address, key))
                status, headers = _read_response(sock, deadline)
                _verify(spec, address, key, status, headers)
                try:  # a polite close frame (masked, code 1000); the server may already be gone
                    sock.settimeout(0.2)
                    sock.sendall(_close_frame())
                except OSError:
                    pass
        finally:
            sock.close()
        return Probe(version=headers.get("server"), method="rfc6455")

    def example_url(self, where: Where) -> str:
        return f"ws://{where.host}:{where.port}/PATH"


KIND = WebSocket()


def accept_key(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` value a server must answer to ``key``."""
    digest = hashlib.sha1((key + WEBSOCKET_GUID).encode("ascii")).digest()
    return base64.b64encode(digest).decode("ascii")


def _request(spec: ServiceSpec, address: Address, key: str) -> bytes:
    parts = urlsplit(spec.url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    default_port = KIND.schemes[address.scheme]
    host = address.hostport if address.port != default_port else address.host
    lines = [
        f"GET {target} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        "User-Agent: netra-rm",
    ]
    if address.username is not None:
        userpass = f"{address.username}:{address.password or ''}".encode()
        lines.append("Authorization: Basic " + base64.b64encode(userpass).decode("ascii"))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _read_response(sock: socket.socket, deadline: float) -> tuple[int, dict[str, str]]:
    """Read the status line and headers (and nothing after them that we need)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        sock.settimeout(_remaining(deadline))
        chunk = sock.recv(4096)
        if not chunk:
            raise ServiceCheckError("the server closed the connection before answering",
                                    reason="bad_handshake")
        buf += chunk
        if len(buf) > _MAX_HEADER_BYTES:
            raise ServiceCheckError("the answer's headers are too long", reason="bad_handshake")
    head = buf.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    status_line, *header_lines = head.split("\r\n")
    fields = status_line.split(" ", 2)
    if len(fields) < 2 or not fields[0].startswith("HTTP/") or not fields[1].isdigit():
        raise ServiceCheckError(f"not an HTTP answer: {status_line[:80]!r}",
                                reason="bad_handshake")
    headers: dict[str, str] = {}
    for line in header_lines:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return int(fields[1]), headers


def _verify(spec: ServiceSpec, address: Address, key: str, status: int,
            headers: dict[str, str]) -> None:
    where = f"{spec.name} at {address.hostport}"
    if status != 101:
        raise ServiceCheckError(f"{where} answered the WebSocket handshake with HTTP {status}, "
                                f"not 101", reason="bad_status")
    if headers.get("upgrade", "").lower() != "websocket":
        raise ServiceCheckError(f"{where} answered 101 without 'Upgrade: websocket'",
                                reason="bad_handshake")
    if "upgrade" not in headers.get("connection", "").lower():
        raise ServiceCheckError(f"{where} answered 101 without 'Connection: Upgrade'",
                                reason="bad_handshake")
    if headers.get("sec-websocket-accept") != accept_key(key):
        raise ServiceCheckError(f"{where} answered 101 with a wrong Sec-WebSocket-Accept",
                                reason="bad_handshake")


def _close_frame() -> bytes:
    """A masked close frame with status 1000 (clients must mask, RFC 6455 5.3)."""
    mask = os.urandom(4)
    payload = (1000).to_bytes(2, "big")
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return b"\x88" + bytes([0x80 | len(payload)]) + mask + masked


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the check's time is up")
    return left
