"""What a kind of service is to netra-rm: how to reach it, how to prove it works, and
what to tell a person when it does not.

Each kind is one module of :mod:`netra_rm.services` (``postgresql``, ``redis``, ...) that
defines ``KIND``, an instance of a :class:`ServiceKind` subclass, and one row in the
registry :mod:`netra_rm.config.kinds`. The module imports its driver (psycopg, redis-py,
httpx) only inside :meth:`ServiceKind.probe`, so naming a kind, advising on it or
matching it in a compose file loads no driver.

The remediation steps of :mod:`netra_rm.services.remediation` are the same for every
kind; the kind fills in what only it knows (how to start one, how to check a password by
hand, how to create a database) through the methods below, each of which has a plain
default.
"""

from __future__ import annotations

import abc
import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from netra_rm.config.kinds import SERVICE_KINDS
from netra_rm.config.service import ServiceSpec
from netra_rm.redact import mask_url

if TYPE_CHECKING:
    from .probe import Probe


@dataclass(frozen=True)
class Where:
    """A service's address as a remediation step shows it: taken from its URL even when
    the URL is malformed (``HOST`` and ``PORT`` stand in for what is missing); ``socket``
    is the Unix socket the URL names, if any. Never holds a password."""

    host: str
    port: int | str
    user: str | None = None
    database: str | None = None
    socket: str | None = None


class ServiceKind(abc.ABC):
    """One kind of service. Subclasses set the class attributes and :meth:`probe`; the
    other methods are remediation text with defaults that suit any service."""

    #: the word in the configuration (``kind: postgresql``), as in the registry
    name: ClassVar[str]
    #: the name people know it by in messages ("PostgreSQL"); the service's own name when None
    title: ClassVar[str | None] = None
    #: the URL schemes it accepts, each with its default port (None: the URL must give one);
    #: the first is the usual one
    schemes: ClassVar[Mapping[str, int | None]]
    #: the modules :meth:`probe` imports, each with what to ``pip install`` when it is missing;
    #: they are imported before the checks' clocks start (imports hold the GIL)
    drivers: ClassVar[Mapping[str, str]] = {}
    #: libpq's socket form (``postgresql://u@/db?host=/run/postgresql``): the file in that directory
    socket_file: ClassVar[str | None] = None
    #: whether the first segment of the URL's path names a database
    database_in_path: ClassVar[bool] = False
    #: Compose discovery: the port a server of this kind listens on inside its container ...
    container_port: ClassVar[int | None] = None
    #: ... and the base names of the images that run one (``postgres``, ``postgis``)
    images: ClassVar[tuple[str, ...]] = ()

    @abc.abstractmethod
    def probe(self, spec: ServiceSpec) -> Probe:
        """Prove that ``spec``'s service works (importing the driver here, not at module
        level); raise :class:`~netra_rm.errors.ServiceCheckError` with a reason word
        otherwise. :func:`netra_rm.services.probe.run_probe` times it and makes the result."""

    def load_drivers(self) -> None:
        """Import :attr:`drivers`; raises ``ImportError`` naming the one that is missing."""
        for module in self.drivers:
            importlib.import_module(module)

    @property
    def usual_port(self) -> int | None:
        """The default port of the usual scheme (the first of :attr:`schemes`)."""
        return next(iter(self.schemes.values()), None)

    def title_for(self, spec: ServiceSpec) -> str:
        """The kind's name for messages, or the service's own when the kind has none."""
        return self.title or spec.name

    # -- remediation: pure text, every URL masked ------------------------------------------

    def start_step(self, spec: ServiceSpec, where: Where) -> str:
        """How to start a server of this kind at ``where`` (no start command is configured)."""
        return f"Start {spec.name} so that it listens on {where.host}:{where.port}."

    def missing_password_step(self, spec: ServiceSpec, where: Where, setting: str) -> str:
        """The server wants a password and ``setting`` (the URL's variable or key) has none."""
        who = f"user {where.user!r}" if where.user else "its user"
        return (f"{self.title_for(spec)} at {where.host}:{where.port} wants a password for {who} and {setting} "
                f"has none: add it to {setting} after the user name (`{where.user or 'USER'}:` then the "
                f"password, percent-encoded, before `@`).")

    def credentials_check(self, spec: ServiceSpec, where: Where) -> list[str]:
        """A command that checks the credentials by hand, asking for the password (none by default)."""
        return []

    def create_database(self, spec: ServiceSpec, where: Where, database: str) -> str:
        """How to create ``database`` on the server at ``where``."""
        return f"create database {database!r}"

    def health_target(self, spec: ServiceSpec) -> str:
        """What the check asked, for "did not answer as a healthy one would"."""
        return f"{spec.name} at {mask_url(spec.url)}"

    def example_url(self, where: Where) -> str:
        """A well-formed URL for ``where``, for "fix the address"."""
        scheme = next(iter(self.schemes), "http")
        return f"{scheme}://{where.host}:{where.port}"


class _AnyKind(ServiceKind):
    """The defaults alone: advice for a service whose kind has no module."""

    name = "unknown"
    schemes: ClassVar[Mapping[str, int | None]] = {"http": None}

    def probe(self, spec: ServiceSpec) -> Probe:
        raise NotImplementedError(f"no checker for kind {spec.kind!r}")


#: What :func:`kind_or_default` falls back to.
ANY_KIND: ServiceKind = _AnyKind()


def find_kind(name: str) -> ServiceKind | None:
    """The kind called ``name`` (its module imported now: no driver with it), or None
    when the registry has no such row."""
    module = SERVICE_KINDS.get(name)
    if module is None:
        return None
    kind: ServiceKind = importlib.import_module(module).KIND
    return kind


def kind_or_default(name: str) -> ServiceKind:
    """The kind called ``name``, or the defaults when there is none (or its module is broken)."""
    try:
        return find_kind(name) or ANY_KIND
    except ImportError:
        return ANY_KIND
