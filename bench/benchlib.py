"""What the benches share: how to start netra-rm as an installed command, and the bare
flock + JSON + fsync + rename cycle that the ledger's throughput is measured against."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def entry_point() -> list[str]:
    """The ``netra-rm`` console script beside this Python (else on PATH, else ``-m``)."""
    script = Path(sys.executable).with_name("netra-rm")
    if script.exists():
        return [str(script)]
    found = shutil.which("netra-rm")
    return [found] if found else [sys.executable, "-m", "netra_rm"]


def bare_cycle(target: Path, lock: Path, tmp: Path, change: Callable[[Any], object]) -> None:
    """One locked read-modify-write of a JSON file, made durable: lock a sibling, read,
    ``change`` the data, write a temp file, fsync, rename. The physical limit of the design."""
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with open(target, "rb") as f:
            data = json.loads(f.read())
        change(data)
        with open(tmp, "wb") as f:
            f.write(json.dumps(data, separators=(",", ":")).encode())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        os.close(fd)
