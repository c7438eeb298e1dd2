"""`netra-rm monitor` on a real pseudo-terminal: the live view, and Ctrl-C exits 0."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pexpect = pytest.importorskip("pexpect")


def spawn(args: list[str], ledger: Path, *, rows: int = 60, cols: int = 140) -> "pexpect.spawn":
    script = Path(sys.executable).with_name("netra-rm")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "netra_rm"]
    # the terminal's own size, as a terminal reports it (not COLUMNS/LINES, which would fix it)
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env = {**env, "NETRA_RM_LEDGER": str(ledger), "TERM": "xterm",
           "DATABASE_URL": "postgresql://u:pw-Q7@127.0.0.1:9/x"}
    # ^C echoed by the terminal can split a UTF-8 character: decode leniently
    return pexpect.spawn(command[0], [*command[1:], *args], env=env, encoding="utf-8", codec_errors="replace",
                         timeout=20, dimensions=(rows, cols))


def test_live_view_shows_pools_and_memory_and_ctrl_c_exits_0(cli, ledger_path: Path) -> None:
    cli("allocate", "--layer", "core_integration", "--category", "live_db")
    child = spawn(["monitor", "--interval", "0.5"], ledger_path)
    child.expect("core_integration")
    child.expect("live_db")
    screen = child.before + child.after
    child.expect("(?i)memory")
    child.sendintr()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, screen
    assert "Traceback" not in child.before
    assert "pw-Q7" not in screen + child.before


def test_seed_monitor_flag_on_a_terminal_stops_after_count(ledger_path: Path) -> None:
    child = spawn(["--monitor", "--interval", "0.5", "--count", "2"], ledger_path)
    child.expect("fast_feedback")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


# -- small terminals, and terminals that change size ------------------------------------

ALERTING = """
thresholds:
  hold_seconds: 0
  memory_percent: {warning: 0.01, critical: 0.02}
  processes: {warning: 1, critical: 2}
"""


def read_screen(child: "pexpect.spawn", screen: Any, stream: Any, until: Callable[[list[str]], bool],
                timeout: float = 30.0) -> list[str]:
    """Feed what the child draws to a terminal emulator until ``until(rows)`` holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            stream.feed(child.read_nonblocking(65536, timeout=0.5))
        except pexpect.TIMEOUT:
            pass
        if until(screen.display):
            return list(screen.display)
    raise AssertionError("the screen never showed what was expected:\n" + "\n".join(screen.display))


@pytest.mark.parametrize("rows, cols", [(24, 80), (45, 160)])
def test_monitor_puts_alerts_pools_and_allocations_first_on_any_terminal(
        cli, ledger_path: Path, write_config: Callable[..., Path], rows: int, cols: int) -> None:
    pyte = pytest.importorskip("pyte")
    config = write_config(ALERTING)
    ids = [cli("--config", str(config), "allocate", "--layer", layer, "--category", "c").stdout.strip()
           for layer in ("core_integration", "service_integration", "e2e_background")]
    screen = pyte.Screen(cols, rows)
    stream = pyte.Stream(screen)
    child = spawn(["--config", str(config), "monitor", "--interval", "0.5"], ledger_path, rows=rows, cols=cols)
    try:
        def complete(display: list[str]) -> bool:
            text = "\n".join(display)
            return "critical" in text and all(i in text for i in ids) and "checking" not in text

        display = read_screen(child, screen, stream, complete)
        text = "\n".join(display)
        assert display[0].startswith("netra-rm monitor") and "alert(s)" in display[0]
        assert "Alerts" in text and "memory at" in text and "processes at" in text
        assert "Pools" in text and "e2e_background" in text
        for ident in ids:
            assert ident in text  # whole, never cut
        if rows >= 45:
            assert "System" in text and "Services" in text and "postgresql" in text
        else:
            assert "not shown on 80x24" in display[-1] or "machine:" in text
        child.sendintr()
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0


def test_monitor_lays_itself_out_again_when_the_terminal_shrinks(cli, ledger_path: Path,
                                                                 write_config: Callable[..., Path]) -> None:
    pyte = pytest.importorskip("pyte")
    config = write_config(ALERTING)
    ident = cli("--config", str(config), "allocate", "--layer", "core_integration", "--category", "c").stdout.strip()
    screen = pyte.Screen(160, 45)
    stream = pyte.Stream(screen)
    child = spawn(["--config", str(config), "monitor", "--interval", "2"], ledger_path, rows=45, cols=160)
    try:
        read_screen(child, screen, stream, lambda d: "System" in "\n".join(d) and ident in "\n".join(d))
        child.setwinsize(24, 80)
        screen.resize(24, 80)
        display = read_screen(child, screen, stream,
                              lambda d: "not shown on 80x24" in "\n".join(d) or "machine:" in "\n".join(d),
                              timeout=20)
        text = "\n".join(display)
        assert display[0].startswith("netra-rm monitor")
        assert "Alerts" in text and ident in text and "Pools" in text
        child.sendintr()
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
