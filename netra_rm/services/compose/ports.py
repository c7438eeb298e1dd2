"""The ``ports`` of a compose service, in every form of the compose specification.

Short (``"5433:5432"``, ``"127.0.0.1:8001:8001"``, ``"[::1]:6001:6001"``,
``"9090-9091:8080-8081/tcp"``) and long (``{target: 80, published: "8080", host_ip: ...}``,
the form `docker compose config --format json` prints), ranges expanded.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .model import ComposeError, PublishedPort


def parse_ports(value: Any, *, where: str = "") -> list[PublishedPort]:
    """A service's ``ports`` list; ``where`` prefixes error messages (``compose.yaml: services.db.``)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ComposeError(f"{where}ports must be a list, got {type(value).__name__}.")
    ports: list[PublishedPort] = []
    for i, entry in enumerate(value):
        if isinstance(entry, dict):
            ports.extend(_long_port(entry, where=f"{where}ports[{i}]: "))
        elif isinstance(entry, (str, int)) and not isinstance(entry, bool):
            ports.extend(_short_port(str(entry), where=f"{where}ports[{i}]: "))
        else:
            raise ComposeError(f"{where}ports[{i}]: cannot read {entry!r}.")
    return ports


def _short_port(text: str, *, where: str) -> list[PublishedPort]:
    spec = text.strip()
    protocol = "tcp"
    if "/" in spec:
        spec, protocol = spec.rsplit("/", 1)
    host_ip: str | None = None
    if spec.startswith("["):  # [::1]:6001:6001
        end = spec.find("]")
        if end < 0 or spec[end + 1:end + 2] != ":":
            raise ComposeError(f"{where}cannot read port {text!r}.")
        host_ip, spec = spec[1:end], spec[end + 2:]
        parts = spec.split(":")
        if len(parts) == 1:
            parts = ["", parts[0]]
        if len(parts) > 2:
            raise ComposeError(f"{where}cannot read port {text!r}.")
        published, target = parts[-2], parts[-1]
    else:
        parts = spec.rsplit(":", 2)
        if len(parts) == 3:
            host_ip, published, target = parts
        elif len(parts) == 2:
            published, target = parts
        else:
            published, target = "", parts[0]
    return _pair(published, target, host_ip or None, protocol.lower(), text=text, where=where)


def _long_port(entry: Mapping[str, Any], *, where: str) -> list[PublishedPort]:
    target = entry.get("target")
    if target is None:
        raise ComposeError(f"{where}a port in the long form needs `target`.")
    published = entry.get("published")
    return _pair("" if published is None else str(published), str(target), entry.get("host_ip") or None,
                 str(entry.get("protocol") or "tcp").lower(), text=str(dict(entry)), where=where)


def _pair(published: str, target: str, host_ip: str | None, protocol: str, *, text: str,
          where: str) -> list[PublishedPort]:
    targets = _port_range(target, text=text, where=where)
    if not published.strip():
        return [PublishedPort(t, None, host_ip, protocol) for t in targets]
    hosts = _port_range(published, text=text, where=where)
    if len(hosts) == len(targets):
        return [PublishedPort(t, h, host_ip, protocol) for t, h in zip(targets, hosts)]
    if len(targets) == 1:  # "8000-9000:80": one host port out of a range, chosen at start
        return [PublishedPort(targets[0], None, host_ip, protocol)]
    raise ComposeError(f"{where}port {text!r}: the host range and the container range differ in length.")


def _port_range(value: str, *, text: str, where: str) -> list[int]:
    value = value.strip()
    first, dash, last = value.partition("-")
    try:
        low = int(first)
        high = int(last) if dash else low
    except ValueError:
        raise ComposeError(f"{where}cannot read port {text!r}: {value!r} is not a port number or range.") from None
    if not (0 < low <= high <= 65535):
        raise ComposeError(f"{where}port {text!r}: {value!r} is out of range.")
    return list(range(low, high + 1))
