"""Compose resolving Compose: the project as `docker compose config --format json` sees it,
and the running containers' ports from `docker compose ps --format json`.

The CLI is the Docker CLI's ``compose`` plugin (``docker compose``) or, when the plugin is
missing, a standalone ``docker-compose``. Which one is decided by what each reports about
itself (`version --format json` must exit 0 and print a JSON version: Compose v2), never by
reading error messages. `config` needs no engine; `ps` does, and when no engine answers
its own error is what netra-rm reports.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ...config import env as envmod
from .model import ComposeError, ComposeService, PublishedPort, merge_ports
from .ports import parse_ports


@dataclass(frozen=True)
class ComposeCli:
    """A Compose v2 command line: ``argv`` runs it (``docker compose`` or ``docker-compose``)."""

    argv: tuple[str, ...]
    version: str

    @property
    def standalone(self) -> bool:
        return len(self.argv) == 1

    @property
    def shown(self) -> str:
        """How a person types it: ``docker compose`` or ``docker-compose``."""
        return "docker-compose" if self.standalone else "docker compose"


@dataclass(frozen=True)
class CliSearch:
    """The Compose CLI found, or why there is none (``reason``, one short clause)."""

    cli: ComposeCli | None
    reason: str = ""


def find_cli(env: Mapping[str, str] | None = None, *, timeout: float = 5.0) -> CliSearch:
    """The Compose v2 CLI to use: the ``docker compose`` plugin (``NETRA_RM_DOCKER`` names
    the Docker client), else a standalone ``docker-compose`` (``NETRA_RM_DOCKER_COMPOSE``)."""
    path = envmod.search_path(env)
    docker_name, standalone_name = envmod.docker_program(env), envmod.compose_program(env)
    docker = shutil.which(docker_name, path=path)
    standalone = shutil.which(standalone_name, path=path)
    deadline = time.monotonic() + timeout
    said: list[str] = []
    if docker is not None:
        version = _version([docker, "compose"], env, deadline)
        if version is not None:
            return CliSearch(ComposeCli((docker, "compose"), version))
        said.append(f"`{docker_name} compose` is not Compose v2 (no compose plugin)")
    else:
        said.append(f"no `{docker_name}` on PATH")
    if standalone is not None:
        version = _version([standalone], env, deadline)
        if version is not None:
            return CliSearch(ComposeCli((standalone,), version))
        said.append(f"`{standalone_name}` is not Compose v2 (`{standalone_name} version --format json` "
                    f"printed no version)")
    else:
        said.append(f"no `{standalone_name}` on PATH")
    return CliSearch(None, "no Docker Compose v2 CLI (" + "; ".join(said) + ")")


def _version(argv: Sequence[str], env: Mapping[str, str] | None, deadline: float) -> str | None:
    """The version a Compose v2 CLI reports about itself (`version --format json`), or None."""
    done = _run([*argv, "version", "--format", "json"], None, env, deadline)
    if isinstance(done, str) or done.returncode != 0:
        return None
    try:
        data = json.loads(done.stdout)
    except ValueError:
        return None
    version = data.get("version") if isinstance(data, dict) else None
    return str(version) if version else None


def _run(argv: Sequence[str], cwd: Path | None, env: Mapping[str, str] | None,
         deadline: float) -> subprocess.CompletedProcess[str] | str:
    """Run ``argv`` until ``deadline``; a string says why it could not run."""
    left = deadline - time.monotonic()
    if left <= 0:
        return f"no time left to run `{' '.join(argv[-3:])}`"
    try:
        return subprocess.run(list(argv), capture_output=True, text=True, timeout=left, stdin=subprocess.DEVNULL,
                              cwd=cwd, env=dict(envmod.environ(env)), check=False)
    except subprocess.TimeoutExpired:
        return f"`{' '.join(argv[-3:])}` did not answer in time"
    except OSError as exc:
        return f"cannot run {argv[0]}: {exc.strerror or exc}"


def split_messages(stderr: str) -> tuple[list[str], list[str]]:
    """Compose's stderr as (warnings, other lines): a warning is a logged line at level
    warning (``time=... level=warning msg="..."`` or ``WARN[0000] ...``), given by its message."""
    warnings: list[str] = []
    others: list[str] = []
    for line in stderr.splitlines():
        line = line.strip()
        if not line:
            continue
        if " level=warning " in f" {line} " or line.startswith("WARN["):
            warnings.append(_logged_message(line))
        else:
            others.append(line)
    return warnings, others


def _logged_message(line: str) -> str:
    if line.startswith("WARN["):
        return line.split("]", 1)[-1].strip()
    marker = line.find('msg="')
    if marker < 0:
        return line
    text = line[marker + 5:]
    return text[:-1].replace('\\"', '"') if text.endswith('"') else text


def resolve_config(cli: ComposeCli, selection: Sequence[str], cwd: Path, *, env: Mapping[str, str] | None = None,
                   deadline: float) -> tuple[dict[str, ComposeService], list[str]]:
    """The project's services as `config --format json` resolves them (profiles, ``.env``,
    ``extends``, ``include``, overrides, ``COMPOSE_FILE``, merge tags), and Compose's warnings.

    Raises :class:`ComposeError` with Compose's own message when it cannot resolve the project.
    """
    argv = [*cli.argv, *selection, "config", "--format", "json"]
    done = _run(argv, cwd, env, deadline)
    if isinstance(done, str):
        raise ComposeError(f"{cli.shown} config could not resolve the compose project: {done}.")
    warnings, others = split_messages(done.stderr)
    try:
        data = json.loads(done.stdout) if done.returncode == 0 else None
    except ValueError:
        data = None
    if not isinstance(data, dict):
        said = "; ".join(others) or f"exit status {done.returncode} and no JSON"
        raise ComposeError(f"the compose project cannot be read: `{cli.shown} config` says: {said}.",
                           remediation=[f"Fix the compose files (or their .env); `{cli.shown} config` shows "
                                        f"what Compose makes of them."])
    return parse_config_output(data), warnings


def parse_config_output(data: Mapping[str, object]) -> dict[str, ComposeService]:
    """The services of `docker compose config --format json` output (already parsed)."""
    section = data.get("services") or {}
    found: dict[str, ComposeService] = {}
    if not isinstance(section, dict):
        return found
    for name, entry in section.items():
        if not isinstance(entry, dict):
            continue
        image = entry.get("image")
        ports = parse_ports(entry.get("ports"), where=f"services.{name}.")
        found[str(name)] = ComposeService(str(name), image if isinstance(image, str) else None,
                                          tuple(dict.fromkeys(ports)))
    return found


@dataclass(frozen=True)
class EngineAnswer:
    """The engine's running services, or why there was no answer (``reason``)."""

    services: dict[str, ComposeService] | None
    reason: str | None = None


