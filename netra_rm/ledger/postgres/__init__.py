"""The PostgreSQL ledger, as tables: the backend (:mod:`.ledger`), its tables and their
upgrades (:mod:`.schema`), one bounded connection (:mod:`.session`) and the waiters'
wake-ups (:mod:`.wake`)."""

from __future__ import annotations

from netra_rm.ledger.postgres.ledger import PostgresLedger

__all__ = ["PostgresLedger"]
