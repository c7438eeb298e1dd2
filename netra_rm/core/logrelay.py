"""The masking relay between a start or stop command and its log file.

``netra-rm up`` does not hand a command its log file: it hands it a pipe, and this small
process (``python -m netra_rm.core.logrelay``, started beside the command) copies what
comes through into the log, every configured secret and URL password masked (see
:func:`netra_rm.config.commands.mask_command`). It runs in its own session and ends
when the command and everything it started have closed their output, so a server that
keeps running after ``up`` has returned (``redis-server --port 6390``) keeps a masked log.

Its standard input is the pipe, its standard output the log (opened by ``up``, which
checked it). The first line on the pipe is a JSON list of the secrets to mask, written by
``up`` before the command starts: secrets never appear in an argument list or an
environment another user could read.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence

#: A line longer than this without a newline is masked and written in pieces.
MAX_LINE = 64 * 1024
_READ = 64 * 1024


def relay(source: int, target: int, secrets: Sequence[str]) -> None:
    """Copy ``source`` to ``target`` line by line, masked, until end of file. When the
    log cannot be written (a full disk) the rest is read and dropped, so the command never
    meets a broken pipe."""
    from netra_rm.config.commands import mask_command

    broken = False

    def write(data: bytes) -> None:
        nonlocal broken
        if broken:
            return
        text = mask_command(data.decode("utf-8", "surrogateescape"), secrets)
        view = memoryview(text.encode("utf-8", "surrogateescape"))
        try:
            while view:
                view = view[os.write(target, view):]
        except OSError:
            broken = True

    pending = b""
    while True:
        chunk = os.read(source, _READ)
        if not chunk:
            break
        pending += chunk
        cut = pending.rfind(b"\n") + 1
        if not cut and len(pending) > MAX_LINE:  # a very long line: break it at a space if one is near
            space = max(pending.rfind(b" ", len(pending) - 4096), pending.rfind(b"\t", len(pending) - 4096))
            cut = space + 1 if space > 0 else len(pending)
        if cut:
            write(pending[:cut])
            pending = pending[cut:]
    if pending:
        write(pending)


def _read_header(source: int) -> list[str]:
    """The first line of ``source``: the JSON list of secrets."""
    data = b""
    while not data.endswith(b"\n"):
        byte = os.read(source, 1)
        if not byte:
            break
        data += byte
    try:
        secrets = json.loads(data or b"[]")
    except ValueError:
        return []
    return [s for s in secrets if isinstance(s, str)] if isinstance(secrets, list) else []


def main() -> None:
    source, target = sys.stdin.fileno(), sys.stdout.fileno()
    try:
        relay(source, target, _read_header(source))
    except (OSError, KeyboardInterrupt):
        pass


if __name__ == "__main__":
    main()
