"""The one module that reads the process environment.

Everything else in netra-rm receives values from here, so tests and the Python API can
pass an explicit mapping instead of touching ``os.environ``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Mapping
from pathlib import Path

from netra_rm import numbers
from netra_rm.numbers import Range

#: Variables that cap the sum of all active allocations, and the limit each overrides.
LIMIT_VARIABLES: dict[str, str] = {
    "MAX_MEMORY_ALLOCATION_MB": "max_memory_mb",
    "MAX_CPU_ALLOCATION_PERCENT": "max_cpu_percent",
    "MAX_PARALLEL_INSTANCES": "max_parallel_instances",
}


def environ(env: Mapping[str, str] | None = None) -> Mapping[str, str]:
    """The environment to use: ``env`` when given, else the process environment."""
    return os.environ if env is None else env


def get(name: str, env: Mapping[str, str] | None = None) -> str | None:
    """One variable, or None when it is unset or empty."""
    value = environ(env).get(name)
    return value if value else None


def config_path(env: Mapping[str, str] | None = None) -> str | None:
    return get("NETRA_RM_CONFIG", env)


def ledger_location(env: Mapping[str, str] | None = None) -> str | None:
    return get("NETRA_RM_LEDGER", env)


def debug(env: Mapping[str, str] | None = None) -> bool:
    return get("NETRA_RM_DEBUG", env) not in (None, "0", "false", "no")


def no_color(env: Mapping[str, str] | None = None) -> bool:
    """The NO_COLOR convention: present and non-empty means no colour; TERM=dumb too."""
    return get("NO_COLOR", env) is not None or get("TERM", env) == "dumb"


def host_id(env: Mapping[str, str] | None = None) -> str:
    """This host's name in allocation owners (NETRA_RM_HOST_ID overrides the hostname)."""
    return get("NETRA_RM_HOST_ID", env) or socket.gethostname()


def user_name(env: Mapping[str, str] | None = None) -> str:
    e = environ(env)
    name = e.get("USER") or e.get("LOGNAME")
    if name:
        return name
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        return str(os.getuid())


def cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where netra-rm keeps parsed configuration: ``$XDG_CACHE_HOME/netra-rm``."""
    base = get("XDG_CACHE_HOME", env)
    if base:
        return Path(base) / "netra-rm"
    home = get("HOME", env)
    return (Path(home) if home else Path.home()) / ".cache" / "netra-rm"


def state_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where netra-rm keeps its ledger by default: ``$XDG_STATE_HOME/netra-rm``."""
    base = get("XDG_STATE_HOME", env)
    if base:
        return Path(base) / "netra-rm"
    home = get("HOME", env)
    return (Path(home) if home else Path.home()) / ".local" / "state" / "netra-rm"


