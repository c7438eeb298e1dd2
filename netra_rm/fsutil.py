"""Small file-system primitives shared by everything netra-rm writes.

One rule for every file another process may read while we write it: write a temp file
in the same directory, fsync it, ``os.replace`` it over the target. A reader then sees
the old file or the new one, never half of one.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def write_atomically(path: str | Path, data: bytes, *, mode: int = 0o600, fsync: bool = True,
                     make_parents: bool = False) -> Path:
    """Replace ``path`` with ``data`` atomically; raises ``OSError`` with the target
    unchanged and no temp file left behind. The temp name never ends like the target,
    so a directory watcher (node_exporter's ``*.prom``) never reads it."""
    target = Path(path)
    if make_parents:
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | NOFOLLOW | CLOEXEC, mode)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        unlink_quietly(tmp)
        raise
    return target


def unlink_quietly(path: str | Path) -> None:
    """Remove ``path`` if it is there; never raises."""
    try:
        os.unlink(path)
    except OSError:
        pass


def fsync_dir(directory: str | Path) -> None:
    """Make a rename in ``directory`` durable; best effort, never raises."""
    try:
        fd = os.open(directory, os.O_RDONLY | CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
