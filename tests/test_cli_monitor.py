"""`netra-rm monitor` on a real pseudo-terminal: the live view, and Ctrl-C exits 0."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

pexpect = pytest.importorskip("pexpect")


def spawn(args: list[str], ledger: Path) -> "pexpect.spawn":
    script = Path(sys.executable).with_name("netra-rm")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "netra_rm"]
    env = {**os.environ, "NETRA_RM_LEDGER": str(ledger), "COLUMNS": "140", "LINES": "60", "TERM": "xterm",
           "DATABASE_URL": "postgresql://u:pw-Q7@127.0.0.1:9/x"}
    # ^C echoed by the terminal can split a UTF-8 character: decode leniently
    return pexpect.spawn(command[0], [*command[1:], *args], env=env, encoding="utf-8", codec_errors="replace",
                         timeout=20, dimensions=(60, 140))


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
