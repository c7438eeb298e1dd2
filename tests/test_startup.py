"""Starting services from the library: the start/stop configuration keys, the agent's
``start_missing``, ``started_by_netra_rm``/``restart_count``, masking, and two `up` runs at
once. Real PostgreSQL and Redis, started by their configured commands."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from netra_rm import (
    ServiceUnavailableError,
    create_resource_manager,
    ensure_layer_resources_available,
)
from netra_rm.config import load_config
from netra_rm.config.commands import mask_command, secrets_of, shown_command
from netra_rm.errors import ConfigError
from netra_rm.services.rounds import check_services

from servers import (
    PASSWORDS,
    REDIS_PASSWORD,
    free_port,
    wait_until,
)
from start_commands import PgCluster, RedisCommands, config_text

ROOT = Path(__file__).resolve().parent.parent


# -- configuration ---------------------------------------------------------------------------

def _readme_block(starting: str) -> str:
    blocks = re.findall(r"^```yaml\n(.*?)^```$", (ROOT / "README.md").read_text(), flags=re.DOTALL | re.MULTILINE)
    (block,) = [b for b in blocks if starting in b]
    return block


def test_readme_start_command_example_is_valid(tmp_path: Path, write_config, home: Path) -> None:
    (tmp_path / "sub").mkdir()
    path = write_config(_readme_block("start: [pg_ctl"), name="sub/netra-rm.yaml")
    config = load_config(path, env={})
    pg, redis, clickhouse = (config.services[n] for n in ("postgresql", "redis", "clickhouse"))
    assert pg.start == ("pg_ctl", "-D", ".ci/pgdata", "-l", ".ci/pg.log", "-w", "start")
    assert pg.stop[-1] == "stop" and pg.shell is False
    assert pg.workdir == str(path.parent.parent)  # `..`, relative to the file
    assert pg.environment == {"PGTZ": "UTC"}
    assert redis.start == ("redis-server", "--port", "6390", "--save", "")
    assert clickhouse.shell is True and clickhouse.start[0].startswith("docker compose up -d clickhouse &&")
    # and the discovery example
    discovery = write_config(_readme_block("discovery:"), name="d.yaml")
    assert load_config(discovery, env={}).raw["discovery"]["compose"]["project"] == "myapp"


def test_services_without_start_commands_keep_working(home: Path) -> None:
    spec = load_config(env={}).services["postgresql"]
    assert spec.start == () and spec.stop == () and spec.shell is False and spec.workdir is None


@pytest.mark.parametrize("entry, key, words", [
    ("start: redis-server --port 1 > /tmp/log", "services.redis.start", "uses shell syntax ('>')"),
    ("start: echo $HOME", "services.redis.start", "set services.redis.shell: true"),
    ("start: [redis-server]\n    shell: true", "services.redis.start", "must be one non-empty string"),
    ("start: []", "services.redis.start", "must be a list of arguments or a string"),
    ("start: \"redis-server 'unclosed\"", "services.redis.start", "cannot be split"),
    ("stop: [redis-cli, {a: 1}]", "services.redis.stop[1]", "must be a string"),
    ("shell: maybe", "services.redis.shell", "true or false"),
    ("workdir: ''", "services.redis.workdir", "non-empty string"),
    ("environment: {DEBUG: yes}", "services.redis.environment.DEBUG", "quote it"),
    ("environment: {'1BAD': x}", "services.redis.environment.1BAD", "not a valid variable name"),
    ("environment: [A=1]", "services.redis.environment", "must be a mapping"),
])
def test_start_keys_are_validated_naming_file_and_key(write_config, entry: str, key: str, words: str) -> None:
    path = write_config(f"services:\n  redis:\n    kind: redis\n    url: redis://x\n    {entry}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    message = str(info.value)
    assert message.startswith(f"{path}: {key}: "), message
    assert words in message


@pytest.mark.parametrize("text, key, words", [
    ("discovery: {docker: true}", "discovery.docker", "unknown key"),
    ("discovery: {compose: {file: 3}}", "discovery.compose.file", "non-empty string"),
    ("discovery: {compose: {services: {mysql: db}}}", "discovery.compose.services.mysql", "unknown service"),
    ("discovery: {compose: {profile: x}}", "discovery.compose.profile", "unknown key"),
])
def test_discovery_section_is_validated(write_config, text: str, key: str, words: str) -> None:
    path = write_config(text + "\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert f": {key}: " in str(info.value) and words in str(info.value)


# -- masking -------------------------------------------------------------------------------------

def test_command_lines_and_output_never_show_secrets(write_config, home: Path) -> None:
    path = write_config(config_text({"redis": {
        "kind": "redis", "url": f"redis://:{REDIS_PASSWORD}@127.0.0.1:6390/0",
        "start": ["redis-server", "--requirepass", "other-S3cret", "--port", "6390"],
        "stop": ["redis-cli", "-a", "third-S3cret", "shutdown"],
        "environment": {"REDIS_PASSWORD": "env-S3cret", "PLAIN": "visible"}}}))
    spec = load_config(path, env={}).services["redis"]
    assert set(secrets_of(spec)) >= {REDIS_PASSWORD, "other-S3cret", "third-S3cret", "env-S3cret"}
    assert shown_command(spec, spec.start) == "redis-server --requirepass *** --port 6390"
    assert shown_command(spec, spec.stop) == "redis-cli -a *** shutdown"
    output = f"AUTH {REDIS_PASSWORD} failed; PGPASSWORD=pg-x1 psql postgresql://u:pw9@h/db --password=abc"
    masked = mask_command(output, secrets_of(spec))
    for secret in (REDIS_PASSWORD, "pg-x1", "pw9", "abc"):
        assert secret not in masked
    # the remediation of a down service points at `netra-rm up` and its (masked) command
    down = dataclasses.replace(spec, url=f"redis://127.0.0.1:{free_port()}")
    result = check_services({"redis": down}, ["redis"], deadline=3)["redis"]
    steps = " ".join(result.remediation)
    assert "netra-rm up redis" in steps and "--requirepass ***" in steps and "other-S3cret" not in steps


# -- the agent ------------------------------------------------------------------------------------

def test_agent_starts_missing_services_and_counts_restarts(write_config, home: Path, ledger_path: Path,
                                                          pg: PgCluster, redis: RedisCommands) -> None:
    path = write_config(config_text({"postgresql": pg.service(), "redis": redis.foreground()}))
    with create_resource_manager(config=str(path), ledger=str(ledger_path), enable_monitoring=False) as rm:
        assert rm.ensure_layer_services("core_integration") == (False, ["postgresql", "redis"])
        assert rm.ensure_layer_services("core_integration", start_missing=True, timeout_seconds=60) == (True, [])
        assert pg.running() and redis.running()
        status = rm.get_service_status()["services"]
        for name in ("postgresql", "redis"):
            assert status[name]["status"] == "healthy"
            assert status[name]["started_by_netra_rm"] is True and status[name]["restart_count"] == 0
        assert status["clickhouse"]["started_by_netra_rm"] is False and status["clickhouse"]["restart_count"] == 0

        redis.stop_quietly()  # Redis goes away behind netra-rm's back ...
        wait_until(lambda: not redis.running(), timeout=10, what="redis to stop")
        assert rm.ensure_layer_services("core_integration") == (False, ["redis"])
        # ... and is started again: a restart
        assert ensure_layer_resources_available(rm, "core_integration", timeout_seconds=60, start_missing=True)
        status = rm.get_service_status()["services"]
        assert status["redis"]["restart_count"] == 1 and status["postgresql"]["restart_count"] == 0

        from netra_rm.core.startup import bring_down

        down = bring_down(rm.engine)
        assert down.ok, down.to_dict()
        assert set(down.stopped) == {"postgresql", "redis"}
        assert not pg.running() and not redis.running()
        status = rm.get_service_status()["services"]
        assert status["redis"]["started_by_netra_rm"] is False


def test_agent_raises_naming_the_command_code_and_output(write_config, home: Path, ledger_path: Path) -> None:
    path = write_config(config_text({"redis": {
        "kind": "redis", "url": f"redis://:{REDIS_PASSWORD}@127.0.0.1:{free_port()}/0", "shell": True,
        "start": f"echo 'bind: Address already in use ({REDIS_PASSWORD})'; exit 7"}},
        layers={"cache": {"services": ["redis"], "pool": {"memory_mb": 64, "cpu_percent": 10, "instances": 1}}}))
    with create_resource_manager(config=str(path), ledger=str(ledger_path), enable_monitoring=False) as rm:
        with pytest.raises(ServiceUnavailableError) as info:
            rm.ensure_layer_services("cache", start_missing=True, raise_on_missing=True, timeout_seconds=10)
        error = info.value
        assert error.service_name == "redis"
        assert "exited with code 7" in str(error) and error.command_exit_code == 7  # type: ignore[attr-defined]
        assert error.output_tail == ["bind: Address already in use (***)"]  # type: ignore[attr-defined]
        assert REDIS_PASSWORD not in str(error) + " ".join(error.remediation_steps)
        assert rm.ensure_layer_services("cache", start_missing=True, timeout_seconds=10) == (False, ["redis"])
        assert not ensure_layer_resources_available(rm, "cache", timeout_seconds=5, start_missing=True)


# -- two runs at once --------------------------------------------------------------------------------

def test_two_concurrent_up_runs_start_a_service_once(write_config, home: Path, ledger_path: Path,
                                                     redis: RedisCommands) -> None:
    """Both runs succeed and exactly one starts Redis: the other waits for the run lock,
    then finds it healthy. Without the lock both would start it and one would fail."""
    slow_start = {**redis.foreground(), "shell": True,
                  "start": "sleep 0.5; exec " + " ".join(f"'{a}'" for a in redis.foreground()["start"])}
    path = write_config(config_text({"redis": slow_start}))
    env = {**os.environ, "NETRA_RM_LEDGER": str(ledger_path)}
    argv = [sys.executable, "-m", "netra_rm", "--config", str(path), "--json", "up", "redis", "--timeout", "30"]
    runs = [subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    outputs = [run.communicate(timeout=60) for run in runs]
    for run, (out, err) in zip(runs, outputs):
        assert run.returncode == 0, err
        for password in PASSWORDS:
            assert password not in out + err
    started = [json_out for json_out, _ in outputs if '"started": [\n    "redis"\n  ]' in json_out]
    assert len(started) == 1
    assert redis.running()
    assert subprocess.run([*argv[:5], "down"], env=env, capture_output=True, timeout=60, check=False).returncode == 0
    wait_until(lambda: not redis.running(), timeout=10, what="redis to be stopped by `down`")