def limit_overrides(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Raw values of the global cap variables that are set, by variable name."""
    return {name: value for name in LIMIT_VARIABLES if (value := get(name, env)) is not None}


def run_allocation(env: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    """``(allocation id, layer)`` that ``netra-rm run`` gave this process tree, if any."""
    ident, layer = get("NETRA_RM_ALLOCATION_ID", env), get("NETRA_RM_LAYER", env)
    return (ident, layer) if ident and layer else None


def github_step_summary(env: Mapping[str, str] | None = None) -> str | None:
    """The file GitHub Actions shows as the step's summary (``GITHUB_STEP_SUMMARY``), if set."""
    return get("GITHUB_STEP_SUMMARY", env)


def journal_max_bytes(env: Mapping[str, str] | None = None) -> int | None:
    """``NETRA_RM_JOURNAL_MAX_BYTES``: rotate the allocation journal past this size."""
    value = get("NETRA_RM_JOURNAL_MAX_BYTES", env)
    if value is None:
        return None
    return int(env_number("NETRA_RM_JOURNAL_MAX_BYTES", value, numbers.JOURNAL_BYTES))


#: ``NETRA_RM_LOCK_TIMEOUT``'s default: seconds to wait for the file ledger's lock.
DEFAULT_LOCK_TIMEOUT = 10.0


def lock_timeout(env: Mapping[str, str] | None = None) -> float:
    """``NETRA_RM_LOCK_TIMEOUT``: the longest wait, in seconds, for the file ledger's lock
    (default 10; 0 tries once). Anything but a finite number in range is bad input (exit 2)."""
    value = get("NETRA_RM_LOCK_TIMEOUT", env)
    if value is None:
        return DEFAULT_LOCK_TIMEOUT
    return float(env_number("NETRA_RM_LOCK_TIMEOUT", value, numbers.LOCK_SECONDS))


def shared_group(env: Mapping[str, str] | None = None) -> bool:
    """``NETRA_RM_SHARED_GROUP=1``: several users of one group share the ledger's directory
    (a group-owned setgid directory; files are created 0660 and group members' files are
    trusted). Off by default: then only the user's own (or root's) files are used."""
    return _flag("NETRA_RM_SHARED_GROUP", env)


def _flag(name: str, env: Mapping[str, str] | None) -> bool:
    return get(name, env) not in (None, "0", "false", "no")


def env_number(name: str, value: str, rng: Range) -> float | int:
    """The number in variable ``name``, checked against ``rng``; bad input (exit 2) naming
    the variable and the range otherwise."""
    return numbers.finite(name, value, rng, remediation=f"Set {name} to {rng.describe()}, or unset it.")


def journal_sync(env: Mapping[str, str] | None = None) -> bool:
    """``NETRA_RM_JOURNAL_SYNC=1``: fdatasync each journal append (survives power loss)."""
    return _flag("NETRA_RM_JOURNAL_SYNC", env)


def child_environment(extra: Mapping[str, str], env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a command that ``netra-rm run`` starts: ours plus ``extra``."""
    return {**environ(env), **extra}


def expand_home(path: str, env: Mapping[str, str] | None = None) -> str:
    """``path`` with a leading ``~`` replaced by ``HOME`` (as the shell would), else unchanged."""
    if path == "~" or path.startswith("~/"):
        home = get("HOME", env) or str(Path.home())
        return home + path[1:]
    return path


def search_path(env: Mapping[str, str] | None = None) -> str | None:
    """``PATH``, where commands that netra-rm runs (start/stop commands, docker) are found."""
    return get("PATH", env)


def docker_program(env: Mapping[str, str] | None = None) -> str:
    """The Docker client that Compose discovery runs: ``NETRA_RM_DOCKER``, else ``docker``."""
    return get("NETRA_RM_DOCKER", env) or "docker"


def compose_program(env: Mapping[str, str] | None = None) -> str:
    """The standalone Compose that discovery runs when the Docker client has no compose
    plugin: ``NETRA_RM_DOCKER_COMPOSE``, else ``docker-compose``."""
    return get("NETRA_RM_DOCKER_COMPOSE", env) or "docker-compose"


def completion_request(env: Mapping[str, str] | None = None) -> dict[str, str] | None:
    """What a completion script asks for on a TAB (``_NETRA_RM_COMPLETE`` and the words
    on the line, as Typer's scripts pass them), or None when this is no completion call."""
    e = environ(env)
    instruction = e.get("_NETRA_RM_COMPLETE")
    if not instruction:
        return None
    return {"instruction": instruction, "comp_words": e.get("COMP_WORDS", ""), "comp_cword": e.get("COMP_CWORD", ""),
            "args": e.get("_TYPER_COMPLETE_ARGS", ""), "fish_action": e.get("_TYPER_COMPLETE_FISH_ACTION", "")}


def variables_set(names: Iterable[str], env: Mapping[str, str] | None = None) -> list[str]:
    """Those of ``names`` that are set (and not empty), such as the services' ``url_env``."""
    return [name for name in names if get(name, env) is not None]


def enforce_with(env: Mapping[str, str] | None = None) -> list[str] | None:
    """``NETRA_RM_ENFORCE_WITH``: the enforcement mechanisms ``run --enforce`` may use, in
    order (comma-separated, e.g. ``watchdog``); None: all of them, best first."""
    value = environ(env).get("NETRA_RM_ENFORCE_WITH", "").strip()
    return [name.strip() for name in value.split(",") if name.strip()] if value else None
