"""Discovery: find the compose project, resolve it, match its services, rewrite the URLs."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from netra_rm.config import env as envmod
from netra_rm.config.service import ComposeOrigin, ServiceSpec

from . import cli as compose_cli
from . import reader
from .matching import match_services, pick_port, rewrite_url
from .model import ComposeError, ComposeProject, ComposeService

_TIMEOUT = 5.0


@dataclass(frozen=True)
class ComposeSettings:
    """How to find the compose project: its file, its project name, and which compose
    service each netra-rm service is (when the names differ)."""

    file: str | None = None
    project: str | None = None
    services: dict[str, str] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class Discovery:
    """What discovery found, and where from.

    ``source`` is ``"engine"`` (a Docker engine's running containers), ``"compose"``
    (`docker compose config` resolved the project), ``"file"`` (netra-rm read the compose
    files itself, without a Compose CLI), ``"none"`` (nothing to read) or ``"failed"``
    (the project cannot be read: ``error`` says why). Only the first three change
    addresses. ``urls`` holds the new address per netra-rm service, with the configured
    credentials, so it must be masked before it is shown (:meth:`to_dict` does).
    ``notes`` say what was done; ``warnings`` are what a person should fix.
    """

    source: str
    file: str | None = None
    urls: dict[str, str] = field(default_factory=dict, hash=False)
    compose_services: dict[str, str] = field(default_factory=dict, hash=False)
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    command: str = "docker compose"
    error: str | None = None

    @property
    def messages(self) -> tuple[str, ...]:
        """Notes and warnings, in the order a person should read them."""
        return self.warnings + self.notes

    def apply(self, specs: Mapping[str, ServiceSpec]) -> dict[str, ServiceSpec]:
        """``specs`` with the discovered addresses (and where they came from) in place of
        the configured ones."""
        applied: dict[str, ServiceSpec] = {}
        for name, spec in specs.items():
            if name in self.urls:
                origin = ComposeOrigin(self.compose_services[name], self.file, self.source, self.command)
                spec = replace(spec, url=self.urls[name], origin=replace(spec.origin, compose=origin))
            applied[name] = spec
        return applied

    def to_dict(self) -> dict[str, Any]:
        from ...redact import mask_url

        return {"source": self.source, "file": self.file,
                "services": {name: {"compose_service": self.compose_services.get(name), "url": mask_url(url)}
                             for name, url in self.urls.items()},
                "notes": list(self.notes), "warnings": list(self.warnings), "error": self.error}


def settings_from_config(raw: Mapping[str, Any], source: str) -> ComposeSettings | None:
    """The ``discovery.compose`` section of a validated configuration, or None when off.

    A relative ``file`` is relative to the configuration file that names it.
    """
    section = (raw.get("discovery") or {}).get("compose")
    if section is None or section is False:
        return None
    if section is True:
        return ComposeSettings()
    file = section.get("file")
    if file and not Path(file).is_absolute() and not source.startswith("<"):
        file = str(Path(source).absolute().parent / file)
    return ComposeSettings(file=file, project=section.get("project"),
                           services=dict(section.get("services") or {}))


@dataclass(frozen=True)
class _Selection:
    """Which project: the files (empty: Compose finds them from ``cwd`` itself, honouring
    ``COMPOSE_FILE``), the project name, and the main file for messages."""

    files: tuple[Path, ...]
    project: str | None
    cwd: Path
    main: Path | None

    def args(self) -> list[str]:
        args = [arg for file in self.files for arg in ("-f", str(file))]
        return args + (["-p", self.project] if self.project else [])

    def command(self, shown: str) -> str:
        import shlex

        return " ".join([shown, *(shlex.quote(arg) for arg in self.args())])


def _select(settings: ComposeSettings, cwd: Path, env: Mapping[str, str] | None) -> _Selection:
    if settings.file:
        main = Path(settings.file)
        if not main.is_file():
            raise ComposeError(f"the compose file {settings.file} (discovery.compose.file) does not exist.",
                               remediation=["Fix discovery.compose.file in the configuration, or remove it to "
                                            "look for compose.yaml / docker-compose.yml in the current directory."])
        override = reader.override_file(main)
        files = (main,) if override is None else (main, override)
        return _Selection(files, settings.project, main.parent, main)
    try:
        named = reader.compose_file_variable(cwd, env)
    except ComposeError:  # a broken .env: Compose (or the reader) says so when it reads the project
        named = None
    if named:
        return _Selection((), settings.project, cwd, named[0])
    return _Selection((), settings.project, cwd, reader.find_compose_file(cwd))


def _reader_files(selection: _Selection, env: Mapping[str, str] | None) -> list[Path]:
    """The files the reader merges, as Compose would choose them."""
    if selection.files:
        return list(selection.files)
    named = reader.compose_file_variable(selection.cwd, env)
    if named:
        return named
    assert selection.main is not None
    override = reader.override_file(selection.main)
    return [selection.main] if override is None else [selection.main, override]


def resolve_project(settings: ComposeSettings, *, env: Mapping[str, str] | None = None, cwd: Path | None = None,
                    timeout: float = _TIMEOUT, engine: bool = True) -> tuple[ComposeProject | None, list[str], str]:
    """The compose project with its running services' ports: (project or None when there
    is none, notes, the Compose command that selects it).

    With ``engine``, running containers' ports (`docker compose ps`) win over the
    project's own. Raises :class:`ComposeError` for a project that cannot be read.
    """
    deadline = time.monotonic() + timeout
    where = cwd or Path.cwd()
    selection = _select(settings, where, env)
    notes: list[str] = []
    search = compose_cli.find_cli(env, timeout=max(0.1, deadline - time.monotonic()))
    shown = search.cli.shown if search.cli is not None else "docker compose"
    if selection.main is None:
        if not settings.project or search.cli is None:
            tried = ", ".join(reader.COMPOSE_FILE_NAMES)
            return None, [f"no compose file ({tried}) in {where} or its parents; using the configured "
                          f"addresses"], selection.command(shown)
        project = ComposeProject({}, None, "compose")
    elif search.cli is not None:
        services, said = compose_cli.resolve_config(search.cli, selection.args(), selection.cwd, env=env,
                                                    deadline=deadline)
        project = ComposeProject(services, str(selection.main), "compose",
                                 notes=tuple(f"{shown} config: {w}" for w in said))
    else:
        project = reader.read_project(_reader_files(selection, env), env=env)
        notes.append(f"{search.reason}; netra-rm read {selection.main} itself")
    notes.extend(project.notes)
    if engine and search.cli is not None:
        answer = compose_cli.running_services(search.cli, selection.args(), selection.cwd, env=env,
                                              deadline=deadline)
        if answer.services is not None:
            project = replace(project, services={**project.services, **answer.services}, via="engine")
        else:
            notes.insert(0, f"{answer.reason}; using the ports the compose project publishes")
    return project, notes, selection.command(shown)


def discover(specs: Mapping[str, ServiceSpec], settings: ComposeSettings, *, env: Mapping[str, str] | None = None,
             cwd: Path | None = None, timeout: float = _TIMEOUT, fixed: Iterable[str] = (),
             engine: bool = True) -> Discovery:
    """Find the published ports of ``specs`` (those in ``fixed`` keep their address: an
    environment variable named it).

    Never raises for a missing Docker or compose file: that is a note, and the configured
    addresses stand. A project that cannot be read is a :class:`ComposeError`.
    """
    project, notes, command = resolve_project(settings, env=env, cwd=cwd, timeout=timeout, engine=engine)
    if project is None:
        return Discovery("none", notes=tuple(notes), command=command)
    compose: dict[str, ComposeService] = project.services
    skip = set(fixed)
    candidates = {n: s for n, s in specs.items() if n not in skip}
    matches = match_services(candidates, compose, settings.services)
    warnings = list(project.warnings) + list(matches.warnings)
    urls: dict[str, str] = {}
    for name, compose_name in matches.services.items():
        spec = specs[name]
        port = pick_port(spec, compose[compose_name])
        if port is None:
            if compose[compose_name].ports:
                warnings.append(f"{name}: compose service {compose_name} publishes several ports and none is "
                                f"the one {name} listens on; keeping {name}'s configured address")
            continue
        if port.published is None:
            notes.append(f"{name}: compose service {compose_name} publishes container port {port.target} on a "
                         f"host port chosen at start-up, which only a running Docker engine can tell; keeping "
                         f"the configured address")
            continue
        urls[name] = rewrite_url(spec.url, port.published, port.host_ip)
    found = {name: matches.services[name] for name in urls}
    return Discovery(project.via, project.file, urls, found, tuple(notes), tuple(warnings), command)


def failed(exc: ComposeError) -> Discovery:
    """The discovery of a project that cannot be read: a warning, configured addresses."""
    text = exc.message.rstrip(".")
    return Discovery("failed", warnings=(f"Compose discovery failed, so the configured addresses are used: {text}",),
                     error=exc.message)


# -- said once per process -----------------------------------------------------------------

_said: set[str] = set()
_said_lock = threading.Lock()


def say_once(notes: Sequence[str]) -> list[str]:
    """The notes not said yet in this process (each is said once, however often discovery runs)."""
    with _said_lock:
        fresh = [n for n in notes if n not in _said]
        _said.update(fresh)
    return fresh


def fixed_by_environment(specs: Mapping[str, ServiceSpec], env: Mapping[str, str] | None = None) -> list[str]:
    """Services whose address an environment variable gives: discovery leaves those alone."""
    return [name for name, spec in specs.items() if spec.url_env and envmod.get(spec.url_env, env)]
