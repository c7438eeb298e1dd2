"""Where output goes and the plain lines of it: :class:`Output` carries a command's
choices (``--json``, ``-q``, colour, the streams) and writes JSON, data lines, messages
and errors, every error masked.

The renderers of the commands' results sit beside it, one module per kind of output
(:mod:`.human` tables, :mod:`.openmetrics`, :mod:`.github`, :mod:`.journal`,
:mod:`.startup`); which one a command uses is still chosen in :mod:`netra_rm.cli.app`.
Rich is imported only when a human table is drawn, so ``allocate`` and ``release`` stay
fast.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any, TextIO

from netra_rm.errors import NetraRMError
from netra_rm.redact import mask_text


@dataclass
class Output:
    """Where and how to print: JSON or human, quiet or not, colour or not."""

    json: bool = False
    quiet: bool = False
    color: bool = True
    stdout: TextIO = sys.stdout
    stderr: TextIO = sys.stderr

    # -- plain lines ---------------------------------------------------------------------

    def line(self, text: str) -> None:
        """A line of data on stdout (printed even when quiet: scripts read it)."""
        self.stdout.write(text + "\n")
        self.stdout.flush()

    def info(self, text: str) -> None:
        """A message for people, on stderr; dropped by --quiet."""
        if not self.quiet:
            self.stderr.write(text + "\n")
            self.stderr.flush()

    def emit_json(self, data: Any) -> None:
        self.stdout.write(json.dumps(data, indent=2, default=_json_default) + "\n")
        self.stdout.flush()

    def error(self, exc: NetraRMError | str, remediation: list[str] | None = None) -> None:
        """One sentence naming what is wrong, then the remediation steps; never a traceback."""
        message = exc.message if isinstance(exc, NetraRMError) else str(exc)
        steps = list(exc.remediation) if isinstance(exc, NetraRMError) else list(remediation or [])
        prefix = "\x1b[1;31merror:\x1b[0m " if self.color and _isatty(self.stderr) else "error: "
        self.stderr.write(f"netra-rm: {prefix}{mask_text(message)}\n")
        for step in steps:
            self.stderr.write(f"  - {mask_text(step)}\n")
        self.stderr.flush()

    # -- rich ----------------------------------------------------------------------------

    def console(self, *, stderr: bool = False) -> Any:
        from rich.console import Console

        return Console(file=self.stderr if stderr else self.stdout, no_color=not self.color,
                       highlight=False, soft_wrap=False)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _json_default(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)
