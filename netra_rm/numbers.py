"""One rule for every number netra-rm accepts: finite, and inside a documented range.

Options, environment variables, configuration values and ledger URL parameters all go
through :func:`problem` (or :func:`finite`, which raises), so NaN, infinities, values
past the maxima below and negatives where they make no sense are refused the same way
everywhere: exit 2, naming the option and the accepted range. A NaN compares false with
everything, so a check written as ``if value > maximum`` lets it through; these checks are
written the other way round (``minimum <= value <= maximum``). The maxima are listed in
the README ("Numbers").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from netra_rm.errors import UsageError


@dataclass(frozen=True)
class Range:
    """The numbers a setting accepts: ``minimum`` to ``maximum`` (the minimum itself
    excluded when ``above_minimum``), whole numbers only when ``integer``."""

    minimum: float
    maximum: float
    integer: bool = False
    above_minimum: bool = False
    unit: str = ""

    def describe(self) -> str:
        """The range in words, e.g. ``a number of seconds from 0 to 604800``."""
        kind = "a whole number" if self.integer else "a number"
        if self.unit == "percent":
            kind = "a percentage"
        elif self.unit:
            kind += f" of {self.unit}"
        if self.above_minimum:
            return f"{kind} above {_show(self.minimum)} and at most {_show(self.maximum)}"
        return f"{kind} from {_show(self.minimum)} to {_show(self.maximum)}"

    def within(self, *, maximum: float) -> Range:
        """This range, with a lower maximum (a layer's default may not exceed its pool)."""
        return Range(self.minimum, min(self.maximum, maximum), self.integer, self.above_minimum, self.unit)


def _show(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


# -- the documented ranges ------------------------------------------------------------------

#: Memory in MB: requests, pools, caps, the machine's reserve (1 PiB at most).
MEMORY_MB = Range(0, 2**30, integer=True, unit="MB")
#: Memory of a pool or cap, which must hold something.
POOL_MEMORY_MB = Range(1, 2**30, integer=True, unit="MB")
#: CPU in percent of one machine: requests, a layer's pool, its defaults.
CPU_PERCENT = Range(0, 100, unit="percent")
#: CPU of a layer's pool (more than nothing).
POOL_CPU_PERCENT = Range(0, 100, above_minimum=True, unit="percent")
#: CPU caps and shared pools, which may span a fleet of machines.
FLEET_CPU_PERCENT = Range(0, 1_000_000, above_minimum=True, unit="percent")
#: Parallel instances of a pool or cap.
INSTANCES = Range(1, 1_000_000, integer=True)
#: How long an allocation is held before it expires (a year at most).
DURATION_MINUTES = Range(0, 525_600, above_minimum=True, unit="minutes")
#: How long a command waits: --timeout of allocate, run, layer, up and down (a week at most).
WAIT_SECONDS = Range(0, 604_800, unit="seconds")
#: run --kill-after: seconds from SIGTERM to SIGKILL when an allocation is lost (a day at most).
KILL_SECONDS = Range(0, 86_400, unit="seconds")
#: A category's priority (configuration ``categories:``).
PRIORITY = Range(-1000, 1000, integer=True)
#: The longest wait for the file ledger's lock (NETRA_RM_LOCK_TIMEOUT; a day at most).
LOCK_SECONDS = Range(0, 86_400, unit="seconds")
#: A connect or reply timeout: service checks, a ledger URL's ``timeout=`` (an hour at most).
NETWORK_SECONDS = Range(0, 3_600, above_minimum=True, unit="seconds")
#: A lease on a shared ledger (a day at most).
LEASE_SECONDS = Range(0, 86_400, above_minimum=True, unit="seconds")
#: Seconds between monitor samples.
INTERVAL_SECONDS = Range(0.5, 86_400, unit="seconds")
#: Seconds between the Python API's background samples.
SAMPLE_SECONDS = Range(0, 86_400, above_minimum=True, unit="seconds")
#: Seconds between the monitor's service checks (0: none).
SERVICES_INTERVAL_SECONDS = Range(0, 86_400, unit="seconds")
#: How long a threshold must be crossed before it counts.
HOLD_SECONDS = Range(0, 86_400, unit="seconds")
#: Counts: monitor --count.
COUNT = Range(1, 1_000_000_000, integer=True)
#: history --limit.
EVENTS = Range(0, 1_000_000, integer=True)
#: A process id (Linux allows up to 2**22).
PID = Range(1, 2**22, integer=True)
#: a request's place in the wait queue (higher first)
PRIORITY = Range(-1000, 1000, integer=True)
#: a waiter's priority rises by one for every this many seconds it waits
AGING_SECONDS = Range(0, 31_536_000, above_minimum=True, unit="seconds")
#: NETRA_RM_JOURNAL_MAX_BYTES (1 TiB at most).
JOURNAL_BYTES = Range(1, 2**40, integer=True, unit="bytes")
#: Thresholds: percentages, load per core, process counts.
PERCENT = Range(0, 100, unit="percent")
LOAD_PER_CORE = Range(0, 10_000)
PROCESSES = Range(0, 2**22)


def problem(value: object, rng: Range) -> str | None:
    """Why ``value`` is not acceptable for ``rng``, as the end of a sentence (``must be a
    number from 0 to 100, got nan``), or None when it is. ``value`` may be a number or
    the text a user typed."""
    number = _number(value, rng.integer)
    ok = (number is not None and (isinstance(number, int) or math.isfinite(number))
          and (rng.minimum < number if rng.above_minimum else rng.minimum <= number) and number <= rng.maximum)
    return None if ok else f"must be {rng.describe()}, got {_given(value)}"


def finite(name: str, value: object, rng: Range, *, remediation: str | None = None) -> float | int:
    """``value`` as a number within ``rng``; a :class:`UsageError` naming ``name`` and the
    range otherwise (with ``remediation`` as its fix, when given)."""
    why = problem(value, rng)
    if why is not None:
        raise UsageError(f"{name} {why}.", remediation=[remediation or f"Give {name} {rng.describe()}."])
    number = _number(value, rng.integer)
    assert number is not None
    return int(number) if rng.integer else number


def _number(value: object, integer: bool) -> float | int | None:
    """``value`` as an int or float, or None when it is not one (booleans are not numbers;
    an integer setting takes 3 or 3.0, not 3.5)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text)
        except ValueError:
            try:
                value = float(text)
            except ValueError:
                return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if integer:
            return int(value) if value.is_integer() else None
        return value
    return None


def _given(value: object) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."
