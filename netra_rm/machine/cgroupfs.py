"""Where the cgroup file systems are, and tidying netra-rm's own directory in them."""

from __future__ import annotations

import os
from dataclasses import dataclass

from netra_rm.machine.base import read_text

#: The directory netra-rm makes its cgroups in, under a controller's mount (v1) or under
#: its own delegated cgroup (v2). It never touches a cgroup outside it.
OWN_DIRECTORY = "netra-rm"


@dataclass(frozen=True)
class Mount:
    path: str
    fstype: str  # "cgroup" (v1) or "cgroup2"
    options: frozenset[str]


def mounts(mountinfo: str = "/proc/self/mounts") -> list[Mount]:
    """The cgroup and cgroup2 mounts listed in ``mountinfo`` (``/proc/self/mounts`` format)."""
    found = []
    for line in (read_text(mountinfo) or "").splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[2] in ("cgroup", "cgroup2"):
            path = parts[1].replace("\\040", " ")
            found.append(Mount(path=path, fstype=parts[2], options=frozenset(parts[3].split(","))))
    return found


def own_cgroup(pid: int | str = "self", *, proc: str = "/proc") -> dict[str, str]:
    """Process ``pid``'s cgroup paths: controller (``""`` for v2) -> path."""
    paths: dict[str, str] = {}
    for line in (read_text(f"{proc}/{pid}/cgroup") or "").splitlines():
        _, controllers, path = line.split(":", 2) if line.count(":") >= 2 else ("", "", "")
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller] = path
    return paths


def remove_leftovers(base: str, *, keep: str = "") -> list[str]:
    """Remove the cgroups under ``base`` that no process uses any more (those a ``run``
    killed with SIGKILL left behind); the names removed."""
    removed: list[str] = []
    try:
        names = os.listdir(base)
    except OSError:
        return removed
    for name in names:
        path = os.path.join(base, name)
        if name == keep or not os.path.isdir(path):
            continue
        procs = read_text(os.path.join(path, "cgroup.procs"))
        if procs is not None and procs.strip():
            continue  # still in use: a command running under another `run`
        try:
            os.rmdir(path)
            removed.append(name)
        except OSError:
            pass
    return removed


def remove(path: str) -> bool:
    """Remove one cgroup directory; False when it is still in use (or already gone)."""
    try:
        os.rmdir(path)
        return True
    except FileNotFoundError:
        return True
    except OSError:
        return False