def running_services(cli: ComposeCli, selection: Sequence[str], cwd: Path, *,
                     env: Mapping[str, str] | None = None, deadline: float) -> EngineAnswer:
    """The published ports of the project's running containers (`ps --format json`)."""
    argv = [*cli.argv, *selection, "ps", "--format", "json"]
    done = _run(argv, cwd, env, deadline)
    if isinstance(done, str):
        return EngineAnswer(None, done)
    _, others = split_messages(done.stderr)
    # an exit status of 0 with only an error on stderr: a wrapper script that drops the status
    if done.returncode == 0 and (done.stdout.strip() or not others):
        try:
            return EngineAnswer(parse_ps_output(done.stdout))
        except (ValueError, TypeError) as exc:
            if not others:
                return EngineAnswer(None, f"`{cli.shown} ps --format json` printed something other than JSON "
                                          f"({exc})")
    said = " ".join(others) or f"exit status {done.returncode}"
    return EngineAnswer(None, f"no Docker engine answered `{cli.shown} ps`: {said}")


def parse_ps_output(text: str) -> dict[str, ComposeService]:
    """``docker compose ps --format json``: one JSON object per line (Compose 2.21 and
    later) or one JSON array (earlier). Unpublished ports (``PublishedPort`` 0) are skipped."""
    text = text.strip()
    if not text:
        return {}
    if text.startswith("["):
        rows = json.loads(text)
    else:
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    found: dict[str, ComposeService] = {}
    for row in rows:
        if not isinstance(row, dict):
            continue
        name = row.get("Service") or row.get("Name")
        if not name:
            continue
        ports: list[PublishedPort] = []
        for pub in row.get("Publishers") or []:
            published = int(pub.get("PublishedPort") or 0)
            if not published:
                continue
            port = PublishedPort(int(pub.get("TargetPort") or 0), published, pub.get("URL") or None,
                                 str(pub.get("Protocol") or "tcp").lower())
            if port not in ports:
                ports.append(port)
        before = found.get(name)
        merged = tuple(ports) if before is None else merge_ports(before.ports, tuple(ports))
        found[name] = ComposeService(name, row.get("Image") or None, merged)
    return found
