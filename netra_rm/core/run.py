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
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any

from netra_rm.config import env as envmod
from netra_rm.core.engine import Engine
from netra_rm.core.holding import HoldingWatch
from netra_rm.core.model import Allocation, Request
from netra_rm.errors import ExitCode, LedgerError, NetraRMError, UsageError

if TYPE_CHECKING:
    from netra_rm.machine.base import Confinement, Mechanism, Used
    from netra_rm.machine.measure import Measurement

ON_LOST = ("term", "warn")
DEFAULT_KILL_AFTER = 10.0

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
class RunOptions:
    """How ``run`` holds CMD to its allocation.

    ``on_lost``: "term" stops CMD when its allocation is lost (SIGTERM, then SIGKILL
    after ``kill_after`` seconds) and ``run`` exits 6; "warn" only warns. ``enforce``
    confines CMD to the allocation's memory and CPU (``mechanisms``: the ways to try, in
    order; None: ``NETRA_RM_ENFORCE_WITH``, else all). ``measure``: sample CMD's tree for
    its peak memory and CPU time. ``say`` prints progress notes (``run -v``), ``warn``
    warnings (default: to stderr).
    """

    on_lost: str = "term"
    kill_after: float = DEFAULT_KILL_AFTER
    enforce: bool = False
    measure: bool = True
    mechanisms: tuple[Mechanism, ...] | None = None
    say: Callable[[str], None] | None = None
    warn: Callable[[str], None] | None = None

    def __post_init__(self) -> None:
        if self.on_lost not in ON_LOST:
            raise UsageError(f"--on-lost must be term or warn, not {self.on_lost!r}.")
        if not (0 <= self.kill_after < float("inf")):
            raise UsageError(f"--kill-after must be a number of seconds, 0 or more, not {self.kill_after!r}.")


@dataclass(frozen=True)
class RunOutcome:
    """How ``run`` ended: its exit code (CMD's, 128+N for signal N, or 6 when the
    allocation was lost and CMD stopped), its allocation, notes for people, an ``error``
    sentence (the allocation was lost; CMD went past its memory and was killed), what CMD
    used, why the allocation was lost, and the enforcement mechanism."""

    exit_code: int
    allocation: Allocation
    signal: int | None = None
    notes: tuple[str, ...] = ()
    error: str | None = None
    measurement: Measurement | None = None
    lost: str | None = None
    mechanism: str | None = None


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
                timeout: float | None = None, options: RunOptions | None = None) -> RunOutcome:
    """Check the services ``request`` requires, allocate it (waiting if asked, one
    ``timeout`` for both), run ``argv`` owning it, release it.

    Raises :class:`CommandNotFoundError` (nothing allocated, or the allocation released),
    :class:`netra_rm.errors.ServiceUnavailableError`,
    :class:`netra_rm.errors.NoCapacityError` / ``WaitTimeoutError`` (CMD never started).
    Not for multi-threaded callers: it forks.
    """
    from netra_rm.core.readiness import require_services
    from netra_rm.core.waiting import allocate_waiting

    options = options or RunOptions()
    if not argv:
        raise UsageError("give the command to run after --, e.g. netra-rm run --layer fast_feedback "
                         "--category unit -- pytest tests/unit")
    check_command(argv[0])
    if request.requires:
        spent = require_services(engine, request.requires, wait=wait, timeout=timeout)
        timeout = None if timeout is None else max(0.0, timeout - spent)
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
    return _supervise(engine, child, allocation, options)


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

    def start(self, env: dict[str, str], argv: Sequence[str] | None = None) -> int | None:
        """Let the child exec CMD (or ``argv``: CMD wrapped) with ``env``; the errno of a
        failed exec, else None."""
        assert self._go is not None and self._errors is not None
        try:
            payload = memoryview(json.dumps({"env": env, "argv": list(argv or self.argv)}).encode())
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
    go_ahead = json.loads(b"".join(chunks))
    env, argv = go_ahead["env"], go_ahead["argv"]
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as exc:
        os.write(errors, str(exc.errno or 0).encode())


