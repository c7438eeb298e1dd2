"""Service readiness: one checker per kind, run concurrently, judged through the dependency graph.

Importing this package loads no database or HTTP driver: each checker module (and with
it psycopg, redis, httpx or clickhouse-connect) is imported only when a service of its
kind is checked. Even the runner loads on first use, so `allocate` and `release`, which
only need :class:`ServiceSpec` from the configuration, start fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .spec import ServiceSpec

if TYPE_CHECKING:
    from .result import ServiceResult
    from .runner import check_services

__all__ = ["ServiceResult", "ServiceSpec", "check_services"]

_LAZY = {"ServiceResult": ".result", "check_services": ".runner"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
