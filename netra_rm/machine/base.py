"""One small interface for the ways of holding a command to its allocation.

A :class:`Mechanism` says whether it works on this machine and, when asked, confines one
command: a :class:`Confinement` wraps the command line (``systemd-run``), takes the
command's process before it runs anything (a cgroup), watches it as it runs (the
watchdog), says what it used, and removes what it made.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from netra_rm.machine.measure import TreeUsage

#: The CPU bandwidth period given to cgroups (microseconds), as systemd does.
CPU_PERIOD_US = 100_000


@dataclass(frozen=True)
class Limits:
    """What a command may use: its allocation's memory, and its CPU share of the machine."""

    memory_mb: int
    cpu_percent: float
    cpus: int = 0  # the machine's CPUs; 0: os.cpu_count()

    @property
    def memory_bytes(self) -> int:
        return self.memory_mb * 1024 * 1024

    @property
    def cpu_cores(self) -> float:
        """The CPU share as a number of cores (10 % of a 2-core machine is 0.2)."""
        return self.cpu_percent / 100 * (self.cpus or os.cpu_count() or 1)

    def cpu_quota_us(self) -> int:
        """The CFS quota per :data:`CPU_PERIOD_US` (at least the kernel's 1 ms minimum)."""
        return max(1000, round(self.cpu_cores * CPU_PERIOD_US))


@dataclass(frozen=True)
class Used:
    """What a confinement saw the command use (None where it cannot tell)."""

    peak_memory_mb: float | None = None
    cpu_seconds: float | None = None
    oom_killed: bool = False


class Confinement(ABC):
    """One command held to its limits by one mechanism."""

    mechanism: str = "?"
    #: Whether the command's tree must be sampled for the confinement to work (watchdog).
    needs_samples: bool = False

    def wrap(self, argv: Sequence[str]) -> list[str]:
        """The command line to execute instead of ``argv``."""
        return list(argv)

    def attach(self, pid: int) -> None:  # noqa: B027 - most mechanisms need nothing here
        """Take process ``pid`` (forked, not yet running the command) into the confinement."""

    def observe(self, usage: TreeUsage | None) -> bool:
        """A new sample of the command's tree; True when the confinement killed it."""
        return False

    @abstractmethod
    def used(self) -> Used:
        """What the command used, as far as this mechanism can tell."""

    @abstractmethod
    def close(self) -> None:
        """Remove whatever was made for the command (once it has ended)."""


class Mechanism(ABC):
    """A way to confine commands: a cgroup (v2, v1), a systemd scope, a watchdog."""

    name: str = "?"

    @abstractmethod
    def available(self) -> bool:
        """Does it work on this machine, for this user? Cheap, and without side effects
        that outlive the call."""

    @abstractmethod
    def confine(self, key: str, limits: Limits) -> Confinement:
        """Make a confinement named ``key`` (the allocation id) with ``limits``; raises
        OSError when it cannot after all (the next mechanism is then tried)."""


def write_text(path: str, text: str) -> None:
    """Write a control file in one ``write`` call, as the kernel expects."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def read_text(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def read_int(path: str) -> int | None:
    text = read_text(path)
    try:
        return None if text is None else int(text.split()[0])
    except (ValueError, IndexError):
        return None


def keyed_value(path: str, key: str) -> int | None:
    """The number after ``key`` in a flat keyed file (``memory.events``, ``cpu.stat``)."""
    for line in (read_text(path) or "").splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            try:
                return int(value)
            except ValueError:
                return None
    return None
