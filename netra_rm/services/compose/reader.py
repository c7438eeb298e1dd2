"""The compose project read by netra-rm itself, for machines without a Compose CLI.

Follows Compose where it can: the compose file found from the working directory (or
``COMPOSE_FILE``, or the configured one) with its override file (``compose.override.yml``
or ``.yaml``, ...), the project's ``.env`` (parsed with python-dotenv, values interpolated
as Compose does), ``COMPOSE_PROFILES`` (a service behind an inactive profile does not
run), ``extends`` within a file, ``!override`` and ``!reset``. What it cannot follow
(``include``, ``extends`` from another file) is named in one warning, never guessed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...config import env as envmod
from .interpolation import interpolate
from .model import ComposeError, ComposeProject, ComposeService, PublishedPort
from .ports import parse_ports

#: The names ``docker compose`` looks for, in its order of preference.
COMPOSE_FILE_NAMES: tuple[str, ...] = ("compose.yaml", "compose.yml", "docker-compose.yml", "docker-compose.yaml")
#: The override files it merges into the one it found (the first of these that exists).
OVERRIDE_FILE_NAMES: tuple[str, ...] = ("compose.override.yml", "compose.override.yaml",
                                        "docker-compose.override.yml", "docker-compose.override.yaml")


def find_compose_file(directory: Path) -> Path | None:
    """The compose file ``docker compose`` would use from ``directory``: the first of
    :data:`COMPOSE_FILE_NAMES` there or in a parent directory."""
    for folder in (directory, *directory.parents):
        for name in COMPOSE_FILE_NAMES:
            candidate = folder / name
            if candidate.is_file():
                return candidate
    return None


def override_file(path: Path) -> Path | None:
    """The override file Compose merges into ``path``: the first of
    :data:`OVERRIDE_FILE_NAMES` in its directory."""
    for name in OVERRIDE_FILE_NAMES:
        candidate = path.parent / name
        if candidate.is_file() and candidate != path:
            return candidate
    return None


def compose_file_variable(cwd: Path, env: Mapping[str, str] | None = None) -> list[Path] | None:
    """The files ``COMPOSE_FILE`` names (from the environment, else the ``.env`` of the
    working directory), relative to ``cwd``; None when it is not set."""
    value = envmod.get("COMPOSE_FILE", env)
    if value is None:
        value = read_dotenv(cwd / ".env", env).get("COMPOSE_FILE") or None
    if value is None:
        return None
    separator = envmod.get("COMPOSE_PATH_SEPARATOR", env) or os.pathsep
    return [(cwd / part).absolute() for part in value.split(separator) if part]


def read_dotenv(path: Path, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """A compose ``.env`` file (python-dotenv's syntax: quotes, comments, ``export``,
    multi-line values). Unquoted and double-quoted values are interpolated as Compose
    does, from the environment first, then the lines above; single-quoted ones are kept
    as written. A missing file is empty; a line that cannot be read is a :class:`ComposeError`."""
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ComposeError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}.") from None
    import io

    from dotenv.parser import parse_stream

    environment = envmod.environ(env)
    values: dict[str, str] = {}
    for binding in parse_stream(io.StringIO(text)):
        if binding.error:
            raise ComposeError(f"{path}: line {binding.original.line} is not NAME=value "
                               f"({binding.original.string.strip()[:40]!r}).",
                               remediation=[f"Fix line {binding.original.line} of {path}."])
        if binding.key is None:
            continue
        value = binding.value or ""
        raw = binding.original.string.split("=", 1)[1].lstrip() if "=" in binding.original.string else ""
        if not raw.startswith("'"):
            lookup = {**values, **environment}
            value = interpolate(value, lookup, where=f"{path}: {binding.key}: ")
        values[binding.key] = value
    return values


@dataclass(frozen=True)
class _Tagged:
    """A value under Compose's merge tag ``!override`` (replace) or ``!reset`` (remove)."""

    tag: str
    value: Any


def read_project(files: Sequence[Path], *, env: Mapping[str, str] | None = None) -> ComposeProject:
    """The services of ``files`` merged in order (the first file's directory is the
    project directory, whose ``.env`` fills the variables the environment does not), with
    inactive profiles left out.

    Raises :class:`ComposeError` for a file or ``.env`` that cannot be read.
    """
    project_dir = files[0].parent
    dotenv = read_dotenv(project_dir / ".env", env)
    variables = {**dotenv, **envmod.environ(env)}
    unset: list[str] = []
    unresolved: list[str] = []
    merged: dict[str, dict[str, Any]] = {}
    for file in files:
        for name, entry in _file_services(file, variables, unset, unresolved).items():
            merged[name] = _merge(merged[name], entry) if name in merged else entry
    profiles = {p.strip() for p in (variables.get("COMPOSE_PROFILES") or "").split(",") if p.strip()}
    services: dict[str, ComposeService] = {}
    for name, entry in merged.items():
        wanted = _plain(entry.get("profiles")) or []
        if wanted and "*" not in profiles and not profiles.intersection(str(p) for p in wanted):
            continue
        where = f"{_file_of(entry, files[0])}: services.{name}."
        image = _plain(entry.get("image"))
        services[name] = ComposeService(name, image if isinstance(image, str) else None,
                                        tuple(dict.fromkeys(_ports_of(entry, where))))
    notes: list[str] = []
    warnings: list[str] = []
    if unset:
        names = ", ".join(dict.fromkeys(unset))
        notes.append(f"{files[0].name} uses {names} without a default and it is not set; Compose uses an empty "
                     f"string there.")
    if unresolved:
        warnings.append(f"without a Compose CLI netra-rm could not resolve {'; '.join(unresolved)} in "
                        f"{files[0]}: services from there are not discovered (install Docker Compose v2 to "
                        f"resolve them).")
    return ComposeProject(services, str(files[0]), "file", tuple(notes), tuple(warnings))


