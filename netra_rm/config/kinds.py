"""The registry of service kinds: one row per kind a configuration may name
(``services.NAME.kind``), giving the module that knows that kind.

This is the one list of kinds. The configuration checks ``kind`` against it; the services
layer imports a kind's module from it only when a service of that kind is checked or
advised on (:func:`netra_rm.services.kind.find_kind`), so a row costs nothing at start-up.
A kind's module defines ``KIND``, a :class:`~netra_rm.services.kind.ServiceKind`: its
check, its remediation and its defaults together.

Adding a kind (MySQL, say) is its module, ``netra_rm/services/mysql.py``, and its row
here; ARCHITECTURE.md says what the module holds.
"""

from __future__ import annotations

#: kind -> the module whose ``KIND`` checks it, in the order messages list them
SERVICE_KINDS: dict[str, str] = {
    "postgresql": "netra_rm.services.postgresql",
    "redis": "netra_rm.services.redis",
    "clickhouse": "netra_rm.services.clickhouse",
    "http": "netra_rm.services.http",
    "websocket": "netra_rm.services.websocket",
    "tcp": "netra_rm.services.tcp",
}


def kind_names() -> tuple[str, ...]:
    """The kinds a configuration may name, in the order messages list them."""
    return tuple(SERVICE_KINDS)
