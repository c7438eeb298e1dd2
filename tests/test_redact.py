"""Secrets are masked by the structure of a URL, not by patterns over text: each form a
password takes (raw ``/``, ``#``, ``@``; a ``?password=`` whose name is percent-encoded)
through every output, only the secret touched, and in linear time."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from netra_rm.config.commands import mask_command
from netra_rm.redact import mask_text, mask_url, normalized_url, url_password, url_secrets

from servers import PostgresServer, RedisServer, Server

# passwords as generated ones often are; each part on either side of / # @ is distinctive
SLASH, HASH, AT = "Slq7/ash-Pw-1x", "Haq7#sh-Pw-2y", "Atq7@t-Pw-3z"
QUERY = "Qryq7-Pw-4w"
FORMS = {"slash": SLASH, "hash": HASH, "at": AT}


def _fragments(secret: str) -> list[str]:
    """The secret and each piece of it between / # @ (a driver that splits the URL
    wrongly would show a piece)."""
    pieces = [secret]
    for sep in "/#@":
        pieces = [p for piece in pieces for p in piece.split(sep)] + pieces
    return sorted({p for p in pieces if len(p) >= 4}, key=len, reverse=True)


ALL_FRAGMENTS = [f for secret in (*FORMS.values(), QUERY) for f in _fragments(secret)]


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for fragment in ALL_FRAGMENTS:
            assert fragment not in text, f"{fragment!r} shown in: {text[:2000]}"


# -- the rules, in-process -------------------------------------------------------------------

@pytest.mark.parametrize("form", FORMS)
def test_each_raw_password_form_is_masked_whole(form: str) -> None:
    password = FORMS[form]
    for url, masked in ((f"redis://:{password}@cache:6379/0", "redis://:***@cache:6379/0"),
                        (f"postgresql://app:{password}@db:5432/test?sslmode=require",
                         "postgresql://app:***@db:5432/test?sslmode=require"),
                        (f"http://u:{password}@h/health#top", "http://u:***@h/health#top")):
        assert mask_url(url) == masked
        assert url_password(url) == password
        assert password in url_secrets(url)
        assert mask_text(f"cannot reach {url}: refused") == f"cannot reach {masked}: refused"


def test_secret_query_parameters_are_masked_by_their_decoded_name() -> None:
    url = (f"http://ch:8123/?user=app&pass%77ord={QUERY}&%54OKEN=t1&api_key=k2&my+secret=s3&x=password"
           "&sslkey=/k&keepalive=1&db=password#frag")
    assert mask_url(url) == ("http://ch:8123/?user=app&pass%77ord=***&%54OKEN=***&api_key=***&my+secret=***"
                             "&x=password&sslkey=***&keepalive=1&db=password#frag")
    assert {QUERY, "t1", "k2", "s3"} <= set(url_secrets(url))


def test_only_the_secret_is_touched() -> None:
    """Text that merely contains password= is left whole: a category, a journal line, JSON."""
    for text in ("login password=hunter2 tests", 'x password="y"', "token=abc&secret=def", "a://", "://x@y"):
        assert mask_text(text) == text
    line = json.dumps({"category": "db password=y", "url": f"redis://:{SLASH}@h/0", "n": 1})
    masked = mask_text(line)
    assert json.loads(masked) == {"category": "db password=y", "url": "redis://:***@h/0", "n": 1}
    assert mask_url("unix:///run/redis.sock") == "unix:///run/redis.sock"
    assert mask_url("http://host/a@b.example") == "http://host/a@b.example"  # no password in it
    assert mask_text(f"x {HASH} y", [HASH]) == "x *** y"


def test_normalized_url_lets_drivers_read_a_raw_password_as_written() -> None:
    assert normalized_url(f"redis://:{HASH}@cache:6379/0") == "redis://:Haq7%23sh-Pw-2y@cache:6379/0"
    assert normalized_url(f"postgresql://app:{SLASH}@db/t") == "postgresql://app:Slq7%2Fash-Pw-1x@db/t"
    for plain in ("redis://:simple@h/0", "postgresql://a:p%2Fq@h/db", "http://h/a@b", "http://h:1/x"):
        assert normalized_url(plain) == plain


def test_masking_is_linear_in_the_text() -> None:
    """A 1 MB value took minutes before (100 KB: 10-40 s); bench/bench_redact.py has the figures.
    The bound here is loose, for a loaded machine: linear stays far below it."""
    size = 1_000_000
    texts = ["a" * size, "redis://u:" + "x" * size + "@h/0", "http://h/?" + "p=1&token=2&" * (size // 12),
             ('{"category":"password=' + "y" * 40 + '",') * (size // 64),
             "PGPASSWORD=" + "b" * size, "--password " * (size // 11)]
    for text in texts:
        started = time.perf_counter()
        mask_command(mask_text(text, [SLASH, HASH]), [AT])
        assert time.perf_counter() - started < 2.0


# -- every output, through the real command line ---------------------------------------------

DOWN = "127.0.0.1:9"  # the discard port: nothing answers
ENV = {"DATABASE_URL": f"postgresql://app:{SLASH}@{DOWN}/app", "REDIS_URL": f"redis://:{HASH}@{DOWN}/0",
       "BACKEND_URL": f"http://svc:{AT}@{DOWN}/", "CLICKHOUSE_URL": f"http://default@{DOWN}/?pass%77ord={QUERY}",
       "AUTH_SERVICE_URL": f"http://{DOWN}", "FRONTEND_URL": f"http://{DOWN}", "WEBSOCKET_URL": f"ws://{DOWN}/ws"}


def test_each_form_appears_in_no_output(cli, tmp_path: Path, ledger_path: Path) -> None:
    summary = tmp_path / "summary.md"
    env = {**ENV, "GITHUB_STEP_SUMMARY": str(summary)}
    runs = [cli("config", "show", env=env), cli("--json", "config", "show", env=env),
            cli("status", "--json", env=env), cli("status", "--format", "github", env=env),
            cli("layer", "e2e_background", "--format", "github", env=env),
            cli("--json", "layer", "service_integration", env=env), cli("layer", "core_integration", env=env),
            cli("allocate", "--layer", "core_integration", "--category", "c", "--requires", "postgresql",
                "--requires", "redis", env=env)]
    for password in (*FORMS.values(), f"?pass%77ord={QUERY}"):
        location = (f"redis://{DOWN}/0{password}" if password.startswith("?")
                    else f"redis://:{password}@{DOWN}/0")
        failed = cli("--ledger", location, "status", env=env)
        assert failed.code == 5, failed.stderr  # the ledger is down: an error naming it
        runs.append(failed)
    for r in runs:
        assert "Traceback" not in r.stderr
        assert_no_secret(r.stdout, r.stderr)
    shown = runs[1].json()["services"]
    assert shown["postgresql"]["url"] == f"postgresql://app:***@{DOWN}/app"
    assert shown["redis"]["url"] == f"redis://:***@{DOWN}/0"
    assert shown["backend"]["url"] == f"http://svc:***@{DOWN}/"
    assert shown["clickhouse"]["url"] == f"http://default@{DOWN}/?pass%77ord=***"
    assert "::error" in runs[3].stdout and summary.read_text().count("netra-rm") >= 2
    assert_no_secret(summary.read_text())
    if ledger_path.exists():
        assert_no_secret(ledger_path.read_text())


def test_start_command_output_is_masked_before_it_is_logged(cli, write_config, ledger_path: Path) -> None:
    config = write_config(f"""
