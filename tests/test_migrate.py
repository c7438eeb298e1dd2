"""`netra-rm ledger migrate --from A --to B` copies active allocations between backends."""

from __future__ import annotations

from pathlib import Path

import pytest

from backends import BACKENDS, Backend, make_backend
from servers import PASSWORDS


@pytest.mark.parametrize("source_kind, target_kind", [("file", "redis"), ("redis", "postgresql"),
                                                      ("postgresql", "file"), ("file", "postgresql")])
def test_migrate_copies_active_allocations_and_keeps_fencing_monotonic(
        cli, request: pytest.FixtureRequest, tmp_path: Path, small_config: Path, source_kind: str,
        target_kind: str) -> None:
    source = make_backend(source_kind, request, tmp_path / "source")
    target = make_backend(target_kind, request, tmp_path / "target")
    env = {"NETRA_RM_CONFIG": str(small_config)}
    on_source = {**env, "NETRA_RM_LEDGER": source.location}
    on_target = {**env, "NETRA_RM_LEDGER": target.location}
    ids = [cli("allocate", "--layer", "tiny", "--category", f"c{i}", env=on_source).stdout.strip() for i in range(3)]
    assert cli("release", ids[2], env=on_source).code == 0
    short = cli("allocate", "--layer", "fast_feedback", "--category", "brief", "--duration-minutes", "0.0001",
                "--json", env=on_source).json()
    source_tokens = [short["fencing_token"]]
    existing = cli("allocate", "--layer", "fast_feedback", "--category", "already", env=on_target).stdout.strip()

    result = cli("ledger", "migrate", "--from", source.location, "--to", target.location, "--json", env=env)
    assert result.code == 0, result.stderr
    report = result.json()
    assert report["copied"] == ids[:2]
    assert report["expired"] == [short["id"]]
    assert report["fencing_counter"] >= max(source_tokens)
    for password in PASSWORDS:
        assert password not in result.stdout + result.stderr

    status = cli("status", "--json", env=on_target).json()["resources"]
    assert sorted(a["id"] for a in status["active_allocations"]) == sorted([*ids[:2], existing])
    after = cli("allocate", "--layer", "tiny", "--category", "new", "--json", env=on_target).json()
    assert after["fencing_token"] > max(source_tokens)  # fencing keeps growing for moved holders
    assert cli("release", ids[0], env=on_target).code == 0  # holders release on the target
    verified = cli("verify", "--json", env=on_target)
    assert verified.json()["clean"] is True, verified.stdout

    again = cli("ledger", "migrate", "--from", source.location, "--to", target.location, env=env)
    assert again.code == 0
    assert "already there" in again.stderr
    assert again.stdout.split() == ["copied", ids[0]]  # released on the target: copied once more


def test_migrate_refuses_the_same_ledger_and_names_an_unreachable_one(cli, tmp_path: Path) -> None:
    path = str(tmp_path / "ledger.json")
    same = cli("ledger", "migrate", "--from", path, "--to", path)
    assert same.code == 2
    assert "the same ledger" in same.stderr
    down = cli("ledger", "migrate", "--from", path, "--to", "redis://:pw-hidden@127.0.0.1:1/0")
    assert down.code == 5
    assert "Redis ledger at redis://:***@127.0.0.1:1/0" in down.stderr
    assert "pw-hidden" not in down.stderr


def test_every_backend_is_a_migration_target(cli, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    for kind in BACKENDS:
        backend: Backend = make_backend(kind, request, tmp_path / kind)
        result = cli("ledger", "migrate", "--from", str(tmp_path / "empty.json"), "--to", backend.location)
        assert result.code == 0, result.stderr
