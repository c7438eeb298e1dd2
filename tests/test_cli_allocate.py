"""`allocate`, `release`, `cleanup` and `status` through the real entry point: exit codes,
stdout and stderr asserted separately."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ID = re.compile(r"^[0-9a-f]{12}$")


def test_allocate_prints_the_id_alone_and_release_frees_it(cli, ledger_path: Path) -> None:
    r = cli("allocate", "--layer", "fast_feedback", "--category", "unit")
    assert r.code == 0, r.stderr
    assert ID.match(r.stdout.strip()) and r.stdout.count("\n") == 1
    assert r.stderr == ""
    allocation_id = r.stdout.strip()
    data = json.loads(ledger_path.read_text())
    assert [a["id"] for a in data["allocations"]] == [allocation_id]
    rel = cli("release", allocation_id)
    assert (rel.code, rel.stdout, rel.stderr) == (0, f"released {allocation_id}\n", "")
    assert json.loads(ledger_path.read_text())["allocations"] == []


def test_allocate_json_is_the_allocation_object(cli, pg_server) -> None:
    r = cli("--json", "allocate", "--layer", "core_integration", "--category", "db", "--memory-mb", "256",
            "--cpu-percent", "10", "--requires", "postgresql", "--duration-minutes", "5",
            env={"DATABASE_URL": pg_server.url})
    assert r.code == 0, r.stderr
    a = r.json()
    assert a["layer"] == "core_integration" and a["category"] == "db"
    assert (a["memory_mb"], a["cpu_percent"], a["slot"], a["requires"]) == (256, 10.0, 0, ["postgresql"])
    assert 299 <= a["expires_at"] - a["created_at"] <= 301
    assert a["owner"]["pid"] is None and a["fencing_token"] >= 1
    after = cli("allocate", "--layer", "core_integration", "--category", "db", "--json")
    assert after.json()["slot"] == 1 and after.json()["fencing_token"] > a["fencing_token"]


def test_full_pool_exits_3_naming_the_dimension(cli, small_config: Path) -> None:
    for _ in range(3):
        assert cli("--config", str(small_config), "allocate", "--layer", "tiny", "--category", "c").code == 0
    r = cli("--config", str(small_config), "allocate", "--layer", "tiny", "--category", "c")
    assert r.code == 3
    assert r.stdout == ""
    assert "no capacity" in r.stderr and "instances: all 3 in use" in r.stderr
    assert "Traceback" not in r.stderr


def test_wait_with_timeout_gives_up_with_exit_3(cli, small_config: Path) -> None:
    cfg = ["--config", str(small_config)]
    assert cli(*cfg, "allocate", "--layer", "tiny", "--category", "c", "--dedicated").code == 0
    r = cli(*cfg, "allocate", "--layer", "tiny", "--category", "c", "--wait", "--timeout", "0.3")
    assert r.code == 3 and "after waiting" in r.stderr


def test_unknown_layer_exits_2_naming_the_valid_layers(cli) -> None:
    r = cli("allocate", "--layer", "nope", "--category", "c")
    assert r.code == 2 and r.stdout == ""
    assert "unknown layer 'nope'" in r.stderr
    assert "fast_feedback, core_integration, service_integration, e2e_background" in r.stderr
    r = cli("layer", "nope")
    assert r.code == 2 and "unknown layer 'nope'" in r.stderr


def test_unknown_required_service_exits_2(cli) -> None:
    r = cli("allocate", "--layer", "fast_feedback", "--category", "c", "--requires", "mysql")
    assert r.code == 2 and "unknown service 'mysql'" in r.stderr


def test_negative_and_non_numeric_values_exit_2(cli) -> None:
    for args in (["--memory-mb", "-5"], ["--cpu-percent", "-1"], ["--memory-mb", "abc"],
                 ["--duration-minutes", "0"], ["--cpu-percent", "lots"]):
        r = cli("allocate", "--layer", "fast_feedback", "--category", "c", *args)
        assert r.code == 2, (args, r.stderr)
        assert r.stdout == "" and "Traceback" not in r.stderr


def test_request_larger_than_the_pool_exits_2_naming_the_maximum(cli) -> None:
    r = cli("allocate", "--layer", "fast_feedback", "--category", "c", "--memory-mb", "600")
    assert r.code == 2
    assert "memory" in r.stderr and "at most 512MB" in r.stderr


def test_release_unknown_id_exits_4_but_releases_the_others(cli) -> None:
    good = cli("allocate", "--layer", "fast_feedback", "--category", "c").stdout.strip()
    r = cli("release", good, "deadbeef0000")
    assert r.code == 4
    assert r.stdout == f"released {good}\nnot found deadbeef0000\n"
    assert "deadbeef0000 not found" in r.stderr
    assert cli("release", good).code == 4


def test_corrupt_ledger_exits_5_and_is_left_unchanged(cli, ledger_path: Path) -> None:
    ledger_path.parent.mkdir(parents=True)
    ledger_path.write_text("{ this is not json")
    for args in (["allocate", "--layer", "fast_feedback", "--category", "c"], ["release", "abc"], ["status"],
                 ["cleanup"], ["layer", "fast_feedback"]):
        r = cli(*args)
        assert r.code == 5, (args, r.stderr)
        assert str(ledger_path) in r.stderr and "cleanup --force" in r.stderr
        assert "Traceback" not in r.stderr
    assert ledger_path.read_text() == "{ this is not json"


def test_cleanup_force_after_moving_a_corrupt_ledger_aside(cli, ledger_path: Path) -> None:
    ledger_path.parent.mkdir(parents=True)
    ledger_path.write_text("garbage")
    ledger_path.rename(ledger_path.with_suffix(".bad"))
    r = cli("cleanup", "--force")
    assert r.code == 0
    assert json.loads(ledger_path.read_text())["allocations"] == []


def test_owner_pid_allocation_is_reclaimed_when_the_process_ends(cli, ledger_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        r = cli("allocate", "--layer", "fast_feedback", "--category", "c", "--owner-pid", str(proc.pid))
        assert r.code == 0, r.stderr
        assert len(json.loads(ledger_path.read_text())["allocations"]) == 1
    finally:
        proc.communicate(b"")
    status = cli("--json", "status")
    assert status.json()["resources"]["total_allocations"] == 0
    assert cli("release", r.stdout.strip()).code == 4


def test_owner_pid_that_does_not_exist_exits_2(cli) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    r = cli("allocate", "--layer", "fast_feedback", "--category", "c", "--owner-pid", str(gone.pid))
    assert r.code == 2 and "no such process" in r.stderr
    r = cli("allocate", "--layer", "fast_feedback", "--category", "c", "--owner-pid", "999999999")
    assert r.code == 2 and "--owner-pid" in r.stderr and "from 1 to 4194304" in r.stderr


def test_expired_allocations_are_dropped_and_cleanup_reports_them(cli, ledger_path: Path) -> None:
    aid = cli("allocate", "--layer", "fast_feedback", "--category", "c", "--duration-minutes", "0.001").stdout.strip()
    data = json.loads(ledger_path.read_text())
    data["allocations"][0]["expires_at"] = data["allocations"][0]["created_at"] - 1  # already past
    ledger_path.write_text(json.dumps(data))
    r = cli("cleanup")
    assert r.code == 0 and r.stdout.startswith(f"released {aid}") and "expired" in r.stdout


def test_cleanup_force_releases_everything(cli) -> None:
    ids = {cli("allocate", "--layer", "fast_feedback", "--category", "c").stdout.strip() for _ in range(2)}
    r = cli("--json", "cleanup", "--force")
    assert r.code == 0 and {x["id"] for x in r.json()["released"]} == ids


def test_global_cap_from_environment(cli) -> None:
    env = {"MAX_PARALLEL_INSTANCES": "1"}
    assert cli("allocate", "--layer", "fast_feedback", "--category", "c", env=env).code == 0
    r = cli("allocate", "--layer", "core_integration", "--category", "c", env=env)
    assert r.code == 3 and "global instance cap" in r.stderr
    bad = cli("allocate", "--layer", "fast_feedback", "--category", "c", env={"MAX_PARALLEL_INSTANCES": "many"})
    assert bad.code == 2 and "MAX_PARALLEL_INSTANCES" in bad.stderr


def test_dedicated_allocation_keeps_the_layer_to_itself(cli) -> None:
    assert cli("allocate", "--layer", "core_integration", "--category", "c", "--dedicated").code == 0
    r = cli("allocate", "--layer", "core_integration", "--category", "c")
    assert r.code == 3 and "dedicated" in r.stderr
    assert cli("allocate", "--layer", "fast_feedback", "--category", "c").code == 0


def test_ledger_option_and_file_url(cli, tmp_path: Path) -> None:
    other = tmp_path / "other" / "l.json"
    r = cli("--ledger", f"file://{other}", "allocate", "--layer", "fast_feedback", "--category", "c")
    assert r.code == 0 and other.exists()
    assert cli("--ledger", "ftp://x/y", "status").code == 2


def test_ledger_file_is_private(cli, ledger_path: Path) -> None:
    cli("allocate", "--layer", "fast_feedback", "--category", "c")
    assert os.stat(ledger_path).st_mode & 0o777 == 0o600


def test_a_password_pasted_into_the_category_is_not_stored(cli, ledger_path: Path) -> None:
    r = cli("--json", "allocate", "--layer", "fast_feedback", "--category", "postgresql://u:pw-cat-9@h/db")
    assert r.code == 0 and "pw-cat-9" not in r.stdout
    assert "pw-cat-9" not in ledger_path.read_text()


def test_allocate_and_release_without_requires_load_no_service_module(home: Path, tmp_path: Path) -> None:
    """Every CI step starts netra-rm: without --requires nothing is checked, so no module
    of netra_rm.services (nor what they import) is loaded."""
    code = ("import contextlib, io, runpy, sys\n"
            "def cli(*args):\n"
            "    sys.argv, out = ['netra-rm', *args], io.StringIO()\n"
            "    with contextlib.redirect_stdout(out):\n"
            "        try:\n            runpy.run_module('netra_rm', run_name='__main__')\n"
            "        except SystemExit:\n            pass\n"
            "    return out.getvalue().strip()\n"
            "ident = cli('allocate', '--layer', 'fast_feedback', '--category', 'x')\n"
            "print(cli('release', ident) == f'released {ident}', file=sys.stderr)\n"
            "print(sorted(m for m in sys.modules if m.startswith('netra_rm.services')), file=sys.stderr)\n")
    env = {**os.environ, "NETRA_RM_LEDGER": str(tmp_path / "ledger.json")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert done.stderr.strip().splitlines()[-2:] == ["True", "[]"], done.stderr
