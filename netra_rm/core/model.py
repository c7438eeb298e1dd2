"""The values the engine works on: requests, owners and allocations."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any


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

    def required_services(self) -> tuple[str, ...]:
        """The services named by the ``requires_*`` flags and ``extra_services``."""
        flags = (("postgresql", self.requires_postgresql), ("redis", self.requires_redis),
                 ("clickhouse", self.requires_clickhouse), ("backend", self.requires_backend),
                 ("auth", self.requires_auth), ("frontend", self.requires_frontend),
                 ("websocket", self.requires_websocket))
        names = [name for name, wanted in flags if wanted]
        names += [s for s in self.extra_services if s not in names]
        return tuple(names)


@dataclass(frozen=True)
class Request:
    """A resolved request for one allocation: concrete amounts in one layer."""

    layer: str
    category: str
    memory_mb: int
    cpu_percent: float
    dedicated: bool = False
    requires: tuple[str, ...] = ()
    duration_minutes: float = 30.0
    #: the shared pools (configuration ``pools:``) the request also draws one instance from
    pools: tuple[str, ...] = ()


@dataclass(frozen=True)
class Owner:
    """Who holds an allocation. ``pid`` None means no process: it lives until released or
    it expires. ``start`` identifies the process instance, so a reused pid is not alive."""

    host: str
    user: str
    pid: int | None = None
    start: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "user": self.user, "pid": self.pid, "start": self.start}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Owner:
        return cls(host=data["host"], user=data.get("user", ""), pid=data.get("pid"), start=data.get("start"))


@dataclass(frozen=True)
class Allocation:
    """A grant in the ledger. Times are Unix seconds.

    ``pools`` names the shared pools it also holds an instance of. ``lease_expires_at``
    is set on a shared (server) ledger when a process owns it: the holder renews it, and
    anyone reclaims the allocation once it lapses (see :mod:`netra_rm.core.lease`).
    """

    id: str
    layer: str
    category: str
    memory_mb: int
    cpu_percent: float
    dedicated: bool
    requires: tuple[str, ...]
    created_at: float
    expires_at: float
    slot: int
    owner: Owner
    fencing_token: int = 0
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    pools: tuple[str, ...] = ()
    lease_expires_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        data = {
            "id": self.id, "layer": self.layer, "category": self.category, "memory_mb": self.memory_mb,
            "cpu_percent": self.cpu_percent, "dedicated": self.dedicated, "requires": list(self.requires),
            "created_at": self.created_at, "expires_at": self.expires_at, "slot": self.slot,
            "fencing_token": self.fencing_token, "owner": self.owner.to_dict(),
        }
        if self.pools:
            data["pools"] = list(self.pools)
        if self.lease_expires_at is not None:
            data["lease_expires_at"] = self.lease_expires_at
        if self.extra:
            data["extra"] = self.extra
        return data

    @cached_property
    def json(self) -> str:
        """The compact JSON of :meth:`to_dict`, computed once (allocations never change)."""
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Allocation:
        return cls(
            id=data["id"], layer=data["layer"], category=data.get("category", ""),
            memory_mb=data["memory_mb"], cpu_percent=data["cpu_percent"], dedicated=data.get("dedicated", False),
            requires=tuple(data.get("requires", ())), created_at=data["created_at"],
            expires_at=data["expires_at"], slot=data.get("slot", 0), owner=Owner.from_dict(data["owner"]),
            fencing_token=data.get("fencing_token", 0), extra=data.get("extra") or {},
            pools=tuple(data.get("pools", ())), lease_expires_at=data.get("lease_expires_at"),
        )