def _file_of(entry: Mapping[str, Any], default: Path) -> Path:
    found = entry.get("__file__")
    return found if isinstance(found, Path) else default


def _ports_of(entry: Mapping[str, Any], where: str) -> list[PublishedPort]:
    return parse_ports(_plain(entry.get("ports")), where=where)


def _file_services(path: Path, variables: Mapping[str, str], unset: list[str],
                   unresolved: list[str]) -> dict[str, dict[str, Any]]:
    """One file's services, interpolated, each with its local ``extends`` resolved."""
    data = _load_yaml(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ComposeError(f"{path}: the top level must be a mapping.")
    if data.get("include"):
        included = _plain(data["include"])
        paths = [item if isinstance(item, str) else str((item or {}).get("path")) for item in
                 (included if isinstance(included, list) else [included])]
        unresolved.append(f"include ({', '.join(paths)})")
    section = _plain(data.get("services")) if isinstance(data.get("services"), _Tagged) else data.get("services")
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise ComposeError(f"{path}: services must be a mapping.")
    raw: dict[str, dict[str, Any]] = {}
    for name, entry in section.items():
        if not isinstance(entry, dict):
            continue
        where = f"{path}: services.{name}."
        raw[str(name)] = {key: _interpolated(entry[key], variables, where=where, unset=unset)
                          for key in ("image", "ports", "profiles", "extends") if key in entry}
        raw[str(name)]["__file__"] = path
    return {name: _extended(name, raw, path, unresolved, ()) for name in raw}


def _extended(name: str, raw: Mapping[str, dict[str, Any]], path: Path, unresolved: list[str],
              seen: tuple[str, ...]) -> dict[str, Any]:
    entry = raw[name]
    extends = _plain(entry.get("extends"))
    if extends is None:
        return entry
    if isinstance(extends, str):
        base_name, other_file = extends, None
    elif isinstance(extends, dict):
        base_name, other_file = str(extends.get("service") or ""), extends.get("file")
    else:
        raise ComposeError(f"{path}: services.{name}.extends must name a service.")
    if other_file:
        unresolved.append(f"extends of {name} from {other_file}")
        return {key: value for key, value in entry.items() if key != "extends"}
    if base_name not in raw:
        raise ComposeError(f"{path}: services.{name} extends {base_name!r}, which is not a service of this file.")
    if base_name in seen:
        raise ComposeError(f"{path}: services.{name}: extends goes round in a circle ({' -> '.join(seen)}).")
    base = _extended(base_name, raw, path, unresolved, (*seen, name))
    own = {key: value for key, value in entry.items() if key != "extends"}
    return _merge(base, own)


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` merged into ``base`` as Compose merges services: ``image`` replaced,
    ``ports`` and ``profiles`` appended, ``!override`` replacing and ``!reset`` removing."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, _Tagged):
            if value.tag == "!reset":
                merged.pop(key, None)
            else:
                merged[key] = value.value
        elif key in ("ports", "profiles") and isinstance(value, list):
            before = _plain(merged.get(key))
            merged[key] = (before if isinstance(before, list) else []) + value
        else:
            merged[key] = value
    return merged


def _plain(value: Any) -> Any:
    """``value`` with its merge tags applied as a lone file would (``!reset`` is nothing)."""
    if isinstance(value, _Tagged):
        return None if value.tag == "!reset" else _plain(value.value)
    return value


def _interpolated(value: Any, variables: Mapping[str, str], *, where: str, unset: list[str]) -> Any:
    if isinstance(value, _Tagged):
        return _Tagged(value.tag, _interpolated(value.value, variables, where=where, unset=unset))
    if isinstance(value, str):
        return interpolate(value, variables, where=where, unset=unset)
    if isinstance(value, list):
        return [_interpolated(v, variables, where=where, unset=unset) for v in value]
    if isinstance(value, dict):
        return {k: _interpolated(v, variables, where=where, unset=unset) for k, v in value.items()}
    return value


def _load_yaml(path: Path) -> Any:
    import yaml

    class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
        """A safe loader that also reads Compose's merge tags ``!reset`` and ``!override``."""

    def _tagged(loader: Any, node: Any) -> _Tagged:
        if isinstance(node, yaml.MappingNode):
            value: Any = loader.construct_mapping(node, deep=True)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_scalar(node)
        return _Tagged(node.tag, value)

    _Loader.add_constructor("!reset", _tagged)
    _Loader.add_constructor("!override", _tagged)
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise ComposeError(f"cannot read the compose file {path}: {exc.strerror or exc}.") from None
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise ComposeError(f"the compose file {path} is not valid YAML{at}.",
                           remediation=[f"Fix {path}; `docker compose config` shows what Compose makes of it."]) \
            from None


__all__ = ["COMPOSE_FILE_NAMES", "OVERRIDE_FILE_NAMES", "compose_file_variable", "find_compose_file",
           "override_file", "read_dotenv", "read_project"]
