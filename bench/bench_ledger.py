"""Foundation benchmark: CLI start-up and ledger throughput, beside their baselines.

Prints, from one run:
  * the median wall time of `netra-rm allocate` + `netra-rm release`, per command, beside
    `python -c "import typer"` (goal: each command within 2x of the bare Typer import);
  * allocate+release pairs per second through the Python API beside a bare loop of
    flock + JSON read + write + fsync + rename, at 0, 100 and 1,000 active allocations
    (goal: the API at 70% or more of the bare loop).

usage: python bench/bench_ledger.py [--runs N] [--seconds S]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import bare_cycle, entry_point

BENCH_CONFIG = """
layers:
  bench:
    services: []
    pool: {memory_mb: 1000000, cpu_percent: 100, instances: 100000}
limits: {max_memory_mb: 10000000, max_cpu_percent: 100, max_parallel_instances: 100000}
"""


def median_ms(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def cli_figures(workdir: Path, runs: int) -> dict[str, float]:
    # Bytecode is cached as an installed package would have it (pip compiles at install);
    # some containers set PYTHONDONTWRITEBYTECODE, which would recompile netra_rm at every start.
    base = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")}
    env = {**base, "NETRA_RM_LEDGER": str(workdir / "cli-ledger.json"), "NETRA_RM_CONFIG": "",
           "PYTHONPYCACHEPREFIX": str(workdir / "pycache"), "XDG_CACHE_HOME": str(workdir / "cache")}
    cmd = entry_point()
    ids: list[str] = []

    def allocate() -> None:
        out = subprocess.run([*cmd, "allocate", "--layer", "fast_feedback", "--category", "bench"],
                             capture_output=True, text=True, env=env, check=True)
        ids.append(out.stdout.strip())

    def release() -> None:
        subprocess.run([*cmd, "release", ids.pop()], capture_output=True, env=env, check=True)

    def typer_import() -> None:
        subprocess.run([sys.executable, "-c", "import typer"], check=True, env=env)

    allocate(), release()  # warm the page cache
    alloc_times, release_times = [], []
    for _ in range(runs):
        alloc_times.append(median_ms(allocate, 1))
        release_times.append(median_ms(release, 1))
    return {"allocate": statistics.median(alloc_times), "release": statistics.median(release_times),
            "import typer": median_ms(typer_import, runs)}


def seed_ledger(path: Path, active: int) -> None:
    allocations = [{"id": f"seed{i:08d}", "layer": "bench", "category": "seed", "memory_mb": 1, "cpu_percent": 0.0,
                    "dedicated": False, "requires": [], "created_at": time.time(), "expires_at": time.time() + 86400,
                    "slot": i, "fencing_token": i + 1, "owner": {"host": "bench-host", "user": "bench", "pid": None,
                                                                "start": None}}
                   for i in range(active)]
    path.write_text(json.dumps({"schema_version": 1, "fencing_counter": active, "allocations": allocations,
                                "waiters": []}))


def api_pairs_per_second(workdir: Path, active: int, seconds: float) -> float:
    from netra_rm import ResourceRequirements, create_resource_manager

    config = workdir / "bench.yaml"
    config.write_text(BENCH_CONFIG)
    ledger = workdir / f"api-{active}.json"
    seed_ledger(ledger, active)
    rm = create_resource_manager(enable_monitoring=False, config=str(config), ledger=str(ledger), env={})
    requirements = ResourceRequirements(min_memory_mb=1, min_cpu_percent=0)
    pairs, deadline = 0, time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < deadline:
        allocation_id = rm.allocate_resources("bench", "bench", requirements)
        assert allocation_id is not None
        assert rm.release_resources(allocation_id)
        pairs += 1
    return pairs / (time.perf_counter() - start)


def bare_pairs_per_second(workdir: Path, active: int, seconds: float) -> float:
    """The physical limit of this design: two locked read-modify-write cycles per pair."""
    path = workdir / f"bare-{active}.json"
    seed_ledger(path, active)
    lock = workdir / f"bare-{active}.json.lock"

    tmp = path.with_name(path.name + ".tmp")

    def cycle(change) -> None:
        bare_cycle(path, lock, tmp, change)

    record = {"id": "x", "layer": "bench", "memory_mb": 1}
    pairs, deadline = 0, time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < deadline:
        cycle(lambda d: d["allocations"].append(record))
        cycle(lambda d: d["allocations"].pop())
        pairs += 1
    return pairs / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=21, help="CLI runs per command (median)")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per throughput measurement")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per measurement (median)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="netra-rm-bench-") as tmp:
        workdir = Path(tmp)
        cli = cli_figures(workdir, args.runs)
        rows = []
        for active in (0, 100, 1000):
            # alternate short rounds so disk hiccups hit both loops alike; report medians
            api_rounds, bare_rounds = [], []
            for _ in range(args.rounds):
                api_rounds.append(api_pairs_per_second(workdir, active, args.seconds / args.rounds))
                bare_rounds.append(bare_pairs_per_second(workdir, active, args.seconds / args.rounds))
            rows.append((active, statistics.median(api_rounds), statistics.median(bare_rounds)))

    print("CLI start-up (median wall time, ms)")
    print(f"{'command':<34}{'netra-rm':>10}{'import typer':>14}{'ratio':>8}  goal")
    for name in ("allocate", "release"):
        ratio = cli[name] / cli["import typer"]
        print(f"{'netra-rm ' + name:<34}{cli[name]:>10.1f}{cli['import typer']:>14.1f}{ratio:>7.2f}x  <= 2.00x "
              f"{'ok' if ratio <= 2 else 'MISSED'}")
    pair = cli["allocate"] + cli["release"]
    print(f"{'allocate + release (pair)':<34}{pair:>10.1f}{2 * cli['import typer']:>14.1f}"
          f"{pair / (2 * cli['import typer']):>7.2f}x")
    print()
    print("Allocate+release pairs per second, one process")
    print(f"{'active allocations':<20}{'Python API':>12}{'bare flock+JSON':>17}{'share':>8}  goal")
    for active, api, bare in rows:
        share = api / bare
        print(f"{active:<20}{api:>12.0f}{bare:>17.0f}{share:>7.0%}  >= 70% {'ok' if share >= 0.7 else 'MISSED'}")


if __name__ == "__main__":
    main()