def _supervise(engine: Engine, child: BlockedChild, allocation: Allocation, options: RunOptions) -> RunOutcome:
    """Start CMD (confined, with --enforce), forward signals, watch the allocation and
    measure CMD until it ends; release, and say how it ended."""
    say = options.say or (lambda text: None)
    confinement = _confine(engine, child, allocation, options, say)
    waited = set(FORWARDED) | {signal.SIGCHLD}
    has_sigwait = hasattr(signal, "sigtimedwait")
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, waited) if has_sigwait else None
    previous = None if has_sigwait else _forward_with_handlers(child.pid)
    main = threading.main_thread().ident if threading.current_thread() is threading.main_thread() else None
    watch = _watch(engine, allocation, wake=lambda: _wake(main) if has_sigwait else None)
    supervisor = _Supervisor(child.pid, watch, options, confinement)
    try:
        extra = allocation_environment(allocation, engine)
        if confinement is not None:
            extra["NETRA_RM_ENFORCEMENT"] = confinement.mechanism
        argv = confinement.wrap(child.argv) if confinement is not None else child.argv
        error = child.start(envmod.child_environment(extra), argv)
        if error is not None:
            _reap(child.pid)
            watch.stop()
            failed = _release(engine, allocation)
            reason = os.strerror(error).lower() if error else "it could not be executed"
            raise CommandNotFoundError(f"cannot run {child.argv[0]}: {reason}.",
                                       remediation=list(failed) or ["Check the command's name and path."])
        status, rusage = supervisor.run(has_sigwait, say)
        watch.stop()
    finally:
        watch.stop()
        if old_mask is not None:
            _discard_pending(waited)
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        if previous is not None:
            _restore(previous)
        used: Used | None = None
        if confinement is not None:
            used = confinement.used()
            confinement.close()
    measurement = supervisor.measurement(rusage, used)
    code = os.waitstatus_to_exitcode(status)
    signum = -code if code < 0 else None
    exit_code = 128 - code if code < 0 else code
    command = os.path.basename(child.argv[0])
    if watch.cause is not None:
        if options.on_lost == "term":
            stopped = "it was sent SIGKILL after --kill-after" if supervisor.killed else "it was sent SIGTERM"
            return RunOutcome(exit_code=int(ExitCode.LOST), allocation=allocation, signal=signum,
                              error=f"{(watch.sentence or '')[:-1]}; {command} was stopped ({stopped}).",
                              measurement=measurement, lost=watch.cause,
                              mechanism=None if confinement is None else confinement.mechanism)
        notes: tuple[str, ...] = ()
    else:
        notes = _release(engine, allocation, measured=None if measurement is None else measurement.to_event())
    error_text = None
    if measurement is not None and measurement.oom_killed:
        error_text = (f"{command} exceeded its {allocation.memory_mb} MB allocation (peak "
                      f"{measurement.peak_memory_mb:.0f} MB) and was killed.")
    return RunOutcome(exit_code=exit_code, allocation=allocation, signal=signum, notes=notes, error=error_text,
                      measurement=measurement, lost=watch.cause,
                      mechanism=None if confinement is None else confinement.mechanism)


def _confine(engine: Engine, child: BlockedChild, allocation: Allocation, options: RunOptions,
             say: Callable[[str], None]) -> Confinement | None:
    """With --enforce: a confinement for CMD, holding the blocked child already; else None.
    When none can be had, the allocation is released and the child abandoned."""
    if not options.enforce:
        return None
    from netra_rm.machine import Limits, confine, default_mechanisms

    try:
        mechanisms = options.mechanisms if options.mechanisms is not None else \
            default_mechanisms(envmod.enforce_with())
        confinement, passed = confine(allocation.id, Limits(allocation.memory_mb, allocation.cpu_percent),
                                      mechanisms)
        confinement.attach(child.pid)
    except BaseException:
        child.abandon()
        _release(engine, allocation)
        raise
    for line in passed:
        say(f"netra-rm: not enforcing with {line}")
    say(f"netra-rm: enforcing {allocation.memory_mb} MB and {allocation.cpu_percent:g}% CPU on "
        f"{child.argv[0]} with {confinement.mechanism}")
    return confinement


