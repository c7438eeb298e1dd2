"""Configuration files that try to hurt: YAML bombs, huge files, FIFOs and devices are
refused at once (exit 2); the parse cache is private, keyed by the file's whole text and
written only for a configuration that passed validation."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from pathlib import Path

import pytest

from netra_rm.config import cache, load_config
from netra_rm.config.load import MAX_ALIASES, MAX_CONFIG_BYTES
from netra_rm.errors import ConfigError


def billion_laughs(levels: int = 9) -> str:
    """The classic: each level a list of nine aliases of the level below."""
    lines = ['lol0: &lol0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels + 1):
        lines.append(f"lol{i}: &lol{i} [{', '.join([f'*lol{i - 1}'] * 9)}]")
    return "\n".join(lines) + "\n"


def _entries(home: Path) -> list[Path]:
    return sorted((home / "cache" / "netra-rm").glob("config-*.json"))


# -- bombs and odd files ---------------------------------------------------------------------

def test_a_billion_laughs_is_refused_at_once_and_never_cached(write_config, home: Path) -> None:
    path = write_config(billion_laughs(9))
    assert len(path.read_bytes()) < 1000  # under a kilobyte, a billion values once expanded
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=r"aliases expand it by more than 100000 values"):
        load_config(path, env={})
    assert time.perf_counter() - started < 1.0
    assert all(e.stat().st_size < 100_000 for e in _entries(home))


def test_too_many_aliases_and_an_alias_inside_itself_are_refused(write_config) -> None:
    many = "base: &b 1\nlist:\n" + "".join("  - *b\n" for _ in range(MAX_ALIASES + 1))
    with pytest.raises(ConfigError, match=rf"more than {MAX_ALIASES} aliases"):
        load_config(write_config(many), env={})
    with pytest.raises(ConfigError, match="refers to a value that contains it"):
        load_config(write_config("loop: &l [1, *l]\n"), env={})


def test_ordinary_aliases_and_merge_keys_still_work(write_config) -> None:
    text = ("layers:\n  a:\n    services: []\n    pool: &pool {memory_mb: 100, cpu_percent: 10, instances: 2}\n"
            "  b:\n    services: []\n    pool: *pool\n"
            "  c:\n    services: []\n    pool:\n      <<: *pool\n      instances: 3\n")
    cfg = load_config(write_config(text), env={})
    assert cfg.layers["b"].pool == cfg.layers["a"].pool and cfg.layers["c"].pool.instances == 3


def test_a_file_past_the_size_limit_is_refused(write_config) -> None:
    path = write_config("# padding\n" * (MAX_CONFIG_BYTES // 10 + 1))
    with pytest.raises(ConfigError, match=r"bytes; netra-rm reads configuration files of at most 1024 KiB"):
        load_config(path, env={})


def test_a_fifo_a_device_and_a_directory_are_refused_without_waiting(cli, tmp_path: Path) -> None:
    fifo = tmp_path / "netra-rm.yaml"
    os.mkfifo(fifo)
    for path, kind in ((fifo, "a FIFO"), (Path("/dev/zero"), "a device"), (tmp_path, "a directory")):
        started = time.monotonic()
        r = cli("--config", str(path), "status", timeout=30)
        assert r.code == 2, r.stderr
        assert f"{path}: is {kind}, not a configuration file" in r.stderr and "Traceback" not in r.stderr
        assert time.monotonic() - started < 10  # a process start on a loaded machine; reading would hang
    r = cli("config", "validate", str(fifo), timeout=30)
    assert r.code == 2 and "is a FIFO" in r.stderr


def test_the_bomb_through_the_cli_exits_2_in_under_a_second_of_work(cli, write_config) -> None:
    path = write_config(billion_laughs(9))
    r = cli("--config", str(path), "config", "validate", timeout=60)
    assert r.code == 2 and "billion laughs" in r.stderr and r.stdout == ""


# -- the parse cache ---------------------------------------------------------------------------

def test_the_cache_is_private_content_keyed_and_validated_first(write_config, home: Path) -> None:
    path = write_config("limits:\n  max_parallel_instances: 7\n")
    load_config(path, env={})
    directory = home / "cache" / "netra-rm"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    entries = _entries(home)
    assert entries and all(stat.S_IMODE(e.stat().st_mode) == 0o600 for e in entries)
    stored = [json.loads(e.read_text()) for e in entries]
    assert hashlib.sha256(path.read_bytes()).hexdigest() in {e["sha256"] for e in stored}
    assert all("text" not in e for e in stored)  # the digest, not a copy of the file
    before = {e: e.read_bytes() for e in entries}
    invalid = "limits:\n  max_parallel_instances: -7\n"  # parses fine, fails validation
    path.write_text(invalid)
    with pytest.raises(ConfigError):
        load_config(path, env={})
    assert {e: e.read_bytes() for e in _entries(home)} == before  # nothing stored for it
    path.write_text("limits:\n  max_parallel_instances: 8\n")
    assert load_config(path, env={}).limits.max_parallel_instances == 8


def test_an_entry_that_does_not_match_the_text_or_is_not_private_is_not_used(write_config, home: Path) -> None:
    path = write_config("limits:\n  max_parallel_instances: 7\n")
    load_config(path, env={})
    text = path.read_text()
    entry = next(e for e in _entries(home) if json.loads(e.read_text())["sha256"]
                 == hashlib.sha256(text.encode()).hexdigest())
    forged = json.loads(entry.read_text())
    forged["data"] = {"limits": {"max_parallel_instances": 99}}
    entry.write_text(json.dumps(forged))
    assert cache.lookup(str(path), text) == forged["data"]  # private and matching: used (then validated)
    os.chmod(entry, 0o666)
    assert cache.lookup(str(path), text) is cache.MISS  # writable by others: not trusted
    os.chmod(entry, 0o600)
    os.chmod(entry.parent, 0o777)
    assert cache.lookup(str(path), text) is cache.MISS  # a directory others may write: not trusted
    os.chmod(entry.parent, 0o700)
    forged["sha256"] = hashlib.sha256(b"another text").hexdigest()
    entry.write_text(json.dumps(forged))
    assert cache.lookup(str(path), text) is cache.MISS
    assert load_config(path, env={}).limits.max_parallel_instances == 7


def test_entries_are_bounded_and_plain(home: Path) -> None:
    cache.store("/x.yaml", "big", {"k": "v" * (cache.MAX_ENTRY_BYTES + 1)})
    cache.store("/y.yaml", "keys", {1: "a"})  # JSON would turn the key into "1"
    assert _entries(home) == []
