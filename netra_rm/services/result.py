"""The outcome of checking one service, as every caller (CLI, agent, JSON) sees it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

#: The statuses a result can have; ``healthy`` is the only one that lets a layer run.
Status = Literal["healthy", "unhealthy", "blocked", "unknown"]


@dataclass(frozen=True)
class ServiceResult:
    """What one check found out about one service.

    ``url`` and ``error`` are already masked: no password ever reaches a result.
    ``terminal`` says that waiting will not help (bad credentials, unknown database,
    unresolvable host, malformed URL); ``reason`` is a short machine word ("ok",
    "refused", "timeout", "auth", "unknown_database", "dns", "bad_url", "loading",
    "bad_status", "bad_body", "bad_reply", "bad_handshake", "blocked", "error", ...).
    """

    name: str
    kind: str
    status: Status
    url: str | None
    latency_ms: float | None = None
    version: str | None = None
    error: str | None = None
    terminal: bool = False
    reason: str = "ok"
    method: str | None = None
    depends_on: tuple[str, ...] = ()
    blocked_by: tuple[str, ...] = ()
    remediation: tuple[str, ...] = ()

    @property
    def healthy(self) -> bool:
        """True when the service can do its job."""
        return self.status == "healthy"

    def to_dict(self) -> dict[str, Any]:
        """The per-service JSON object of the contract (``status --json``, ``layer --json``)."""
        return {
            "status": self.status,
            "url": self.url,
            "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 1),
            "error": self.error,
            "depends_on": list(self.depends_on),
            "blocked_by": list(self.blocked_by),
            "kind": self.kind,
            "version": self.version,
            "terminal": self.terminal,
            "reason": self.reason,
            "method": self.method,
            "remediation": list(self.remediation),
        }
