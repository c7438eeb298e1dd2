"""A hostile neighbour: a real unprivileged local user, and a shared 1777 directory.

The tests run as root here, so an attack by "another user" is made by one: a user created
with ``useradd`` for the session (removed at its end), whose steps run as that user in a
child process. Tests that need it are skipped, with the reason, when not run as root or
when ``useradd`` is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class LocalUser:
    """An unprivileged user on this machine."""

    name: str
    uid: int
    gid: int

    def run(self, *argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` as this user (no supplementary groups), from ``/``."""
        return subprocess.run(list(argv), user=self.uid, group=self.gid, extra_groups=[], cwd="/",
                              env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/",
                                   **(env or {})},
                              capture_output=True, text=True, timeout=60)

    def sh(self, script: str, *args: str) -> subprocess.CompletedProcess[str]:
        """Run a shell ``script`` (``$1``... are ``args``) as this user; fails the test when it
        fails. (A shell, not Python: the interpreter may sit where this user cannot reach.)"""
        done = self.run("/bin/sh", "-c", script, "sh", *args)
        assert done.returncode == 0, f"the other user's step failed: {done.stderr}"
        return done


@pytest.fixture(scope="session")
def other_user() -> Iterator[LocalUser]:
    """A real unprivileged user for the session (``useradd``), removed at its end."""
    if os.geteuid() != 0:
        pytest.skip("needs root: another user is created with useradd to play the attacker")
    if not shutil.which("useradd") or not shutil.which("userdel"):
        pytest.skip("useradd/userdel are not installed: no other user can play the attacker")
    name = f"nrm-other-{os.getpid() % 100000}"
    made = subprocess.run(["useradd", "--system", "--no-create-home", "--user-group", "--shell",
                           "/usr/sbin/nologin", name], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"useradd could not create a user: {made.stderr.strip()}")
    import pwd

    entry = pwd.getpwnam(name)
    try:
        yield LocalUser(name, entry.pw_uid, entry.pw_gid)
    finally:
        subprocess.run(["userdel", name], capture_output=True)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory every user may write, with the sticky bit (like /tmp), that the other
    user can reach (pytest's own temp directories are private to root)."""
    path = Path(tempfile.mkdtemp(prefix="netra-rm-shared-", dir="/tmp"))
    os.chmod(path, 0o1777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
