"""A cache of parsed configuration files, so a start of ``netra-rm`` need not load PyYAML.

The CLI runs thousands of times a day and importing and running the YAML parser is a
good part of its start-up. A cache entry holds the file's whole text beside the parsed
data, and is used only when the text is identical, so an edited file is always parsed
again. Entries live in ``$XDG_CACHE_HOME/netra-rm``; any problem with the cache (a
read-only home, a broken entry) only means parsing the file again.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

from netra_rm.config import env as envmod
from netra_rm.fsutil import write_atomically

MISS = object()
_VERSION = 1


def _entry(source: str) -> Path:
    return envmod.cache_dir() / f"config-{zlib.crc32(source.encode()):08x}.json"


def lookup(source: str, text: str) -> Any:
    """The data cached for exactly this ``text`` of ``source``, or :data:`MISS`."""
    try:
        entry = json.loads(_entry(source).read_bytes())
    except (OSError, ValueError):
        return MISS
    if not isinstance(entry, dict) or entry.get("version") != _VERSION or entry.get("text") != text:
        return MISS
    return entry.get("data", MISS)


def store(source: str, text: str, data: Any) -> None:
    """Remember ``data`` for ``text``; silently does nothing when it cannot."""
    path = _entry(source)
    try:
        payload = json.dumps({"version": _VERSION, "source": source, "text": text, "data": data})
    except (TypeError, ValueError):
        return  # YAML that JSON cannot hold (dates, odd keys): just parse it every time
    try:
        write_atomically(path, payload.encode(), fsync=False, make_parents=True)
    except OSError:
        pass