services:
  redis:
    kind: redis
    url: "redis://:{HASH}@{DOWN}/0"
    shell: true
    environment: {{API_TOKEN: "{AT}"}}
    start: |
      echo "connecting to redis://:{HASH}@{DOWN}/0"
      echo "the password is {HASH}, the token $API_TOKEN, the query {QUERY}"
      echo "token: $API_TOKEN" >&2
      exit 3
  clickhouse:
    kind: clickhouse
    url: "http://default@{DOWN}/?pass%77ord={QUERY}"
""")
    r = cli("--config", str(config), "up", "redis", "--timeout", "20")
    assert r.code == 1 and "exited with code 3" in r.stderr, r.stderr
    log = Path(f"{ledger_path}.logs/redis.log").read_text()
    assert "connecting to redis://:***@" in log and "the password is ***, the token ***, the query ***" in log
    assert "token: ***" in log
    assert_no_secret(log, r.stdout, r.stderr)
    assert "the password is ***" in r.stderr  # the output's tail, shown on failure


def test_a_password_category_keeps_its_journal_line_and_verify_is_clean(cli, small_config: Path,
                                                                        ledger_path: Path) -> None:
    cfg = ["--config", str(small_config)]
    granted = cli(*cfg, "allocate", "--layer", "tiny", "--category", "checks password=y", "--memory-mb", "10")
    assert granted.code == 0, granted.stderr
    held = cli(*cfg, "verify")
    assert held.code == 0, held.stdout + held.stderr
    assert cli(*cfg, "release", granted.stdout.strip()).code == 0
    assert cli(*cfg, "verify").code == 0
    lines = [json.loads(line) for line in ledger_path.with_name("ledger.json.journal").read_text().splitlines()]
    assert [e.get("category") for e in lines if e.get("event") in ("grant", "release")] == ["checks password=y"] * 2


# -- against real servers: a raw password works, and is shown nowhere -----------------------

@pytest.fixture(scope="module")
def raw_redis() -> Server:
    from servers import _serve

    yield from _serve(RedisServer(password=HASH.replace("#", "#/@")))


def test_a_raw_password_reaches_real_servers_as_written(cli, raw_redis: RedisServer,
                                                        pg_server: PostgresServer) -> None:
    import psycopg

    with psycopg.connect(pg_server.url, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS netra_raw")
        conn.execute(f"CREATE ROLE netra_raw LOGIN PASSWORD '{SLASH}'")
    env = {**ENV, "REDIS_URL": f"redis://:{raw_redis.password}@127.0.0.1:{raw_redis.port}/0",
           "DATABASE_URL": f"postgresql://netra_raw:{SLASH}@127.0.0.1:{pg_server.port}/{pg_server.database}"}
    r = cli("--json", "status", env=env)
    assert r.code == 0, r.stderr
    services = r.json()["services"]["services"]
    assert services["redis"]["status"] == "healthy", services["redis"]
    assert services["postgresql"]["status"] == "healthy", services["postgresql"]
    wrong = cli("--json", "status", env={**env, "REDIS_URL": f"redis://:{AT}@127.0.0.1:{raw_redis.port}/0"})
    assert wrong.json()["services"]["services"]["redis"]["reason"] in ("auth", "bad_credentials", "wrongpass"), \
        wrong.json()["services"]["services"]["redis"]
    for out in (r, wrong):
        assert_no_secret(out.stdout, out.stderr)
        assert raw_redis.password not in out.stdout
