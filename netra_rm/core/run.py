"""``netra-rm run``: hold an allocation for exactly as long as a command runs.

The allocation is owned by the command's own process, not by the wrapper, so it is
reclaimed once the command is gone even if the wrapper is killed outright. To get there
without a window in which the allocation belongs to nobody alive:

1. fork a child that blocks reading a pipe, before it runs anything;
2. allocate (waiting in the queue if asked) with the *child* as owner: its pid and start
   time, which ``exec`` keeps;
3. send the child its environment (``NETRA_RM_ALLOCATION_ID`` and friends) through the
   pipe; it resets its signal state and ``exec``\\ s CMD, no shell involved. A second,
   close-on-exec pipe reports an ``exec`` failure;
4. wait for CMD, forwarding SIGINT, SIGTERM and SIGHUP, then release and return its
   exit code (128+N when signal N killed it).

If the wrapper dies before step 3, the child reads end-of-file and exits without
running CMD; its allocation (if granted) is then owned by a dead process and reclaimed.

Signals are handled with ``sigwaitinfo``: the wrapper blocks them and waits for them
synchronously, so a signal cannot slip between "CMD started" and "handler installed".
A SIGINT or SIGHUP that the *terminal* sent (``si_code`` SI_KERNEL) already reached CMD,
which shares the wrapper's process group; it is not sent a second time. Signals another
process sent to the wrapper (``kill``, a CI runner cancelling a step) are forwarded.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING

from netra_rm.config import env as envmod
from netra_rm.core.engine import Engine
from netra_rm.core.model import Allocation, Request
from netra_rm.errors import LedgerError, NetraRMError, UsageError

if TYPE_CHECKING:
    from netra_rm.core.lease import LeaseKeeper

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_SI_KERNEL = 0x80  # Linux: sent by the kernel, e.g. the terminal's ^C to its foreground group
_ABANDONED = 125  # the child's exit code when the wrapper gave up before CMD started


class CommandNotFoundError(UsageError):
    """CMD does not exist or cannot be executed (exit 2: CMD never ran)."""


class TerminatedError(NetraRMError):
    """SIGTERM or SIGHUP reached ``run`` while it waited for room; CMD never ran.
    Exits 128+N, as if the signal had ended it."""

    def __init__(self, signum: int) -> None:
        name = signal.Signals(signum).name
        super().__init__(f"{name} while waiting for room; the command was not started and the wait queue was "
                         "left.")
        self.exit_code = 128 + signum  # type: ignore[assignment]


@dataclass(frozen=True)
class RunOutcome:
    """How ``run`` ended: CMD's exit code (128+N for signal N), its allocation, and notes
    for people (e.g. the allocation had already expired when CMD ended)."""

    exit_code: int
    allocation: Allocation
    signal: int | None = None
    notes: tuple[str, ...] = ()


def allocation_environment(allocation: Allocation, engine: Engine | None = None) -> dict[str, str]:
    """The variables CMD finds in its environment, besides everything ours holds: the
    allocation, and the named instances it holds (see :meth:`Engine.instance_environment`)."""
    env = {
        "NETRA_RM_ALLOCATION_ID": allocation.id,
        "NETRA_RM_LAYER": allocation.layer or "",
        "NETRA_RM_CATEGORY": allocation.category,
        "NETRA_RM_SLOT": str(allocation.slot),
        "NETRA_RM_MEMORY_MB": str(allocation.memory_mb),
        "NETRA_RM_CPU_PERCENT": f"{allocation.cpu_percent:g}",
        "NETRA_RM_FENCING_TOKEN": str(allocation.fencing_token),
    }
    if engine is not None:
        env.update(engine.instance_environment(allocation))
    return env


def run_command(engine: Engine, request: Request, argv: Sequence[str], *, wait: bool = False,
                timeout: float | None = None) -> RunOutcome:
    """Allocate ``request`` (waiting if asked), run ``argv`` owning it, release it.

    Raises :class:`CommandNotFoundError` (nothing allocated, or the allocation released),
    :class:`netra_rm.errors.NoCapacityError` / ``WaitTimeoutError`` (CMD never started).
    Not for multi-threaded callers: it forks.
    """
    from netra_rm.core.waiting import allocate_waiting

    if not argv:
        raise UsageError("give the command to run after --, e.g. netra-rm run --layer fast_feedback "
                         "--category unit -- pytest tests/unit")
    check_command(argv[0])
    child = BlockedChild.spawn(list(argv))
    previous = _raise_on_termination()
    try:
        owner = engine.owner(child.pid)
        allocation = allocate_waiting(engine, request, owner, wait=wait, timeout=timeout)
    except _Terminated as exc:
        _restore(previous)
        child.abandon()
        raise TerminatedError(exc.signum) from None
    except BaseException:
        _restore(previous)
        child.abandon()
        raise
    _restore(previous)
    return _supervise(engine, child, allocation)


def check_command(command: str) -> None:
    """Refuse, before allocating anything, a command that cannot be found or run."""
    if os.sep in command:
        if not os.path.exists(command):
            raise CommandNotFoundError(f"cannot run {command}: no such file.")
        if os.path.isdir(command) or not os.access(command, os.X_OK):
            raise CommandNotFoundError(f"cannot run {command}: it is not an executable file.",
                                       remediation=[f"Make it executable: chmod +x {command}"])
        return
    if shutil.which(command, path=envmod.get("PATH")) is None:
        raise CommandNotFoundError(f"cannot run {command}: command not found in PATH.",
                                   remediation=["Check the spelling, or give the command's full path."])


class BlockedChild:
    """A forked child waiting for the go-ahead (its environment) before it execs CMD."""

    def __init__(self, pid: int, go: int, errors: int, argv: list[str]) -> None:
        self.pid = pid
        self.argv = argv
        self._go: int | None = go
        self._errors: int | None = errors

    @classmethod
    def spawn(cls, argv: list[str]) -> BlockedChild:
        go_read, go_write = os.pipe()  # both close-on-exec, like every fd Python makes
        err_read, err_write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child, which execs or exits
            try:
                os.close(go_write)
                os.close(err_read)
                _child(argv, go_read, err_write)
            finally:
                os._exit(127)
        os.close(go_read)
        os.close(err_write)
        return cls(pid, go_write, err_read, argv)

    def start(self, env: dict[str, str]) -> int | None:
        """Let the child exec CMD with ``env``; the errno of a failed exec, else None."""
        assert self._go is not None and self._errors is not None
        try:
            payload = memoryview(json.dumps(env).encode())
            while payload:
                payload = payload[os.write(self._go, payload):]
        except BrokenPipeError:
            pass  # the child is gone already; waitpid will say how
        finally:
            os.close(self._go)
            self._go = None
        chunks = []
        while chunk := os.read(self._errors, 64):
            chunks.append(chunk)
        os.close(self._errors)
        self._errors = None
        data = b"".join(chunks)
        return int(data) if data.isdigit() else None

    def abandon(self) -> None:
        """Make the child exit without running CMD, and reap it."""
        for fd in (self._go, self._errors):
            if fd is not None:
                os.close(fd)
        self._go = self._errors = None
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _reap(self.pid)


def _child(argv: list[str], go: int, errors: int) -> None:  # pragma: no cover - in the child
    """In the forked child: wait for the environment, then exec CMD."""
    for sig in (*FORWARDED, signal.SIGPIPE, signal.SIGXFSZ, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_DFL)  # Python ignores SIGPIPE and SIGXFSZ; CMD must not
    chunks = []
    while chunk := os.read(go, 65536):
        chunks.append(chunk)
    if not chunks:
        os._exit(_ABANDONED)  # the wrapper gave up (or died) before CMD's turn
    env = json.loads(b"".join(chunks))
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as exc:
        os.write(errors, str(exc.errno or 0).encode())


def _supervise(engine: Engine, child: BlockedChild, allocation: Allocation) -> RunOutcome:
    """Start CMD, forward signals until it ends, release, and say how it ended."""
    waited = set(FORWARDED) | {signal.SIGCHLD}
    has_sigwait = hasattr(signal, "sigwaitinfo")
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, waited) if has_sigwait else None
    previous = None if has_sigwait else _forward_with_handlers(child.pid)
    keeper = _hold_while_running(engine, allocation)
    try:
        error = child.start(envmod.child_environment(allocation_environment(allocation, engine)))
        if error is not None:
            _reap(child.pid)
            notes = _release(engine, allocation)
            reason = os.strerror(error).lower() if error else "it could not be executed"
            raise CommandNotFoundError(f"cannot run {child.argv[0]}: {reason}.",
                                       remediation=list(notes) or ["Check the command's name and path."])
        status = _wait_forwarding(child.pid) if has_sigwait else _reap(child.pid)
        keeper.stop()
        notes = _release(engine, allocation)
        if keeper.lost:
            how = ("its lease lapsed while the ledger could not be reached to renew it, or it was released by hand"
                   if allocation.lease_expires_at is not None else "it was released by hand or with cleanup --force")
            notes = (f"allocation {allocation.id} was taken away while the command ran: {how}.", *notes)
    finally:
        keeper.stop()
        if old_mask is not None:
            _discard_pending(waited)
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        if previous is not None:
            _restore(previous)
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        return RunOutcome(exit_code=128 - code, allocation=allocation, signal=-code, notes=notes)
    return RunOutcome(exit_code=code, allocation=allocation, notes=notes)


def _wait_forwarding(pid: int) -> int:
    """Wait for ``pid`` with the forwarded signals and SIGCHLD blocked; its wait status."""
    waited = set(FORWARDED) | {signal.SIGCHLD}
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        info = signal.sigwaitinfo(waited)
        if info.si_signo == signal.SIGCHLD:
            continue
        if info.si_signo != signal.SIGTERM and info.si_code == _SI_KERNEL:
            continue  # the terminal sent it to CMD's process group too
        try:
            os.kill(pid, info.si_signo)
        except ProcessLookupError:
            pass


def _forward_with_handlers(pid: int) -> dict[int, object]:
    """Where ``sigwaitinfo`` is missing (macOS): forward from signal handlers."""

    def forward(signum: int, frame: FrameType | None) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    return {sig: signal.signal(sig, forward) for sig in FORWARDED}


class _Terminated(BaseException):
    """SIGTERM or SIGHUP while waiting for room: leave the queue and end."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_on_termination() -> dict[int, object]:
    def handler(signum: int, frame: FrameType | None) -> None:
        raise _Terminated(signum)  # unwinds like ^C: the queue is left, the child reaped

    return {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGHUP)}