def _stderr(text: str) -> None:
    import sys

    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _wake(thread_id: int | None) -> None:
    """Interrupt the supervisor's wait (SIGCHLD is blocked, so it stays pending for it)."""
    if thread_id is not None:
        signal.pthread_kill(thread_id, signal.SIGCHLD)


class _Supervisor:
    """The wait loop: forwards signals, samples CMD's tree, acts on a lost allocation."""

    def __init__(self, pid: int, watch: HoldingWatch, options: RunOptions, confinement: Confinement | None) -> None:
        from netra_rm.machine.measure import SAMPLE_INTERVAL, TreeSampler

        self.pid = pid
        self.watch = watch
        self.options = options
        self.confinement = confinement
        sampled = options.measure or (confinement is not None and confinement.needs_samples)
        self.sampler = TreeSampler(pid) if sampled else None
        if confinement is not None and confinement.needs_samples:
            from netra_rm.machine.watchdog import WATCH_INTERVAL

            self.interval = WATCH_INTERVAL
        else:
            self.interval = SAMPLE_INTERVAL
        self.started = time.monotonic()
        self.ended = self.started
        self.term_at: float | None = None
        self.killed = False
        self._handled_loss = False

    def run(self, has_sigwait: bool, say: Callable[[str], None]) -> tuple[int, Any]:
        """Wait for CMD; its wait status and resource usage."""
        waited = set(FORWARDED) | {signal.SIGCHLD}
        next_sample = self.started
        while True:
            done, status, rusage = os.wait4(self.pid, os.WNOHANG)
            now = time.monotonic()
            if done:
                self.ended = now
                return status, rusage
            if self.watch.cause is not None and not self._handled_loss:
                self._lost(now, say)
            if self.term_at is not None and now >= self.term_at and not self.killed:
                self._kill_tree()
            if self.sampler is not None and now >= next_sample:
                usage = self.sampler.sample()
                if self.confinement is not None:
                    self.confinement.observe(usage)
                next_sample = now + self.interval
            elif self.confinement is not None and self.sampler is None:
                self.confinement.observe(None)
            deadlines = [next_sample] if self.sampler is not None else []
            if self.term_at is not None and not self.killed:
                deadlines.append(self.term_at)
            pause = max(0.001, min(deadlines) - now) if deadlines else None
            if not has_sigwait:
                time.sleep(min(pause or 0.05, 0.05))
                continue
            info = signal.sigtimedwait(waited, pause) if pause is not None else signal.sigwaitinfo(waited)
            if info is None or info.si_signo not in FORWARDED:
                continue  # SIGCHLD, or woken by SIGCONT after a stop
            if info.si_signo != signal.SIGTERM and info.si_code == _SI_KERNEL:
                continue  # the terminal sent it to CMD's process group too
            try:
                os.kill(self.pid, info.si_signo)
            except ProcessLookupError:
                pass

    def _lost(self, now: float, say: Callable[[str], None]) -> None:
        self._handled_loss = True
        watch = self.watch
        assert watch.cause is not None
        action = self.options.on_lost
        watch.engine.record_lost(watch.allocation, watch.cause, action=action)
        if action == "term":
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            self.term_at = now + self.options.kill_after
        else:
            warn = self.options.warn or _stderr
            warn(f"netra-rm: warning: {watch.sentence} The command goes on (--on-lost warn).")

    def _kill_tree(self) -> None:
        from netra_rm.machine.measure import tree_pids

        self.killed = True
        for pid in reversed(tree_pids(self.pid) or [self.pid]):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def measurement(self, rusage: Any, used: Used | None) -> Measurement | None:
        """What CMD used: from its cgroup when it had one, else its sampled tree and
        wait4's figures. None when measuring is off."""
        from netra_rm.machine.measure import Measurement, rusage_figures

        if not self.options.measure and used is None:
            return None
        largest, cpu = rusage_figures(rusage)
        sampled_peak = self.sampler.peak_mb if self.sampler is not None else 0.0
        sampled_cpu = self.sampler.cpu_seconds if self.sampler is not None else 0.0
        peak = used.peak_memory_mb if used is not None and used.peak_memory_mb is not None else None
        if peak is None or (used is not None and not used.oom_killed and self.confinement is not None
                            and self.confinement.needs_samples):
            peak = max(peak or 0.0, sampled_peak, largest)
        cpu_seconds = used.cpu_seconds if used is not None and used.cpu_seconds is not None else max(cpu, sampled_cpu)
        return Measurement(peak_memory_mb=peak, cpu_seconds=cpu_seconds, wall_seconds=self.ended - self.started,
                           oom_killed=bool(used is not None and used.oom_killed))


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


