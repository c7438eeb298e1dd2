"""Planning `up`, alone: what it does with each service given one round of checks. Pure
data in, a plan out: no processes, no servers, no clock."""

from __future__ import annotations

import pytest

from netra_rm.config import load_config
from netra_rm.config.service import AddressOrigin, ComposeOrigin, ServiceSpec
from netra_rm.core.startup import plan_up, resolve_targets
from netra_rm.errors import UnknownNameError
from netra_rm.services.result import ServiceResult

# db and cache at level 0, api on both (1), web on api (2)
DEPS = {"db": (), "cache": (), "api": ("db", "cache"), "web": ("api",)}
ORDER = ["cache", "db", "api", "web"]


def spec(name: str, *, start: tuple[str, ...] | None = None, **fields: object) -> ServiceSpec:
    return ServiceSpec(name=name, kind="tcp", url=f"tcp://127.0.0.1:70{len(name)}", depends_on=DEPS[name],
                       start=("start-it", name) if start is None else start, **fields)  # type: ignore[arg-type]


def result(name: str, status: str = "healthy", reason: str = "ok", *, terminal: bool = False,
           remediation: tuple[str, ...] = ()) -> ServiceResult:
    return ServiceResult(name=name, kind="tcp", status=status, url=f"tcp://127.0.0.1:70{len(name)}",  # type: ignore[arg-type]
                         reason=reason, terminal=terminal, error=None if status == "healthy" else f"{name}: {reason}",
                         remediation=remediation)


SPECS = {name: spec(name) for name in DEPS}


def actions(plan: object) -> dict[str, str]:
    return {name: step.action for name, step in plan.steps.items()}  # type: ignore[attr-defined]


def test_healthy_services_are_left_alone_and_the_rest_started_level_by_level() -> None:
    results = {"cache": result("cache"), "db": result("db", "unhealthy", "refused"),
               "api": result("api", "unhealthy", "refused"), "web": result("web", "blocked", "blocked")}
    plan = plan_up(ORDER, SPECS, results, DEPS)
    assert plan.failed is None
    assert plan.actions == {"cache": "left_alone", "db": "start", "api": "start", "web": "start"}
    assert plan.levels == {0: ("db",), 1: ("api",), 2: ("web",)}
    assert list(plan.steps) == ORDER
    assert [plan.steps[n].level for n in ORDER] == [0, 0, 1, 2]
    assert set(actions(plan).values()) == {"left_alone"}  # as they stand before anything runs
    assert plan.steps["db"].command == "start-it db" and plan.steps["db"].status == "unhealthy"


def test_a_service_coming_up_by_itself_is_waited_for_not_started_again() -> None:
    results = {name: result(name) for name in ORDER} | {"db": result("db", "unhealthy", "starting"),
                                                        "cache": result("cache", "unhealthy", "loading")}
    plan = plan_up(ORDER, SPECS, results, DEPS)
    assert plan.actions["db"] == plan.actions["cache"] == "wait"
    assert plan.levels == {0: ("cache", "db")}


def test_a_dry_run_says_what_it_would_do() -> None:
    results = {name: result(name) for name in ORDER} | {"db": result("db", "unhealthy", "too_many_connections"),
                                                        "web": result("web", "unhealthy", "refused")}
    plan = plan_up(ORDER, SPECS, results, DEPS, dry_run=True)
    assert actions(plan) == {"cache": "left_alone", "db": "would_wait", "api": "left_alone", "web": "would_start"}


def test_a_service_without_a_start_command_fails_the_plan_naming_its_dependents() -> None:
    specs = {**SPECS, "db": spec("db", start=())}
    results = {name: result(name, "unhealthy", "refused") for name in ORDER}
    plan = plan_up(ORDER, specs, results, DEPS, targets=("web",))
    assert plan.failed == "db" and plan.levels == {}
    assert plan.message == ("db is down (refused) and has no start command, so netra-rm cannot start it; "
                            "api, web depend on it")
    assert plan.remediation[0] == ("Give it one in the configuration, e.g. `services.db.start: [docker, compose, "
                                   "up, -d, db]`, or start db yourself and run `netra-rm up` again.")
    assert actions(plan) == {"cache": "not_reached", "db": "no_start_command", "api": "not_reached",
                             "web": "not_reached"}
    dry = plan_up(ORDER, specs, results, DEPS, targets=("web",), dry_run=True)
    assert actions(dry) == {"cache": "would_start", "db": "no_start_command", "api": "would_start",
                            "web": "would_start"}


def test_the_start_command_it_suggests_is_the_compose_one_when_compose_gave_the_address() -> None:
    compose = ComposeOrigin(service="postgres", via="engine", command="docker compose -f ci/compose.yaml")
    specs = {**SPECS, "web": spec("web", start=(), origin=AddressOrigin(compose=compose))}
    results = {name: result(name) for name in ORDER} | {"web": result("web", "unhealthy", "refused")}
    plan = plan_up(ORDER, specs, results, DEPS, targets=("frontend",))
    assert plan.message is not None and plan.message.endswith("; frontend needs it")
    assert "`services.web.start: [docker, compose, -f, ci/compose.yaml, up, -d, postgres]`" in plan.remediation[0]


def test_a_service_that_answers_wrongly_cannot_be_started_and_keeps_its_checks_steps() -> None:
    results = {name: result(name) for name in ORDER} | {
        "cache": result("cache", "unhealthy", "auth", terminal=True, remediation=("Put the right password in X.",))}
    plan = plan_up(ORDER, SPECS, results, DEPS)
    assert plan.failed == "cache" and plan.actions["cache"] == "cannot_start"
    assert plan.message == ("cache answers but is not usable, and starting it again would not help: cache: auth; "
                            "api, web depend on it")
    assert plan.remediation == ("Put the right password in X.",)


def test_command_lines_in_the_plan_are_masked() -> None:
    specs = {**SPECS, "cache": spec("cache", start=("redis-server", "--requirepass", "s3cr3t-pw"))}
    results = {name: result(name) for name in ORDER}
    plan = plan_up(ORDER, specs, results, DEPS, secrets=["s3cr3t-pw"])
    assert plan.steps["cache"].command == "redis-server --requirepass ***"


def test_targets_are_layers_or_services_with_what_they_depend_on() -> None:
    config = load_config(env={})
    assert resolve_targets(config, ["core_integration"]) == ["postgresql", "redis"]
    assert resolve_targets(config, ["backend"]) == ["postgresql", "redis", "auth", "backend"]
    assert resolve_targets(config, []) == ["clickhouse", "postgresql", "redis", "auth", "backend", "frontend",
                                           "websocket"]
    with pytest.raises(UnknownNameError, match="unknown layer or service 'nope'"):
        resolve_targets(config, ["nope"])
