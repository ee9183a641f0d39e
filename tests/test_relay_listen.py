"""The relay's LISTEN connection takes Django's own connection parameters: every OPTIONS entry
(sslmode, application_name, ...) holds for it as for Django's connections (outbox/relay/listen.py)."""

import threading
import time
from typing import Any

import psycopg
import pytest
from django.db import connection

from outbox.relay.listen import Listener, conninfo
from outbox.services import NOTIFY_CHANNEL

pytestmark = pytest.mark.django_db

APPLICATION_NAME = "relay-listen-test"


@pytest.fixture
def options(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Django's OPTIONS with an sslmode and an application_name of the test's own."""
    extra = {"sslmode": "disable", "application_name": APPLICATION_NAME, "connect_timeout": 7}
    monkeypatch.setitem(connection.settings_dict, "OPTIONS", {**connection.settings_dict["OPTIONS"], **extra})
    return extra


def test_the_listener_connects_with_every_option_django_has(options: dict[str, Any]) -> None:
    params = conninfo()
    assert {k: params[k] for k in options} == options
    assert params["dbname"] == connection.settings_dict["NAME"]
    assert "pool" not in params and "cursor_factory" not in params  # Django's, not libpq's


def test_a_real_listen_with_those_options_is_woken_by_a_notify(options: dict[str, Any]) -> None:
    listener = Listener()
    try:
        listener.listen()
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT a.application_name, s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)"
                " WHERE a.application_name = %s AND a.query LIKE 'LISTEN%%'",
                [APPLICATION_NAME],
            )
            assert cursor.fetchall() == [(APPLICATION_NAME, False)]  # sslmode=disable: no SSL

        def notify() -> None:
            time.sleep(0.2)
            with psycopg.connect(**conninfo(), autocommit=True) as other:
                other.execute(f"NOTIFY {NOTIFY_CHANNEL}")

        sender = threading.Thread(target=notify)
        started = time.monotonic()
        sender.start()
        listener.wait(timeout=10)
        sender.join()
        assert time.monotonic() - started < 5  # woken by the NOTIFY, not by the timeout
    finally:
        listener.close()


def test_sslmode_require_is_honoured_by_the_listener(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a server without SSL, sslmode=require must fail the LISTEN connection (a listener that
    dropped the option would connect without SSL)."""
    host = str(connection.settings_dict["HOST"] or "")
    if not host or host.startswith("/"):
        pytest.skip("libpq uses no SSL on a unix socket, whatever sslmode says")
    with connection.cursor() as cursor:
        cursor.execute("SHOW ssl")
        if cursor.fetchone()[0] == "on":
            pytest.skip("the server offers SSL: require would succeed either way")
    options = {**connection.settings_dict["OPTIONS"], "sslmode": "require"}
    monkeypatch.setitem(connection.settings_dict, "OPTIONS", options)
    listener = Listener()
    with pytest.raises(psycopg.OperationalError, match="SSL"):
        listener.listen()
    listener.close()