def _watch(engine: Engine, allocation: Allocation, *, wake: Callable[[], None]) -> HoldingWatch:
    """A thread that keeps ``allocation`` while CMD runs and notices at once when it is
    taken away: its expiry stays at least its hold time (``--duration-minutes``) ahead,
    on a shared ledger its lease is renewed, and between renewals it looks at the ledger
    (see :mod:`netra_rm.core.holding`).

    The thread inherits the blocked signals, so they still reach the supervisor. Should
    the wrapper itself be killed, the allocation expires after its hold time (or, once
    CMD is gone too, the next transaction reclaims it).
    """
    from netra_rm.core.lease import heartbeat_interval

    hold = max(1.0, allocation.expires_at - allocation.created_at)
    interval = hold / 3
    if allocation.lease_expires_at is not None:
        interval = min(interval, heartbeat_interval(engine.config.lease_seconds))
    watch = HoldingWatch(engine, allocation, hold_seconds=hold, renew_interval=interval, on_lost=wake)
    watch.start()
    return watch


def _release(engine: Engine, allocation: Allocation, *, measured: dict[str, Any] | None = None) -> tuple[str, ...]:
    """Release after CMD ended; a failure only leaves a note (CMD is gone, so the next
    transaction reclaims the allocation anyway). An allocation already gone is named with
    the journal's reason."""
    try:
        result = engine.release([allocation.id], measured=measured)
    except LedgerError as exc:
        return (f"could not release {allocation.id} ({exc.message}); it is reclaimed automatically now that "
                "the command has ended.",)
    if result.missing:
        from netra_rm.core.holding import describe

        sentence = describe(engine.why_gone(allocation.id), allocation).replace(" while the command ran",
                                                                                " before the command ended")
        return (sentence,)
    return ()


def run_summary(outcome: RunOutcome) -> str:
    """One line for ``run -v``: what CMD used against its allocation, and how it was held."""
    a = outcome.allocation
    held = f"enforced with {outcome.mechanism}" if outcome.mechanism else "not enforced"
    m = outcome.measurement
    if m is None:
        return f"netra-rm: allocation {a.id}: {a.memory_mb} MB, {a.cpu_percent:g}% CPU ({held}; not measured)."
    return (f"netra-rm: allocation {a.id}: {a.memory_mb} MB, {a.cpu_percent:g}% CPU ({held}); the command used "
            f"peak {m.peak_memory_mb:.0f} MB and {m.cpu_seconds:.2f} CPU seconds in {m.wall_seconds:.2f} s"
            f"{', and was killed for its memory' if m.oom_killed else ''}.")
