"""A cache of parsed configuration files, so a start of ``netra-rm`` need not load PyYAML.

The CLI runs thousands of times a day and importing and running the YAML parser is a
good part of its start-up. What is cached is derived from the file and nothing else:

- Entries live in ``$XDG_CACHE_HOME/netra-rm``, a directory created 0700 and checked on
  every use (ours or root's, writable by nobody else, no symbolic link); each entry is
  checked the same way when it is read. With a shared or planted cache directory the
  cache is simply not used.
- An entry holds the SHA-256 of the file's whole text beside the parsed data and is used
  only for exactly that text, so an edited file is always parsed again.
- Only a configuration that passed validation is stored (:func:`~netra_rm.config.load.
  load_config` calls :func:`store` last), only plain JSON data (string keys, no dates),
  at most :data:`MAX_ENTRY_BYTES`; what is loaded is validated again like a parsed file.

Any problem with the cache (a read-only home, a broken or foreign entry) only means
parsing the file again.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from netra_rm.config import env as envmod
from netra_rm.errors import NetraRMError
from netra_rm.fsutil import check_private_dir, ensure_private_dir, open_private, write_atomically

MISS = object()
_VERSION = 2
#: The largest cache entry written or read.
MAX_ENTRY_BYTES = 1024 * 1024


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _entry(directory: Path, source: str) -> Path:
    """One entry per configuration file (so the cache does not grow with every edit)."""
    return directory / f"config-{hashlib.sha256(source.encode('utf-8', 'surrogatepass')).hexdigest()[:24]}.json"


def lookup(source: str, text: str) -> Any:
    """The data cached for exactly this ``text`` of ``source``, or :data:`MISS`."""
    directory = envmod.cache_dir()
    try:
        check_private_dir(directory)
        fd = open_private(_entry(directory, source), os.O_RDONLY)
    except (OSError, NetraRMError):
        return MISS
    try:
        with os.fdopen(fd, "rb") as f:
            raw = f.read(MAX_ENTRY_BYTES + 1)
        if len(raw) > MAX_ENTRY_BYTES:
            return MISS
        entry = json.loads(raw)
    except (OSError, ValueError, RecursionError):
        return MISS
    if (not isinstance(entry, dict) or entry.get("version") != _VERSION
            or entry.get("sha256") != _digest(text) or "data" not in entry):
        return MISS
    return entry["data"]


def store(source: str, text: str, data: Any) -> None:
    """Remember ``data``, parsed from ``text`` and validated; silently does nothing when it
    cannot (or when JSON would not give back exactly ``data``)."""
    if not _plain(data):
        return  # YAML that JSON cannot hold exactly (dates, non-string keys): parse it every time
    try:
        payload = json.dumps({"version": _VERSION, "sha256": _digest(text), "data": data},
                             separators=(",", ":")).encode()
    except (TypeError, ValueError, RecursionError):
        return
    if len(payload) > MAX_ENTRY_BYTES:
        return
    try:
        directory = ensure_private_dir(envmod.cache_dir())
        write_atomically(_entry(directory, source), payload, fsync=False)
    except (OSError, NetraRMError):
        pass


def _plain(data: Any) -> bool:
    """True when ``data`` is made of what JSON gives back unchanged: mappings with string
    keys, lists, strings, numbers, booleans and nulls."""
    stack = [data]
    seen = 0
    while stack:
        item = stack.pop()
        seen += 1
        if seen > 1_000_000:
            return False
        if isinstance(item, dict):
            if not all(isinstance(key, str) for key in item):
                return False
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif item is not None and not isinstance(item, (str, int, float, bool)):
            return False
    return True
