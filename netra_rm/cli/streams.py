"""What the process inherits: a stdout that may close under it, and signal dispositions.

* ``netra-rm status | head -1``: once the reader is gone, writing to stdout fails with
  EPIPE (Python ignores SIGPIPE). :func:`quiet_closed_stdout` makes that end the output
  quietly: later writes go nowhere, the command finishes, and its exit code stays the
  verdict. No "Broken pipe" message, no traceback.
* A job started in the background of a script, or under some CI runners, inherits
  SIGINT ignored, and Python then never raises KeyboardInterrupt. The commands that run
  until stopped call :func:`stop_on_signals`, so SIGINT and SIGTERM still end them
  cleanly (the terminal restored, allocations and checks left tidy).
"""

from __future__ import annotations

import errno
import os
import signal
import sys
from types import FrameType
from typing import Any, TextIO, cast


class ClosedOutput:
    """A text stream that forwards to ``stream`` until the reader goes away, then drops
    what is written. ``broken`` says whether that happened (a loop that only prints, as
    the monitor's, stops then)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.broken = False

    def _closed(self) -> None:
        self.broken = True
        try:  # whatever is still buffered must not fail again at exit
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass

    def write(self, text: str) -> int:
        if not self.broken:
            try:
                self._stream.write(text)
            except OSError as exc:
                if not _is_closed_pipe(exc):
                    raise
                self._closed()
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if not self.broken:
            try:
                self._stream.flush()
            except OSError as exc:
                if not _is_closed_pipe(exc):
                    raise
                self._closed()

    def isatty(self) -> bool:
        return not self.broken and self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _is_closed_pipe(exc: OSError) -> bool:
    return isinstance(exc, BrokenPipeError) or exc.errno in (errno.EPIPE, errno.EINVAL)


def quiet_closed_stdout() -> None:
    """Make a stdout whose reader went away (or that was never open) swallow output."""
    if sys.stdout is None:  # started with stdout closed (`netra-rm status >&-`)
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    if not isinstance(sys.stdout, ClosedOutput):
        sys.stdout = cast(TextIO, ClosedOutput(sys.stdout))


class Terminated(KeyboardInterrupt):
    """SIGTERM (or SIGHUP) arrived: ends a command the way Ctrl-C does, so the same
    clean-up runs; the exit code is 128 + the signal's number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise Terminated(signum)


def stop_on_signals(*, sigterm: bool = True) -> None:
    """SIGINT raises KeyboardInterrupt even when it was inherited ignored; with
    ``sigterm``, SIGTERM raises :class:`Terminated` instead of ending the process
    without clean-up. Only for commands that own the process (never the library)."""
    if signal.getsignal(signal.SIGINT) in (signal.SIG_IGN, signal.SIG_DFL, None):
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if sigterm and signal.getsignal(signal.SIGTERM) in (signal.SIG_IGN, signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, _terminate)


def interrupted_exit_code(exc: BaseException) -> int:
    """130 for Ctrl-C, 128 + N for signal N."""
    return 128 + int(getattr(exc, "signum", signal.SIGINT))
