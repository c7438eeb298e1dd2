"""What measuring and enforcing cost `netra-rm run`, beside the same run without them.

Prints, from one run:
  * the median wall time of `netra-rm run ... -- true` with measuring off (`--no-measure`),
    on (the default) and with `--enforce` (the first mechanism that works here), and the
    difference to measuring off (goals: at most 10 ms for measuring, 25 ms for enforcing);
  * the CPU that `run` itself uses while a command runs (`-- sleep S`), with measuring off
    and on, as a share of one core (goal: sampling costs under 0.5 % of a core).

usage: python bench/bench_enforce.py [--runs N] [--seconds S]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from benchlib import entry_point

WIDTH = 60

CONFIG = """
layers:
  bench:
    services: []
    pool: {memory_mb: 100000, cpu_percent: 100, instances: 64}
limits: {max_memory_mb: 10000000, max_cpu_percent: 100, max_parallel_instances: 100000}
machine: {check_memory: false}
"""


def median_ms(argv: list[str], runs: int, env: dict[str, str]) -> float:
    subprocess.run(argv, env=env, check=True, capture_output=True)  # warm up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def wrapper_cpu(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(CPU seconds of `run` and its command, wall seconds) for one run."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, _, usage = os.wait4(proc.pid, 0)
    return usage.ru_utime + usage.ru_stime, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "bench.yaml").write_text(CONFIG)
        env = {**os.environ, "NETRA_RM_CONFIG": str(work / "bench.yaml"), "NETRA_RM_LEDGER": str(work / "l.json"),
               "PYTHONPYCACHEPREFIX": str(work / "pycache")}
        run = [*entry_point(), "run", "--layer", "bench", "--category", "x", "--memory-mb", "512", "--cpu-percent",
               "50"]
        off = median_ms([*run, "--no-measure", "--", "true"], args.runs, env)
        on = median_ms([*run, "--", "true"], args.runs, env)
        enforced = median_ms([*run, "--enforce", "--", "true"], args.runs, env)
        mechanism = subprocess.run([*run, "--enforce", "-v", "--", "true"], env=env, capture_output=True,
                                   text=True).stderr
        used = next((line.rsplit(" with ", 1)[1] for line in mechanism.splitlines()
                     if line.startswith("netra-rm: enforcing ")), "?")
        print(f"{'netra-rm run ... -- true':<{WIDTH}} {'median ms':>10} {'vs off':>8}  goal")
        print(f"{'  measuring off (--no-measure)':<{WIDTH}} {off:>10.1f} {'':>8}")
        print(f"{'  measuring on (default)':<{WIDTH}} {on:>10.1f} {on - off:>+8.1f}  <= +10 ms")
        print(f"{'  --enforce (' + used + ')':<{WIDTH}} {enforced:>10.1f} {enforced - off:>+8.1f}  <= +25 ms")
        print()
        sleep = ["--", "sleep", f"{args.seconds:g}"]
        cpu_off, wall_off = wrapper_cpu([*run, "--no-measure", *sleep], env)
        cpu_on, wall_on = wrapper_cpu([*run, *sleep], env)
        share_off = cpu_off / wall_off * 100
        share_on = cpu_on / wall_on * 100
        title = f"CPU of run -- sleep {args.seconds:g} (start-up included)"
        print(f"{title:<{WIDTH}} {'% core':>10} {'vs off':>8}  goal")
        print(f"{'  measuring off':<{WIDTH}} {share_off:>10.2f}")
        print(f"{'  measuring on: sampling every 0.25 s':<{WIDTH}} {share_on:>10.2f} {share_on - share_off:>+8.2f}  "
              "< +0.5 %")


if __name__ == "__main__":
    main()
