"""Ledger backends behind one small protocol, chosen by location."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from netra_rm.config import env as envmod
from netra_rm.errors import UsageError
from netra_rm.ledger.base import EVERYTHING, SCHEMA_VERSION, GrantPlan, Ledger, Scope, Snapshot, Txn

__all__ = ["EVERYTHING", "SCHEMA_VERSION", "GrantPlan", "Ledger", "Scope", "Snapshot", "Txn", "default_ledger_path",
           "is_server_location", "open_ledger"]

LEDGER_FILE_NAME = "ledger.json"
REDIS_SCHEMES = ("redis", "rediss", "unix")  # unix:///path.sock: Redis on its Unix socket
POSTGRES_SCHEMES = ("postgresql", "postgres")


def default_ledger_path(env: Mapping[str, str] | None = None) -> Path:
    """``$XDG_STATE_HOME/netra-rm/ledger.json`` (``~/.local/state/...`` when unset)."""
    return envmod.state_dir(env) / LEDGER_FILE_NAME


def open_ledger(location: str | Path | None = None, *, env: Mapping[str, str] | None = None) -> Ledger:
    """The ledger at ``location``, ``NETRA_RM_LEDGER``, or the default file.

    ``location`` is a path or ``file://`` URL (the JSON file), ``redis://`` / ``rediss://``
    / ``unix://`` (Redis, the last on its Unix socket) or ``postgresql://`` /
    ``postgres://`` (PostgreSQL); the server drivers are imported only here, when such a
    ledger is opened.
    """
    from netra_rm.ledger.file import FileLedger

    location = location or envmod.ledger_location(env)
    options: dict[str, Any] = {"journal_sync": envmod.journal_sync(env), "lock_timeout": envmod.lock_timeout(env),
                               "group_shared": envmod.shared_group(env)}
    max_bytes = envmod.journal_max_bytes(env)
    if max_bytes is not None:
        options["journal_max_bytes"] = max_bytes
    if location is None:
        return FileLedger(default_ledger_path(env), **options)
    text = str(location)
    if "://" in text:
        scheme, _, rest = text.partition("://")
        if scheme == "file":
            return FileLedger(rest, **options)
        from netra_rm.redact import normalized_url

        text = normalized_url(text)  # a password written raw (with / # @) is read as its user meant it
        if scheme in REDIS_SCHEMES:
            from netra_rm.ledger.redis import RedisLedger

            return RedisLedger(text, state_dir=envmod.state_dir(env), group_shared=options["group_shared"])
        if scheme in POSTGRES_SCHEMES:
            from netra_rm.ledger.postgres import PostgresLedger

            return PostgresLedger(text, state_dir=envmod.state_dir(env), group_shared=options["group_shared"])
        raise UsageError(f"the ledger location {scheme}://... is not supported; give a file path, or a file://, "
                         "redis:// or postgresql:// URL.",
                         remediation=["Use --ledger PATH|URL or NETRA_RM_LEDGER=PATH|URL."])
    return FileLedger(text, **options)


def is_server_location(location: str | Path | None) -> bool:
    """Does ``location`` name a server ledger (Redis, PostgreSQL) rather than a file?"""
    scheme = str(location or "").partition("://")[0] if "://" in str(location or "") else ""
    return scheme in REDIS_SCHEMES or scheme in POSTGRES_SCHEMES
