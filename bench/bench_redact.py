"""How long does masking secrets take on large values? netra-rm beside stdlib peers.

Masking runs over every journal line, error, command line and line of start-command
output, so it must be linear: a 1 MB value in under 50 ms (issue 12; before, 100 KB
took 10-40 s). Prints, from one run, the best of N times per 1 MB input (the cost itself,
without what other processes on a shared machine add; every column is measured alike) of:

- ``mask_text`` (free text: each URL's password and secret query values) and
  ``mask_command`` (also ``NAME=value`` secrets and ``--password S``, what start-command
  logs go through), with three configured secrets;
- the peers on the same text: ``urllib.parse.urlsplit`` (the stdlib's parse of one URL,
  which finds no secret in free text and splits a raw ``/``, ``#`` or ``@`` password
  wrongly) and ``str.replace`` of one secret (a single scan: the floor of any masking).

Usage: ``python bench/bench_redact.py [--runs N] [--size BYTES]``
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from netra_rm.config.commands import mask_command  # noqa: E402
from netra_rm.redact import mask_text  # noqa: E402

GOAL_MS = 50.0
SECRETS = ["pa/ss#w@rd", "s3cr3t-token", "hunter2"]


def inputs(size: int) -> dict[str, str]:
    """Texts of ``size`` characters that stressed the old patterns, and a realistic log."""
    log_line = "2026-01-01 connecting to redis://:pa/ss#w@rd@cache:6379/0 as app password=hunter2 ok\n"
    return {
        "one long word (no URL)": "a" * size,
        "one URL, 1 MB password": "redis://u:" + "x" * (size - 20) + "@h:6379/0",
        "log lines with URLs": (log_line * (size // len(log_line) + 1))[:size],
        "JSON with password= everywhere": ('{"category":"password=' + "y" * 40 + '",' * 1) * (size // 64),
        "query string, many parameters": "http://h/?" + "&".join(f"p{i}=v{i}&token=t{i}" for i in range(size // 24)),
        "query string, encoded names": "http://h/?" + "&".join(f"p%20{i}=v{i}&t%6Fken=t{i}" for i in range(size // 30)),
    }


def best_ms(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--size", type=int, default=1_000_000)
    args = parser.parse_args()
    print(f"Masking a {args.size / 1e6:g} MB value (best of {args.runs} runs, ms)")
    header = f"{'input':<34}{'mask_text':>11}{'mask_command':>14}{'urlsplit':>10}{'str.replace':>13}  goal"
    print(header)
    worst = 0.0
    for name, text in inputs(args.size).items():
        ours = best_ms(lambda t=text: mask_text(t, SECRETS), args.runs)
        command = best_ms(lambda t=text: mask_command(t, SECRETS), args.runs)
        split = best_ms(lambda t=text: (urlsplit.cache_clear(), urlsplit(t)), args.runs)  # type: ignore[attr-defined]
        replace = best_ms(lambda t=text: t.replace(SECRETS[0], "***"), args.runs)
        slowest = max(ours, command)
        worst = max(worst, slowest)
        verdict = "ok" if slowest < GOAL_MS else "MISSED"
        print(f"{name:<34}{ours:>11.1f}{command:>14.1f}{split:>10.1f}{replace:>13.1f}  < {GOAL_MS:g} {verdict}")
    print(f"slowest: {worst:.1f} ms per {args.size / 1e6:g} MB")


if __name__ == "__main__":
    main()
