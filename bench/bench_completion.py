"""Shell completion: what one TAB costs, beside `python -c "import typer"`.

Each TAB in bash, zsh and fish starts `netra-rm` with the variables its completion script
sets (fish starts it twice per TAB: once to ask whether there are candidates, once for
them). Prints, from one run, the median wall time of each such call, for the command
names, the layer names (the configuration is read) and the allocation ids (the ledger is
read), beside the median of `python -c "import typer"`.

Goal: every call at most 1.3x the bare Typer import.

Both sides run from byte-compiled modules, as after an install (pip compiles what it
installs; Typer's are): netra-rm's are compiled first, since an editable checkout run with
PYTHONDONTWRITEBYTECODE=1 would otherwise compile every module again on each TAB.

usage: python bench/bench_completion.py [--runs N]
"""

from __future__ import annotations

import argparse
import compileall
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import entry_point

GOAL = 1.3


def median_ms(argv: list[str], env: dict[str, str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def tab(shell: str, line: str, fish_action: str = "get-args") -> dict[str, str]:
    """The variables ``completions/`` sets for a TAB after ``line``."""
    if shell == "bash":
        words = line.split()
        return {"COMP_WORDS": line, "COMP_CWORD": str(len(words) if line.endswith(" ") else len(words) - 1),
                "_NETRA_RM_COMPLETE": "complete_bash"}
    extra = {"_TYPER_COMPLETE_FISH_ACTION": fish_action} if shell == "fish" else {}
    return {"_TYPER_COMPLETE_ARGS": line, "_NETRA_RM_COMPLETE": f"complete_{shell}", **extra}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=21, help="calls per figure (default 21)")
    options = parser.parse_args()
    netra_rm = entry_point()
    import netra_rm as package

    compileall.compile_dir(Path(package.__file__).parent, quiet=1)  # as an install does
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "XDG_STATE_HOME": str(Path(tmp) / "state"), "XDG_CACHE_HOME": str(Path(tmp) / "cache"),
               "NETRA_RM_LEDGER": str(Path(tmp) / "ledger.json")}
        env.pop("NETRA_RM_CONFIG", None)
        for _ in range(3):
            subprocess.run([*netra_rm, "allocate", "--layer", "fast_feedback", "--category", "bench"], env=env,
                           stdout=subprocess.DEVNULL, check=True)
        lines = {"commands": "netra-rm ", "layer names": "netra-rm layer ", "allocation ids": "netra-rm release "}
        calls = [(shell, what, tab(shell, line, action))
                 for shell in ("bash", "zsh", "fish") for what, line in lines.items()
                 for action in (("is-args", "get-args") if shell == "fish" else ("",))]
        for _, _, extra in calls[:3]:  # warm the configuration cache and the page cache
            subprocess.run(netra_rm, env={**env, **extra}, stdout=subprocess.DEVNULL, check=False)
        typer_ms = median_ms([sys.executable, "-c", "import typer"], env, options.runs)
        rows = []
        worst = 0.0
        for shell, what, extra in calls:
            ours = median_ms(netra_rm, {**env, **extra}, options.runs)
            label = f"{what} ({extra['_TYPER_COMPLETE_FISH_ACTION']})" if shell == "fish" else what
            ratio = ours / typer_ms
            worst = max(worst, ratio)
            rows.append((shell, label, ours, ratio))
    print(f"one TAB: the netra-rm call each shell makes, median of {options.runs} "
          f"(python -c \"import typer\": {typer_ms:.1f} ms)")
    print(f"{'shell':<6} {'completing':<28} {'netra-rm':>10} {'import typer':>13} {'ratio':>7}")
    for shell, label, ours, ratio in rows:
        print(f"{shell:<6} {label:<28} {ours:>7.1f} ms {typer_ms:>10.1f} ms {ratio:>6.2f}x")
    verdict = "met" if worst <= GOAL else "NOT met"
    print(f"goal: every call at most {GOAL}x `python -c \"import typer\"`: {verdict} (worst {worst:.2f}x)")
    return 0 if worst <= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
