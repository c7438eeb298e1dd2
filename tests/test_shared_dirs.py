"""Another local user prepares a trap in a shared directory (1777, sticky, like /tmp);
root's next `netra-rm up`, `down` or configuration load must fall into none of them: it
refuses with exit 5 naming the file, its owner and mode, or (for the parse cache) does
without, and touches nothing outside what is its own.

The attacker's steps run as a real unprivileged user (``other_user``, see tests/hostile.py);
netra-rm runs as root, the user the issue's attacks aimed at.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import zlib
from pathlib import Path

from hostile import LocalUser

DOWN_SERVICE = """
services:
  redis:
    kind: redis
    url: redis://127.0.0.1:9/0
    start: [sh, -c, "echo started-by-the-file; exit 3"]
"""


def _owner(path: Path) -> int:
    return os.lstat(path).st_uid


def _victim(tmp_path: Path) -> Path:
    """A file only root may write, outside the shared directory: what an attacker aims at."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    return victim


def test_a_log_symlink_planted_in_the_logs_directory_is_refused(cli, write_config, shared_dir: Path,
                                                                 tmp_path: Path, other_user: LocalUser) -> None:
    victim = _victim(tmp_path)
    ledger = shared_dir / "ledger.json"
    other_user.sh('mkdir "$1.logs" && chmod 777 "$1.logs" && ln -s "$2" "$1.logs/redis.log"', str(ledger),
                  str(victim))
    r = cli("--config", str(write_config(DOWN_SERVICE)), "--ledger", str(ledger), "up", "redis", "--timeout", "20")
    assert r.code == 5, r.stderr
    assert f"{ledger}.logs is not yours (owned by {other_user.name} (uid {other_user.uid})" in r.stderr
    assert "mode 0777" in r.stderr and "Traceback" not in r.stderr
    assert victim.read_text() == "precious\n"


def test_a_logs_directory_that_is_a_link_to_the_attackers_directory_is_refused(
        cli, write_config, shared_dir: Path, other_user: LocalUser) -> None:
    ledger = shared_dir / "ledger.json"
    other_user.sh('mkdir -m 700 "$1.mine" && ln -s "$1.mine" "$1.logs"', str(ledger))
    r = cli("--config", str(write_config(DOWN_SERVICE)), "--ledger", str(ledger), "up", "redis", "--timeout", "20")
    assert r.code == 5 and f"{ledger}.logs is a symbolic link" in r.stderr, r.stderr
    assert os.listdir(f"{ledger}.mine") == []


def test_a_record_planted_for_down_is_refused_and_its_process_survives(
        cli, write_config, shared_dir: Path, other_user: LocalUser) -> None:
    """A forged `<ledger>.started.json` names a process; root's `down` would signal it."""
    import subprocess

    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        ledger = shared_dir / "ledger.json"
        record = {"schema_version": 1, "services": {"redis": {
            "started_at": 1.0, "host": os.uname().nodename, "pid": bystander.pid, "pid_start": None}}}
        other_user.sh('printf %s "$2" > "$1.started.json"', str(ledger), json.dumps(record))
        config = write_config(DOWN_SERVICE.replace("    start:", "    stop: [sh, -c, 'exit 0']\n    start:"))
        for command in (["down", "redis"], ["up", "redis", "--timeout", "20"], ["--json", "status"]):
            r = cli("--config", str(config), "--ledger", str(ledger), *command)
            if command[0] == "--json":
                assert r.code == 5 or "started_by_netra_rm" not in r.stdout, r.stderr
                continue
            assert r.code == 5, (command, r.stderr)
            assert f"{ledger}.started.json is not yours (owned by {other_user.name}" in r.stderr
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_a_lock_file_planted_for_up_is_refused(cli, write_config, shared_dir: Path, other_user: LocalUser) -> None:
    ledger = shared_dir / "ledger.json"
    other_user.sh(': > "$1.started.lock"', str(ledger))
    r = cli("--config", str(write_config(DOWN_SERVICE)), "--ledger", str(ledger), "up", "redis", "--timeout", "20")
    assert r.code == 5 and f"{ledger}.started.lock is not yours" in r.stderr, r.stderr


def test_up_in_a_shared_directory_keeps_its_own_files_private(cli, write_config, shared_dir: Path) -> None:
    """What root creates beside a ledger in /tmp: a 0700 logs directory, 0600 files."""
    ledger = shared_dir / "ledger.json"
    r = cli("--config", str(write_config(DOWN_SERVICE)), "--ledger", str(ledger), "up", "redis", "--timeout", "20")
    assert r.code == 1 and "exited with code 3" in r.stderr, r.stderr
    logs = Path(f"{ledger}.logs")
    assert stat.S_IMODE(logs.stat().st_mode) == 0o700
    assert stat.S_IMODE((logs / "redis.log").stat().st_mode) == 0o600
    assert "started-by-the-file" in (logs / "redis.log").read_text()
    assert stat.S_IMODE(Path(f"{ledger}.started.lock").stat().st_mode) == 0o600


def test_a_planted_parse_cache_entry_never_runs_the_attackers_command(
        cli, write_config, shared_dir: Path, other_user: LocalUser) -> None:
    """The issue's attack: with a shared XDG_CACHE_HOME, another user plants the parsed form
    of root's configuration file with their own start command in it."""
    config = write_config(DOWN_SERVICE)
    pwned = shared_dir / "pwned"
    cache_home = shared_dir / "cache"
    text = config.read_text()
    planted = {"version": 2, "sha256": hashlib.sha256(text.encode()).hexdigest(),
               "data": {"services": {"redis": {"kind": "redis", "url": "redis://127.0.0.1:9/0",
                                               "start": ["sh", "-c", f"touch {pwned}; exit 3"]}}}}
    name = f"config-{hashlib.sha256(str(config).encode()).hexdigest()[:24]}.json"
    # and the same in the format of the cache before this fix (keyed by the path's CRC-32)
    old_name = f"config-{zlib.crc32(str(config).encode()):08x}.json"
    old_entry = {"version": 1, "source": str(config), "text": text, "data": planted["data"]}
    other_user.sh('mkdir -p -m 777 "$1/netra-rm" && chmod 777 "$1" && printf %s "$3" > "$1/netra-rm/$2" && '
                  'printf %s "$5" > "$1/netra-rm/$4" && chmod 666 "$1/netra-rm/$2" "$1/netra-rm/$4"',
                  str(cache_home), name, json.dumps(planted), old_name, json.dumps(old_entry))
    env = {"XDG_CACHE_HOME": str(cache_home)}
    ledger = shared_dir / "root-ledger" / "ledger.json"
    shown = cli("--config", str(config), "--json", "config", "show", env=env)
    assert shown.code == 0 and shown.json()["services"]["redis"]["start"] == ["sh", "-c",
                                                                              "echo started-by-the-file; exit 3"]
    r = cli("--config", str(config), "--ledger", str(ledger), "up", "redis", "--timeout", "20", env=env)
    assert r.code == 1 and "started-by-the-file" in r.stderr, r.stderr
    assert not pwned.exists()
    assert _owner(cache_home / "netra-rm" / name) == other_user.uid  # left alone, not used, not replaced
