"""`categories:` in the configuration: per-category defaults for what a request does not say,
and `categories.strict` refusing unknown categories (exit 2, listing the known ones)."""

from __future__ import annotations

from pathlib import Path

import pytest

CATEGORIES = """
layers:
  tiny:
    services: []
    pool: {memory_mb: 300, cpu_percent: 30, instances: 3}
machine:
  check_memory: false
categories:
  strict: STRICT
  api_tests: {memory_mb: 128, cpu_percent: 5, duration_minutes: 12, priority: 2}
  lint: {description: quick checks}
"""


def config(write_config, *, strict: str = "false") -> Path:
    return write_config(CATEGORIES.replace("STRICT", strict), name="categories.yaml")


def test_a_category_gives_its_defaults_and_the_request_still_wins(cli, write_config) -> None:
    base = ("--config", str(config(write_config)))
    got = cli(*base, "allocate", "--layer", "tiny", "--category", "api_tests", "--json").json()
    assert (got["memory_mb"], got["cpu_percent"]) == (128, 5)
    assert round(got["expires_at"] - got["created_at"]) == 12 * 60
    said = cli(*base, "allocate", "--layer", "tiny", "--category", "api_tests", "--memory-mb", "64", "--json").json()
    assert (said["memory_mb"], said["cpu_percent"]) == (64, 5)
    plain = cli(*base, "allocate", "--layer", "tiny", "--category", "lint", "--json").json()
    assert (plain["memory_mb"], plain["cpu_percent"]) == (100, 10), "the layer's share when the category says nothing"


def test_unknown_category_is_allowed_unless_strict(cli, write_config) -> None:
    assert cli("--config", str(config(write_config)), "allocate", "--layer", "tiny", "--category", "other").code == 0
    strict = cli("--config", str(config(write_config, strict="true")), "allocate", "--layer", "tiny", "--category",
                 "other")
    assert strict.code == 2
    assert "unknown category 'other'; known categories: api_tests, lint." in strict.stderr


@pytest.mark.parametrize("section, key", [
    ("categories: {strict: maybe}", "categories.strict"),
    ("categories: {x: {memory_mb: -5}}", "categories.x.memory_mb"),
    ("categories: {x: {cpu_percent: 150}}", "categories.x.cpu_percent"),
    ("categories: {x: {priority: 1.5}}", "categories.x.priority"),
    ("categories: {x: {colour: red}}", "categories.x"),
    ("categories: {x: {duration_minutes: .nan}}", "categories.x.duration_minutes"),
])
def test_bad_category_settings_are_config_errors(cli, write_config, section: str, key: str) -> None:
    path = write_config(section + "\n", name="bad.yaml")
    result = cli("config", "validate", str(path))
    assert result.code == 2
    assert key in result.stderr
