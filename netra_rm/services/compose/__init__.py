"""Docker Compose discovery: where do the services publish their ports on this host?

When a Compose v2 CLI is present (``docker compose``, or a standalone ``docker-compose``)
Compose itself resolves the project (`docker compose config --format json`: profiles,
``.env``, ``extends``, ``include``, override files, ``COMPOSE_FILE``, ``!override`` and
``!reset``) and, when a Docker engine answers, reports the running containers' ports
(`docker compose ps --format json`). Without a CLI, netra-rm reads the compose files
itself and says what it could not follow. The found host port replaces the port (and,
for a specific host IP, the host) of the service's configured URL; user, password, path
and scheme stay.

One module per seam: :mod:`.cli` (asking Compose), :mod:`.reader` (the files without
Compose), :mod:`.ports` (the ``ports`` forms), :mod:`.interpolation` (``${VAR:-x}``),
:mod:`.matching` (which compose service is which netra-rm service) and :mod:`.discovery`
(all of it together). Nothing here runs unless discovery is turned on.
"""

from __future__ import annotations

from .cli import ComposeCli, find_cli, parse_ps_output
from .discovery import (
    ComposeSettings,
    Discovery,
    discover,
    failed,
    fixed_by_environment,
    resolve_project,
    say_once,
    settings_from_config,
)
from .interpolation import interpolate
from .matching import is_sidecar, match_services, pick_port, rewrite_url
from .model import ComposeError, ComposeProject, ComposeService, PublishedPort
from .ports import parse_ports
from .reader import COMPOSE_FILE_NAMES, find_compose_file, override_file, read_dotenv, read_project

__all__ = [
    "COMPOSE_FILE_NAMES", "ComposeCli", "ComposeError", "ComposeProject", "ComposeService",
    "ComposeSettings", "Discovery", "PublishedPort", "discover", "failed", "find_cli", "find_compose_file",
    "fixed_by_environment", "interpolate", "is_sidecar", "match_services", "override_file", "parse_ports",
    "parse_ps_output", "pick_port", "read_dotenv", "read_project", "resolve_project", "rewrite_url", "say_once",
    "settings_from_config",
]
