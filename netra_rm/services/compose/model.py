"""The values Compose discovery passes around: published ports, compose services, the
resolved project, and the one error for a project that cannot be read."""

from __future__ import annotations

from dataclasses import dataclass, field

from ...errors import ComposeError

__all__ = ["ComposeError", "ComposeProject", "ComposeService", "PublishedPort", "merge_ports"]


@dataclass(frozen=True)
class PublishedPort:
    """One ``ports`` entry: container ``target`` published on host ``published``
    (None when the host port is chosen at start-up and only the engine knows it)."""

    target: int
    published: int | None
    host_ip: str | None = None
    protocol: str = "tcp"


@dataclass(frozen=True)
class ComposeService:
    """A compose service as far as discovery cares: its image and published ports."""

    name: str
    image: str | None = None
    ports: tuple[PublishedPort, ...] = ()


@dataclass(frozen=True)
class ComposeProject:
    """A compose project resolved to its running services (inactive profiles left out).

    ``via`` is ``"compose"`` (`docker compose config` resolved it) or ``"file"`` (netra-rm
    read the files itself). ``warnings`` are what a person should fix or know
    (an ``include`` the reader could not follow); ``notes`` only say what was done.
    """

    services: dict[str, ComposeService] = field(default_factory=dict, hash=False)
    file: str | None = None
    via: str = "compose"
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


def merge_ports(before: tuple[PublishedPort, ...], after: tuple[PublishedPort, ...]) -> tuple[PublishedPort, ...]:
    """``after`` appended to ``before``, without repeats (how Compose merges ``ports``)."""
    return before + tuple(port for port in dict.fromkeys(after) if port not in before)
