"""Service readiness: one module per kind, checked concurrently, judged through the dependency graph.

Importing this package loads no database or HTTP driver: a kind's module is imported
when a service of that kind is checked, and its driver (psycopg, redis-py, httpx) only
by its probe. ``ServiceSpec`` is the configuration's (:mod:`netra_rm.config.service`),
re-exported here for convenience; the kinds are listed in :mod:`netra_rm.config.kinds`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from netra_rm.config.service import ServiceSpec

if TYPE_CHECKING:
    from .result import ServiceResult
    from .rounds import check_services

__all__ = ["ServiceResult", "ServiceSpec", "check_services"]

_LAZY = {"ServiceResult": ".result", "check_services": ".rounds"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
