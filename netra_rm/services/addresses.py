"""The addresses the checks use: the configured ones, with Compose discovery applied when
it is turned on (``discovery.compose`` in the configuration, or ``up --discover compose``).

The one path by which ``layer``, ``status``, ``up``, the monitor, the pytest plugin (its
session check and its ``netra_services`` marker) and the Python API learn the services'
addresses. Discovery never turns a verdict into bad input: a compose project that cannot
be read is a warning, and the configured addresses stand. ``config validate`` is the one
place where it is an error (:func:`validate_discovery`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from netra_rm.config.service import ServiceSpec

if TYPE_CHECKING:
    from ..config.model import Config
    from .compose import Discovery

#: How each discovery note and warning reaches stderr (once per process).
LOGGER = logging.getLogger("netra_rm.discovery")


@dataclass(frozen=True)
class Addresses:
    """The services as the checks should see them, and the discovery behind them (None
    when discovery is off)."""

    specs: dict[str, ServiceSpec] = field(default_factory=dict, hash=False)
    discovery: Discovery | None = None

    def to_dict(self) -> dict[str, Any] | None:
        """The discovery for JSON output (addresses masked), None when it is off."""
        return None if self.discovery is None else self.discovery.to_dict()


def discovery_wanted(config: Config, discover: str | None = None) -> bool:
    """Is discovery on: ``discover`` is ``"compose"``, or None and the configuration asks for it."""
    if discover is not None:
        return discover == "compose"
    return bool((config.raw.get("discovery") or {}).get("compose"))


def resolve_addresses(config: Config, *, discover: str | None = None, timeout: float = 5.0,
                      env: Mapping[str, str] | None = None, cwd: Path | None = None) -> Addresses:
    """The configured services, with what Compose discovery found in place of their
    addresses (each spec's ``origin`` says where its address came from)."""
    if not discovery_wanted(config, discover):
        return Addresses(dict(config.services), None)
    from . import compose

    settings = compose.settings_from_config(config.raw, config.source) or compose.ComposeSettings()
    try:
        found = compose.discover(config.services, settings, env=env, cwd=cwd, timeout=timeout,
                                 fixed=compose.fixed_by_environment(config.services, env))
    except compose.ComposeError as exc:
        found = compose.failed(exc)
    return Addresses(found.apply(config.services), found)


def announce(discovery: Discovery | None) -> None:
    """Log discovery's warnings and notes, each once per process."""
    if discovery is None or not discovery.messages:
        return
    from .compose import say_once

    for message in say_once(discovery.messages):
        LOGGER.warning("netra-rm: %s", message)


def validate_discovery(config: Config, *, env: Mapping[str, str] | None = None, cwd: Path | None = None) -> None:
    """For ``config validate``: raise :class:`~netra_rm.errors.ComposeError` when the
    configuration turns discovery on and the compose project cannot be read (no engine
    is asked)."""
    if not discovery_wanted(config):
        return
    from . import compose

    settings = compose.settings_from_config(config.raw, config.source) or compose.ComposeSettings()
    compose.discover(config.services, settings, env=env, cwd=cwd, engine=False)
