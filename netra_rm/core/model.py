"""What a user asks for (:class:`ResourceRequirements`, the seed's API type), and the
ledger's records the engine works on (re-exported from :mod:`netra_rm.records`)."""

from __future__ import annotations

from dataclasses import dataclass

from netra_rm.records import Allocation, Owner, Request, Waiter

__all__ = ["Allocation", "Owner", "Request", "ResourceRequirements", "Waiter"]


@dataclass(frozen=True)
class ResourceRequirements:
    """What a category of tests needs: services, and a share of its layer's pool.

    ``min_memory_mb`` and ``min_cpu_percent`` left as None take the layer's default share
    (the pool divided by its instances, unless the configuration says otherwise).
    """

    requires_postgresql: bool = False
    requires_redis: bool = False
    requires_clickhouse: bool = False
    requires_backend: bool = False
    requires_auth: bool = False
    requires_frontend: bool = False
    requires_websocket: bool = False
    min_memory_mb: int | None = None
    min_cpu_percent: float | None = None
    dedicated_resources: bool = False
    extra_services: tuple[str, ...] = ()
    #: higher first in the wait queue (see the README's "Waiting in line")
    priority: int = 0

    def required_services(self) -> tuple[str, ...]:
        """The services named by the ``requires_*`` flags and ``extra_services``."""
        flags = (("postgresql", self.requires_postgresql), ("redis", self.requires_redis),
                 ("clickhouse", self.requires_clickhouse), ("backend", self.requires_backend),
                 ("auth", self.requires_auth), ("frontend", self.requires_frontend),
                 ("websocket", self.requires_websocket))
        names = [name for name, wanted in flags if wanted]
        names += [s for s in self.extra_services if s not in names]
        return tuple(names)
