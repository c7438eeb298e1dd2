"""What the configuration says about one service: how to reach it and how to judge it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: The kinds of checker netra-rm has, one module each in ``netra_rm.services``.
SERVICE_KINDS: tuple[str, ...] = ("postgresql", "redis", "clickhouse", "http", "websocket", "tcp")


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
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    # How `netra-rm up` starts it and `netra-rm down` stops it (see netra_rm.core.startup).
    # Each command is an argument list run without a shell; with ``shell`` it is one
    # string run by ``/bin/sh -c``. Empty means "netra-rm cannot start (stop) it".
    start: tuple[str, ...] = ()
    stop: tuple[str, ...] = ()
    shell: bool = False
    workdir: str | None = None  # the commands' working directory (absolute once loaded)
    environment: dict[str, str] = field(default_factory=dict, hash=False)  # added to ours
