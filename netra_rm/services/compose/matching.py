"""Which compose service is which netra-rm service, and which of its ports serves it.

A netra-rm service is the compose service named for it under
``discovery.compose.services``; else, among the compose services whose image is that
kind of server (sidecars such as ``redis-commander``, ``redis_exporter``,
``postgres-exporter`` or ``pgadmin4`` are not), the only one, or the only one that
publishes the kind's container port, or the only one whose name says so; else the compose
service of the same name. Several equally good candidates are a warning naming them and
the key that pins one: never a silent guess.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from netra_rm.config.service import ServiceSpec

from ..kind import kind_or_default
from .model import ComposeService, PublishedPort

# Which images run a kind of server (matched on the image's base name) and the port it
# listens on inside its container are the kind's: ServiceKind.images and .container_port.

# words in an image's base name that make it a tool beside the server, not the server
_SIDECAR_WORDS = re.compile(r"admin|ui|exporter|commander|insight|dashboard|web|backup|keeper|sentinel")
_WILDCARD_HOSTS = {"", "0.0.0.0", "::", "[::]"}


@dataclass(frozen=True)
class Matches:
    """The compose service of each matched netra-rm service, and the warnings."""

    services: dict[str, str]
    warnings: tuple[str, ...] = ()


def image_base(image: str) -> str:
    """``docker.io/library/postgres:16-alpine`` -> ``postgres``."""
    base = image.rsplit("/", 1)[-1]
    return base.split("@", 1)[0].split(":", 1)[0].lower()


def is_sidecar(image: str) -> bool:
    """An admin, UI, exporter or commander image (``rediscommander/redis-commander``,
    ``oliver006/redis_exporter``, ``dpage/pgadmin4``), which is not the server itself."""
    words = re.split(r"[-_.]", image_base(image))
    return any(_SIDECAR_WORDS.fullmatch(word) or word.startswith(("pgadmin", "redisinsight")) for word in words)


def serves_kind(image: str | None, kind: str) -> bool:
    """``image`` runs a server of ``kind`` (and is not a sidecar of one)."""
    hints = kind_or_default(kind).images
    return bool(image and hints and image_base(image).startswith(hints) and not is_sidecar(image))


def match_services(specs: Mapping[str, ServiceSpec], compose: Mapping[str, ComposeService],
                   explicit: Mapping[str, str]) -> Matches:
    """Which compose service each of ``specs`` is (see the module's docstring)."""
    matched: dict[str, str] = {}
    warnings: list[str] = []
    for name, spec in specs.items():
        if name in explicit:
            if explicit[name] in compose:
                matched[name] = explicit[name]
            else:
                known = ", ".join(sorted(compose)) or "none"
                warnings.append(f"{name}: discovery.compose.services.{name} names {explicit[name]!r}, which the "
                                f"compose project does not run (its services: {known}); keeping {name}'s "
                                f"configured address")
            continue
        candidates = [c.name for c in compose.values() if serves_kind(c.image, spec.kind)]
        if not candidates:
            if name in compose and not (compose[name].image and is_sidecar(compose[name].image or "")):
                matched[name] = name
            continue
        chosen = _narrow(spec, candidates, compose)
        if len(chosen) == 1:
            matched[name] = chosen[0]
            continue
        listed = ", ".join(chosen)
        warnings.append(f"{name}: the compose services {listed} could each be {name}; pin one with "
                        f"discovery.compose.services.{name} in the configuration (e.g. `discovery: {{compose: "
                        f"{{services: {{{name}: {chosen[0]}}}}}}}`); keeping {name}'s configured address")
    return Matches(matched, tuple(warnings))


def _narrow(spec: ServiceSpec, candidates: list[str], compose: Mapping[str, ComposeService]) -> list[str]:
    """The candidates left after the container port, then the name, each where it decides."""
    if len(candidates) == 1:
        return candidates
    wanted = _wanted_targets(spec)
    publishing = [c for c in candidates if any(p.target in wanted for p in compose[c].ports)]
    if len(publishing) == 1:
        return publishing
    pool = publishing or candidates
    if spec.name in pool:
        return [spec.name]
    words = {spec.name.lower(), spec.kind.lower(), *kind_or_default(spec.kind).images}
    named = [c for c in pool if any(word in c.lower() for word in words)]
    return named if len(named) == 1 else pool


def _wanted_targets(spec: ServiceSpec) -> list[int]:
    wanted: list[int] = []
    container_port = kind_or_default(spec.kind).container_port
    if container_port is not None:
        wanted.append(container_port)
    try:
        configured = urlsplit(spec.url).port
    except ValueError:
        configured = None
    if configured:
        wanted.append(configured)
    return wanted


def pick_port(spec: ServiceSpec, service: ComposeService) -> PublishedPort | None:
    """The published port that serves ``spec``: the kind's container port, else the
    configured URL's port, else the only TCP port published."""
    tcp = [p for p in service.ports if p.protocol == "tcp"]
    for target in _wanted_targets(spec):
        for port in tcp:
            if port.target == target:
                return port
    targets = {p.target for p in tcp}
    if len(targets) == 1:
        return tcp[0]
    return None


def rewrite_url(url: str, port: int, host_ip: str | None) -> str:
    """``url`` pointing at ``port`` (and at ``host_ip`` when it is a specific address)."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    if host_ip and host_ip not in _WILDCARD_HOSTS:
        host = host_ip.strip("[]")
    if ":" in host:
        host = f"[{host}]"
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@{host}:{port}" if userinfo else f"{host}:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