def _restore(previous: dict[int, object]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)  # type: ignore[arg-type]


def _discard_pending(signals: set[signal.Signals]) -> None:
    """Drop signals that arrived after CMD ended, so unblocking them does not interrupt us."""
    pending = signal.sigpending() & signals
    for _ in pending:
        signal.sigtimedwait(pending, 0)


def _reap(pid: int) -> int:
    while True:
        try:
            return os.waitpid(pid, 0)[1]
        except ChildProcessError:
            return 0


def _hold_while_running(engine: Engine, allocation: Allocation) -> LeaseKeeper:
    """A thread that keeps ``allocation`` while CMD runs: its expiry stays at least its
    hold time (``--duration-minutes``) ahead, and on a shared ledger its lease is renewed.

    The thread inherits the blocked signals, so they still reach ``sigwaitinfo``. Should
    the wrapper itself be killed, the allocation expires after its hold time (or, once
    CMD is gone too, the next transaction reclaims it).
    """
    from netra_rm.core.lease import LeaseKeeper, heartbeat_interval

    hold = max(1.0, allocation.expires_at - allocation.created_at)
    interval = hold / 3
    if allocation.lease_expires_at is not None:
        interval = min(interval, heartbeat_interval(engine.config.lease_seconds))
    keeper = LeaseKeeper(engine, [allocation.id], interval=interval, hold_seconds=hold)
    keeper.start()
    return keeper


def _release(engine: Engine, allocation: Allocation) -> tuple[str, ...]:
    """Release after CMD ended; a failure only leaves a note (CMD is gone, so the next
    transaction reclaims the allocation anyway)."""
    try:
        result = engine.release([allocation.id])
    except LedgerError as exc:
        return (f"could not release {allocation.id} ({exc.message}); it is reclaimed automatically now that "
                "the command has ended.",)
    if result.missing:
        return (f"allocation {allocation.id} had already been released or had expired before the command ended "
                "(see --duration-minutes).",)
    return ()
