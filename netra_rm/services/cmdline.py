"""Start and stop commands as people see them: one line, secrets masked.

Pure text: no processes here (those are in :mod:`netra_rm.core.startup`). A command
line or the output of a command may carry a password (``redis-server --requirepass``,
``PGPASSWORD=...``, the URL itself); everything shown goes through :func:`mask_command`.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Sequence

from ..redact import MASK, mask_text, url_password
from .spec import ServiceSpec

#: Options whose next argument is a secret (``redis-server --requirepass S``, ``redis-cli -a S``).
SECRET_OPTIONS: frozenset[str] = frozenset({
    "--requirepass", "--masterauth", "--password", "--pass", "--passwd", "-a", "--auth", "--token",
    "--secret", "--api-key",
})
# NAME=value and --name=value where the name says it is a secret
_SECRET_ASSIGNMENT = re.compile(
    r"(?i)(?P<key>(?:--)?[A-Za-z0-9_.-]*(?:password|passwd|secret|token|api[_-]?key|auth)[A-Za-z0-9_]*=)"
    r"(?P<val>[^\s'\"]+)")
_SECRET_NAME = re.compile(r"(?i)password|passwd|secret|token|api[_-]?key|auth|credential")


def command_line(argv: Sequence[str], *, shell: bool = False) -> str:
    """The command as one line a person could paste into a shell (not yet masked)."""
    if shell:
        return " ".join(argv)
    return shlex.join(argv)


def secrets_of(spec: ServiceSpec) -> list[str]:
    """What must never be shown for ``spec``: its URL's password, secret-looking variables
    of its ``environment`` and the arguments that follow a password option."""
    found: list[str] = []
    password = url_password(spec.url)
    if password:
        found.append(password)
    found.extend(value for name, value in spec.environment.items() if _SECRET_NAME.search(name))
    for argv in (spec.start, spec.stop):
        words = list(argv)
        if spec.shell and argv:
            try:
                words = shlex.split(argv[0])
            except ValueError:
                words = argv[0].split()
        for option, value in zip(words, words[1:]):
            if option in SECRET_OPTIONS:
                found.append(value)
    return [s for s in dict.fromkeys(found) if s]


def secrets_of_all(specs: Iterable[ServiceSpec]) -> list[str]:
    """The secrets of every service: a start command may quote another service's password."""
    found: list[str] = []
    for spec in specs:
        found.extend(secrets_of(spec))
    # longest first, so a secret that contains another is masked whole
    return sorted(dict.fromkeys(found), key=len, reverse=True)


def mask_command(text: str, secrets: Sequence[str] = ()) -> str:
    """``text`` (a command line or its output) with every secret replaced by ``***``."""
    if not text:
        return text
    out = mask_text(text, list(secrets))
    out = _SECRET_ASSIGNMENT.sub(lambda m: m.group("key") + MASK if m.group("val") != MASK else m.group(0), out)
    words = out.split(" ")
    for i in range(len(words) - 1):
        if words[i] in SECRET_OPTIONS and words[i + 1]:
            words[i + 1] = MASK
    return " ".join(words)


def shown_command(spec: ServiceSpec, argv: Sequence[str], secrets: Sequence[str] = ()) -> str:
    """``argv`` of ``spec`` (its start or stop command) as one masked line."""
    return mask_command(command_line(argv, shell=spec.shell), [*secrets, *secrets_of(spec)])
