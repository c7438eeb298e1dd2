"""What the configuration says about one service: how to reach it and how to judge it,
and where its address came from (so every message can say what to change).

The kinds a service may be (``kind: postgresql``) are listed in :mod:`netra_rm.config.kinds`;
what each kind does is in its module of :mod:`netra_rm.services`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ComposeOrigin:
    """A host and port that Docker Compose discovery found for a service.

    ``via`` says how: ``"engine"`` (a running container, `docker compose ps`),
    ``"compose"`` (the project as `docker compose config` resolves it) or ``"file"``
    (netra-rm read the compose file itself, without a Compose CLI). ``command`` is the
    Compose command line that selects the project (``docker compose -f FILE``), for the
    start step a person can paste.
    """

    service: str
    file: str | None = None
    via: str = "compose"
    command: str = "docker compose"


@dataclass(frozen=True)
class AddressOrigin:
    """Where a service's URL was set: ``"environment"`` (``variable`` is set),
    ``"file"`` (``services.NAME.url`` in the configuration file ``file``) or
    ``"defaults"`` (the configuration that ships with netra-rm). ``variable`` names the
    service's ``url_env`` whichever it is. ``compose``, when set, says that the host and
    port came from Docker Compose instead (credentials and database still come from here).
    """

    source: str = "file"
    variable: str | None = None
    file: str | None = None
    compose: ComposeOrigin | None = None


@dataclass(frozen=True)
class ServiceSpec:
    """One service as configured (after environment overrides).

    ``url`` may hold a password; never print it, use :func:`netra_rm.redact.mask_url`.
    """

    name: str
    kind: str
    url: str
    url_env: str | None = None
    depends_on: tuple[str, ...] = ()
    health_path: str | None = None  # http: the path to GET (default "/health")
    expect_status: tuple[int, ...] = ()  # http: healthy statuses; empty means any 2xx
    json_field: str | None = None  # http: a dotted path into the JSON body ...
    json_value: Any = None  # ... that must equal this value
    connect_timeout: float = 1.0  # seconds to establish the connection
    timeout: float = 2.0  # seconds for the whole check
    # How `netra-rm up` starts it and `netra-rm down` stops it (see netra_rm.core.startup).
    # Each command is an argument list run without a shell; with ``shell`` it is one
    # string run by ``/bin/sh -c``. Empty means "netra-rm cannot start (stop) it".
    start: tuple[str, ...] = ()
    stop: tuple[str, ...] = ()
    shell: bool = False
    workdir: str | None = None  # the commands' working directory (absolute once loaded)
    environment: dict[str, str] = field(default_factory=dict, hash=False)  # added to ours
    origin: AddressOrigin = field(default_factory=AddressOrigin, compare=False)
