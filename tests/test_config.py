"""Configuration: the shipped defaults, merging, environment overrides, and every error."""

from __future__ import annotations

from pathlib import Path

import pytest

from netra_rm.config import load_config
from netra_rm.config.load import default_config_text
from netra_rm.errors import ConfigError, UsageError

ROOT = Path(__file__).resolve().parent.parent


def test_repo_config_is_the_shipped_file() -> None:
    assert (ROOT / "config" / "netra-rm.yaml").read_text() == default_config_text()


def test_defaults_match_the_seed() -> None:
    cfg = load_config(env={})
    pools = {n: (layer.pool.memory_mb, layer.pool.cpu_percent, layer.pool.instances)
             for n, layer in cfg.layers.items()}
    assert pools == {"fast_feedback": (512, 50, 8), "core_integration": (1024, 70, 6),
                     "service_integration": (2048, 80, 4), "e2e_background": (4096, 90, 2)}
    assert cfg.layers["service_integration"].services == ("postgresql", "redis", "backend", "auth")
    assert cfg.dependencies["backend"] == ("postgresql", "redis", "auth")
    assert cfg.dependencies["websocket"] == ("backend", "redis")
    assert (cfg.limits.max_memory_mb, cfg.limits.max_cpu_percent, cfg.limits.max_parallel_instances) == (8192, 90, 10)


def test_environment_overrides_urls_and_caps() -> None:
    cfg = load_config(env={"REDIS_URL": "redis://127.0.0.1:7000/1", "MAX_MEMORY_ALLOCATION_MB": "2048",
                           "MAX_CPU_ALLOCATION_PERCENT": "55.5", "MAX_PARALLEL_INSTANCES": "3"})
    assert cfg.services["redis"].url == "redis://127.0.0.1:7000/1"
    assert (cfg.limits.max_memory_mb, cfg.limits.max_cpu_percent, cfg.limits.max_parallel_instances) == (2048, 55.5, 3)
    assert cfg.limits.sources["max_memory_mb"] == "MAX_MEMORY_ALLOCATION_MB"


@pytest.mark.parametrize("value", ["abc", "-5", "0", ""])
def test_bad_cap_variable_is_usage_error(value: str) -> None:
    env = {"MAX_PARALLEL_INSTANCES": value}
    if value == "":
        load_config(env=env)  # empty means unset
        return
    with pytest.raises(UsageError, match="MAX_PARALLEL_INSTANCES"):
        load_config(env=env)


def test_user_file_merges_by_name(write_config) -> None:
    path = write_config("layers:\n  extra:\n    services: [redis]\n    pool: {memory_mb: 10, cpu_percent: 5, "
                        "instances: 1}\n  e2e_background: null\nlimits:\n  max_memory_mb: 100\n")
    cfg = load_config(path, env={})
    assert "extra" in cfg.layers and "fast_feedback" in cfg.layers and "e2e_background" not in cfg.layers
    assert cfg.limits.max_memory_mb == 100 and cfg.limits.max_parallel_instances == 10


@pytest.mark.parametrize(("text", "key", "words"), [
    ("layers: [1, 2", None, "malformed YAML at line"),
    ("colour: blue\n", "colour", "unknown key 'colour'"),
    ("layers:\n  x:\n    pool: {memory_mb: -5, cpu_percent: 5, instances: 1}\n", "layers.x.pool.memory_mb",
     "from 1 to 1073741824, got -5"),
    ("layers:\n  x:\n    pool: {memory_mb: 5, cpu_percent: 5, instances: two}\n", "layers.x.pool.instances",
     "whole number"),
    ("layers:\n  x:\n    services: [mysql]\n    pool: {memory_mb: 5, cpu_percent: 5, instances: 1}\n",
     "layers.x.services[0]", "unknown service 'mysql'"),
    ("services:\n  redis: {kind: redis, url: 'redis://x', depends_on: [auth]}\n", "services.auth.depends_on",
     "dependency cycle"),
    ("services:\n  redis: {kind: mongo, url: 'x'}\n", "services.redis.kind", "must be one of"),
    ("limits:\n  max_cpu_percent: -1\n", "limits.max_cpu_percent", "above 0 and at most 1000000, got -1"),
    ("layers:\n  x:\n    pool: {memory_mb: 5, cpu_percent: 5}\n", "layers.x.pool.instances", "is missing"),
    ("thresholds:\n  cpu_percent: {warning: 95, critical: 90}\n", "thresholds.cpu_percent", "must not be above"),
    ("- just\n- a list\n", None, "top level must be a mapping"),
])
def test_config_errors_name_file_key_and_problem(write_config, text: str, key: str | None, words: str) -> None:
    path = write_config(text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    message = str(info.value)
    assert message.startswith(str(path))
    if key:
        assert f": {key}: " in message
    assert words in message


def test_cycle_message_names_the_cycle(write_config) -> None:
    path = write_config("services:\n  redis: {kind: redis, url: 'redis://x', depends_on: [auth]}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert "auth -> redis -> auth" in str(info.value)


def test_missing_file_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml", env={})


def test_config_path_from_environment(write_config) -> None:
    path = write_config("limits:\n  max_parallel_instances: 7\n")
    assert load_config(env={"NETRA_RM_CONFIG": str(path)}).limits.max_parallel_instances == 7


def test_parse_cache_follows_edits_and_survives_garbage(write_config, home: Path) -> None:
    path = write_config("limits:\n  max_parallel_instances: 7\n")
    assert load_config(path, env={}).limits.max_parallel_instances == 7
    entries = list((home / "cache" / "netra-rm").glob("config-*.json"))
    assert entries, "a parsed file is cached"
    path.write_text("limits:\n  max_parallel_instances: 8\n")
    assert load_config(path, env={}).limits.max_parallel_instances == 8
    for entry in entries:
        entry.write_text("{garbage")
    assert load_config(path, env={}).limits.max_parallel_instances == 8
    path.write_text("limits: [oops\n")
    with pytest.raises(ConfigError, match="malformed YAML"):
        load_config(path, env={})
