"""The relay connects wherever Django connects (issue 13, point 6): every DATABASE_URL form that
dj-database-url accepts reaches the relay's LISTEN connection, through real relay processes; and a
relay that cannot connect says so in one line, in /healthz and in `outbox status`."""

import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import Client

from outbox.models import Delivery
from purchases.models import Course
from tests.support.processes import Processes
from tests.support.purchases import buy
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.processes]


def server_socket_dir() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SHOW unix_socket_directories")
        dirs = [d.strip() for d in cursor.fetchone()[0].split(",") if d.strip().startswith("/")]
    if not dirs:
        pytest.skip("the server listens on no unix socket directory")
    return dirs[0]


@pytest.fixture
def socket_dir() -> Iterator[str]:
    """A socket directory of our own (a link to the server's socket), which no default points at, as
    with pgserver's or a managed database's directory: only a relay that uses the URL finds it."""
    with connection.cursor() as cursor:
        cursor.execute("SHOW port")
        port = cursor.fetchone()[0]
    name = f".s.PGSQL.{port}"
    path = tempfile.mkdtemp(prefix="pgs-")  # short: a socket path is limited to about 100 bytes
    os.symlink(os.path.join(server_socket_dir(), name), os.path.join(path, name))
    yield path
    shutil.rmtree(path)


def url_forms(socket_dir: str) -> dict[str, tuple[str, dict[str, str]]]:
    """name: (DATABASE_URL, environment). libpq's defaults lead nowhere (PGHOST) or fail (PGSSLMODE=require
    on a server without SSL): only what the URL says works."""
    s = connection.settings_dict
    user, name, encoded = s["USER"], s["NAME"], quote(socket_dir, safe="")
    nowhere = {"PGHOST": "/nonexistent"}
    forms = {
        "host-query-socket-dir": (f"postgresql://{user}:@/{name}?host={socket_dir}", nowhere),
        "percent-encoded-socket-path": (f"postgres://{user}@{encoded}/{name}", nowhere),
        "socket-with-options": (f"postgres://{user}@{encoded}/{name}?connect_timeout=5", nowhere),
    }
    if s["HOST"] and not str(s["HOST"]).startswith("/"):
        tcp = f"postgres://{user}@{s['HOST']}:{s['PORT'] or 5432}/{name}?sslmode=disable"
        forms["tcp-sslmode"] = (tcp, {"PGSSLMODE": "require"})
    return forms


def listener_backends() -> list[tuple[Any, ...]]:
    """The relay processes' LISTEN connections: (client address, application_name)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT client_addr, application_name FROM pg_stat_activity "
            "WHERE datname = current_database() AND query LIKE 'LISTEN %%' AND pid <> pg_backend_pid()"
        )
        return list(cursor.fetchall())


@pytest.mark.parametrize(
    "form", ["host-query-socket-dir", "percent-encoded-socket-path", "socket-with-options", "tcp-sslmode"]
)
def test_the_relay_delivers_with_every_database_url_form(
    form: str, socket_dir: str, student: Any, course: Course, processes: Processes
) -> None:
    forms = url_forms(socket_dir)
    if form not in forms:
        pytest.skip("the test database is not reached over TCP")
    url, env = forms[form]
    relay = processes.relay(DATABASE_URL=url, **env)
    wait_until(listener_backends, timeout=60, what=f"the relay's LISTEN connection ({form})")
    (client_addr, application_name), *_ = listener_backends()
    assert (client_addr is None) == (form != "tcp-sslmode")  # a unix socket where the URL says so
    assert application_name == "coursechain-test-subprocess"  # Django's OPTIONS reached it too
    buy(student, course, "pay_form")
    realtime = Delivery.objects.filter(sink="realtime")
    wait_until(lambda: realtime.filter(status="done").exists(), timeout=30, what="the relay to deliver")
    assert relay.poll() is None
    assert "cannot connect" not in processes.log("relay")


def test_a_relay_that_cannot_connect_says_why_once_and_healthz_and_status_report_it(
    processes: Processes,
) -> None:
    s = connection.settings_dict
    # target_session_attrs=standby: refused by our primary server at every attempt, and only an
    # option that reaches the connection can cause that.
    url = f"postgres://{s['USER']}@{quote(s['HOST'] or server_socket_dir(), safe='')}"
    url += f"{':' + str(s['PORT']) if s['PORT'] else ''}/{s['NAME']}?target_session_attrs=standby"
    processes.relay(DATABASE_URL=url)

    def reported() -> Any:
        body = json.loads(Client().get("/healthz").content)
        return body["checks"]["relay"].get("cannot_connect")

    (report,) = wait_until(reported, timeout=60, what="/healthz to report the relay")
    assert "standby" in report["cause"] and report["for_seconds"] >= 3
    response = Client().get("/healthz")
    # Reported, but web stays ready: taking payments needs only the database (issue 16's readiness).
    assert response.status_code == 200 and json.loads(response.content)["status"] == "degraded"
    out = io.StringIO()
    with pytest.raises(SystemExit) as exited:
        call_command("outbox", "status", "--check", stdout=out)
    assert exited.value.code == 2 and "cannot connect to the database" in out.getvalue().splitlines()[0]
    out = io.StringIO()
    call_command("outbox", "status", stdout=out)
    assert f"relay {report['relay_id']}: CANNOT CONNECT to the database" in out.getvalue()
    out = io.StringIO()
    call_command("outbox", "status", "--json", stdout=out)
    assert json.loads(out.getvalue())["relays_cannot_connect"][0]["relay_id"] == report["relay_id"]
    wait_until(lambda: processes.log("relay").count("lost its database connection") == 1, what="the first warning")
    lines = [line for line in processes.log("relay").splitlines() if "cannot connect to the database" in line]
    assert len(lines) == 1 and "standby" in lines[0], lines
