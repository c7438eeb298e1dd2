"""Ledger backends behind one small protocol, chosen by location."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from netra_rm.config import env as envmod
from netra_rm.errors import UsageError
from netra_rm.ledger.base import SCHEMA_VERSION, Ledger, LedgerState

__all__ = ["SCHEMA_VERSION", "Ledger", "LedgerState", "default_ledger_path", "open_ledger"]

LEDGER_FILE_NAME = "ledger.json"


def default_ledger_path(env: Mapping[str, str] | None = None) -> Path:
    """``$XDG_STATE_HOME/netra-rm/ledger.json`` (``~/.local/state/...`` when unset)."""
    return envmod.state_dir(env) / LEDGER_FILE_NAME


def open_ledger(location: str | Path | None = None, *, env: Mapping[str, str] | None = None) -> Ledger:
    """The ledger at ``location`` (a path or ``file://`` URL), ``NETRA_RM_LEDGER``, or the default."""
    from netra_rm.ledger.file import FileLedger

    location = location or envmod.ledger_location(env)
    options: dict[str, Any] = {"journal_sync": envmod.journal_sync(env)}
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
        raise UsageError(f"the ledger location {scheme}://... is not supported; give a file path or a file:// "
                         "URL.", remediation=["Use --ledger PATH or NETRA_RM_LEDGER=PATH."])
    return FileLedger(text, **options)
