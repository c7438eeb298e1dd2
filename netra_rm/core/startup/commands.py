"""Running a service's start and stop commands, and the process groups they leave.

A command runs in its own session (so its process group is its own, and ``down`` can
signal all of it), without a shell unless ``shell: true``, with its output appended to
``<ledger>.logs/<service>.log`` through a masking relay (:mod:`netra_rm.core.logrelay`),
so every configured secret is masked before it is written; the logs directory is
private and no log is opened through a link (:mod:`netra_rm.core.startup.state`).
Whatever is shown of a command or its output is masked.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netra_rm import procfs
from netra_rm.backoff import PROCESS_EXIT
from netra_rm.config import env as envmod
from netra_rm.config.commands import command_line, mask_command
from netra_rm.config.service import ServiceSpec
from netra_rm.core import liveness
from netra_rm.core.startup.state import StartedServices
from netra_rm.fsutil import CLOEXEC, NOFOLLOW

#: How many lines of a failed command's output are shown.
TAIL_LINES = 15
#: Seconds between SIGTERM and SIGKILL.
TERM_GRACE = 10.0
_RELAY_GRACE = 2.0


@dataclass
class Launch:
    """A start or stop command that was started: its process, where its output goes and
    the relay that masks it on the way."""

    process: subprocess.Popen[bytes] | None
    command: str  # masked
    log: Path
    offset: int
    error: str | None = None  # why it could not be started at all
    relay: subprocess.Popen[bytes] | None = None

    def drain(self) -> None:
        """Once the command has ended, let the relay write the rest of its output (it ends
        when nothing holds the pipe any more; a daemon the command left behind may)."""
        if self.relay is not None and self.process is not None and self.process.poll() is not None:
            try:
                self.relay.wait(timeout=_RELAY_GRACE)
            except subprocess.TimeoutExpired:
                pass

    def tail(self, secrets: Sequence[str]) -> tuple[str, ...]:
        """The last lines of the command's output, masked (see :func:`tail_of`)."""
        self.drain()
        return tail_of(self.log, self.offset, secrets)


def launch(spec: ServiceSpec, argv: Sequence[str], *, verb: str, store: StartedServices, secrets: Sequence[str],
           env: Mapping[str, str] | None) -> Launch:
    """Start ``argv`` of ``spec`` in its own session, its output appended, masked, to its
    log (which is opened safely: see :meth:`StartedServices.open_log`)."""
    shown = mask_command(command_line(argv, shell=spec.shell), secrets)
    log = store.log_path(spec.name)
    stamp = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    fd = store.open_log(spec.name)
    with os.fdopen(fd, "ab") as out:
        out.write(f"==> {stamp} netra-rm {verb} {spec.name}: {shown}\n".encode())
        out.flush()
        offset = out.tell()
        if spec.workdir and not Path(spec.workdir).is_dir():
            return Launch(None, shown, log, offset,
                          f"its working directory {spec.workdir} does not exist (services.{spec.name}.workdir)")
        try:
            relay, pipe = _start_relay(out, secrets)
        except OSError as exc:
            return Launch(None, shown, log, offset, f"cannot start the masking relay for its output: "
                                                    f"{exc.strerror or exc}")
        args: Any = argv[0] if spec.shell else list(argv)
        try:
            process = subprocess.Popen(args, shell=spec.shell, cwd=spec.workdir or None,
                                       env=envmod.child_environment(spec.environment, env),
                                       stdin=subprocess.DEVNULL, stdout=pipe, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        except FileNotFoundError:
            return Launch(None, shown, log, offset, f"cannot run {argv[0]!r}: no such program (PATH is searched "
                                                    f"for names without a slash)", relay)
        except PermissionError:
            return Launch(None, shown, log, offset, f"cannot run {argv[0]!r}: permission denied", relay)
        except OSError as exc:
            return Launch(None, shown, log, offset, f"cannot run {argv[0]!r}: {exc.strerror or exc}", relay)
        finally:
            os.close(pipe)  # the command holds the write end now; the relay ends when it lets go
    return Launch(process, shown, log, offset, relay=relay)


def _start_relay(log: Any, secrets: Sequence[str]) -> tuple[subprocess.Popen[bytes], int]:
    """Start :mod:`netra_rm.core.logrelay` appending to ``log``; the relay and the write end
    of its pipe, the secrets already written down it (never in an argument list)."""
    read_end, write_end = os.pipe()
    try:
        package_root = str(Path(__file__).resolve().parents[3])  # the directory netra_rm is in
        code = f"import sys; sys.path.insert(0, {package_root!r}); from netra_rm.core.logrelay import main; main()"
        relay = subprocess.Popen([sys.executable, "-c", code], stdin=read_end, stdout=log,
                                 stderr=subprocess.DEVNULL, start_new_session=True)
    except BaseException:
        os.close(write_end)
        raise
    finally:
        os.close(read_end)
    header = json.dumps(list(secrets)).encode() + b"\n"
    view = memoryview(header)
    while view:
        view = view[os.write(write_end, view):]
    return relay, write_end


def tail_of(log: Path, offset: int, secrets: Sequence[str], lines: int = TAIL_LINES) -> tuple[str, ...]:
    """The last ``lines`` non-empty lines written to ``log`` after ``offset``, masked."""
    try:
        fd = os.open(log, os.O_RDONLY | NOFOLLOW | CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ()
    found = [line.rstrip() for line in text.splitlines() if line.strip()][-lines:]
    return tuple(mask_command(line[:400], secrets) for line in found)


def group_alive(pgid: int) -> bool:
    """True while a live (not zombie) process is in process group ``pgid``."""
    if not procfs.HAS_PROC:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    for pid in procfs.process_ids():
        try:
            found = procfs.process_stat(pid)
        except (OSError, IndexError, ValueError):
            continue
        if found is not None and not found.zombie and found.process_group == pgid:
            return True
    return False


def ours(pgid: int, start: str | None) -> bool:
    """Is process group ``pgid`` still the one a start command made? Its leader is the
    process we started, or the leader is gone and members remain (a pid in use as a
    group id is never handed out again, so those members are the start command's)."""
    token = liveness.start_token(pgid)
    if token is not None:
        return start is None or token == start
    return group_alive(pgid)


def stop_group(pgid: int, *, grace: float, process: subprocess.Popen[bytes] | None = None) -> None:
    """SIGTERM process group ``pgid``, SIGKILL after ``grace`` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            return
        if wait_group_gone(pgid, time.monotonic() + grace, process):
            return


def wait_group_gone(pgid: int, until: float, process: subprocess.Popen[bytes] | None = None) -> bool:
    """Wait until nothing is left of process group ``pgid`` (True) or ``until`` passes (False)."""
    pauses = PROCESS_EXIT.pauses()
    while True:
        if process is not None:
            process.poll()  # reap our own child
        if not group_alive(pgid):
            return True
        left = until - time.monotonic()
        if left <= 0:
            return False
        threading.Event().wait(min(next(pauses), left))
