"""A service's start and stop commands as people see them: one line, secrets masked.

Pure text: no processes here (those are in :mod:`netra_rm.core.startup.commands`). A command
line or the output of a command may carry a password (``redis-server --requirepass``,
``PGPASSWORD=...``, the URL itself); everything shown goes through :func:`mask_command`.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Sequence

from netra_rm.config.service import ServiceSpec
from netra_rm.redact import MASK, mask_spans, mask_text, url_secrets

#: Options whose next argument is a secret (``redis-server --requirepass S``, ``redis-cli -a S``).
SECRET_OPTIONS: frozenset[str] = frozenset({
    "--requirepass", "--masterauth", "--password", "--pass", "--passwd", "-a", "--auth", "--token",
    "--secret", "--api-key",
})
# NAME=value and --name=value where the name says it is a secret. Found in lower-cased
# text from the secret word on (a literal alternation scans fast), the rest of the name
# bounded to 64 characters, so masking stays linear in the text.
_SECRET_WORDS = r"password|passwd|secret|token|api[_-]?key|auth|credential"
_SECRET_NAME = re.compile(_SECRET_WORDS, re.IGNORECASE)
_SECRET_ASSIGNMENT = re.compile(r"(?:" + _SECRET_WORDS + r")[a-z0-9_.-]{0,64}=([^\s'\"]+)")
_SECRET_ASSIGNMENT_ANY_CASE = re.compile(_SECRET_ASSIGNMENT.pattern, re.IGNORECASE)
# a secret option as a whole word (after a space) and the word after it
_OPTION_VALUE = re.compile(r" (?P<option>"
                           + "|".join(re.escape(o) for o in sorted(SECRET_OPTIONS, key=len, reverse=True))
                           + r") [^ ]+")


def command_line(argv: Sequence[str], *, shell: bool = False) -> str:
    """The command as one line a person could paste into a shell (not yet masked)."""
    if shell:
        return " ".join(argv)
    return shlex.join(argv)


def secrets_of(spec: ServiceSpec) -> list[str]:
    """What must never be shown for ``spec``: its URL's password, secret-looking variables
    of its ``environment`` and the arguments that follow a password option."""
    found: list[str] = []
    found.extend(url_secrets(spec.url))
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
    if "=" in out:
        lowered = out.lower()
        found = (_SECRET_ASSIGNMENT.finditer(lowered) if len(lowered) == len(out)
                 else _SECRET_ASSIGNMENT_ANY_CASE.finditer(out))
        out = mask_spans(out, [m.span(1) for m in found if m.group(1) != MASK.lower()])
    return _OPTION_VALUE.sub(rf" \g<option> {MASK}", " " + out)[1:]


def shown_command(spec: ServiceSpec, argv: Sequence[str], secrets: Sequence[str] = ()) -> str:
    """``argv`` of ``spec`` (its start or stop command) as one masked line."""
    return mask_command(command_line(argv, shell=spec.shell), [*secrets, *secrets_of(spec)])
