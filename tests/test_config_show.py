"""`netra-rm config show > my.yaml` gives a file that `config validate` accepts and
`--config` loads to the same configuration; origins are comments."""

from __future__ import annotations

from pathlib import Path

import pytest

RICH = """
pools:
  staging_db: {instances: 2, scope: global, description: the staging database}
layers:
  gpu:
    description: GPU tests
    services: [postgresql, redis]
    pool: {memory_mb: 2048, cpu_percent: 40, instances: 2}
    uses: [staging_db]
services:
  redis:
    kind: redis
    url: redis://:pw-Show-7@127.0.0.1:6390/0
    start: [redis-server, --port, '6390', --requirepass, pw-Show-7]
    environment: {REDIS_ARGS: --requirepass pw-Show-7}
    workdir: /tmp
  clickhouse: null
thresholds:
  hold_seconds: 3
  memory_percent: {warning: 70, critical: 90}
limits: {max_memory_mb: 9000}
discovery:
  compose: {file: compose.yaml, services: {postgresql: db}}
"""


@pytest.mark.parametrize("text", [None, RICH], ids=["built-in", "custom"])
def test_config_show_output_is_a_valid_configuration(cli, write_config, tmp_path: Path, text: str | None) -> None:
    (tmp_path / "compose.yaml").write_text("services:\n  db: {image: 'postgres:16', ports: ['6543:5432']}\n")
    config = ["--config", str(write_config(text))] if text else []
    env = {"DATABASE_URL": "postgresql://app:pw-Env-3@db.example:6543/test", "MAX_PARALLEL_INSTANCES": "7"}
    shown = cli(*config, "config", "show", env=env)
    assert shown.code == 0, shown.stderr
    saved = tmp_path / "my.yaml"
    saved.write_text(shown.stdout)

    validated = cli("config", "validate", str(saved))
    assert validated.code == 0, validated.stderr
    assert "valid" in validated.stdout

    again = cli("--config", str(saved), "config", "show")  # no variables now: the file holds their values
    assert again.code == 0, again.stderr
    body = [line for line in shown.stdout.splitlines() if not line.startswith("#")]
    assert [line for line in again.stdout.splitlines() if not line.startswith("#")] == body

    assert "#   services.postgresql.url: from DATABASE_URL" in shown.stdout
    assert "#   limits.max_parallel_instances: from MAX_PARALLEL_INSTANCES" in shown.stdout
    assert "db.example:6543" in shown.stdout
    assert "pw-Env-3" not in shown.stdout and "pw-Show-7" not in shown.stdout


def test_config_show_json_says_where_values_came_from(cli) -> None:
    shown = cli("--json", "config", "show", env={"REDIS_URL": "redis://127.0.0.1:6390/0"})
    data = shown.json()
    assert data["schema_version"] == 1
    assert data["origins"] == {"services.redis.url": "REDIS_URL"}
    assert data["source"] and "layers" in data and "sources" not in data["limits"]
