"""Token rotation, `trace --student` and the student admin, in-process (the process tests are in
tests/test_sockets.py and tests/test_student_trace.py): the service's guarantees, the consumer ending
an old-token socket when the revocation reaches it by repair rather than by push, the command's
arguments and the admin's action, page and button."""

import json
from io import StringIO
from typing import Any

import pytest
import redis
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.http import HttpRequest
from django.test import Client
from django.urls import reverse
from rest_framework.authtoken.models import Token

from backoffice.student_trace import student_trace
from outbox.models import OutboxEvent
from outbox.testing import deliver_pending
from purchases.errors import UnknownStudent
from purchases.services import student_token_revoke
from tests.test_realtime_consumer import connect, deliver_without_push, run

pytestmark = pytest.mark.django_db(transaction=True)


def dashboard_status(key: str) -> int:
    return Client().get("/api/v1/me/dashboard", headers={"Authorization": f"Token {key}"}).status_code


def test_rotation_replaces_the_token_and_emits_an_event_without_it(student: Any) -> None:
    old = student.auth_token.key
    assert dashboard_status(old) == 200
    rotation = student_token_revoke(student_id=student.pk, actor="test")
    assert rotation.student_id == student.pk and rotation.token != old
    assert dashboard_status(old) == 401
    assert dashboard_status(rotation.token) == 200
    assert list(Token.objects.filter(user=student).values_list("key", flat=True)) == [rotation.token]
    event = OutboxEvent.objects.get(student_id=student.pk, type="student.token_revoked")
    assert (event.payload, event.actor, event.aggregate_type) == ({"student_id": student.pk}, "test", "student")
    assert rotation.token not in json.dumps(event.payload) and old not in json.dumps(event.payload)
    with pytest.raises(UnknownStudent):
        student_token_revoke(student_id=student.pk + 1000, actor="test")


def test_revoke_token_command(student: Any) -> None:
    out = StringIO()
    call_command("revoke_token", str(student.pk), "--json", stdout=out)
    printed = json.loads(out.getvalue())
    assert printed == {"student_id": student.pk, "token": Token.objects.get(user=student).key}
    out = StringIO()
    call_command("revoke_token", str(student.pk), stdout=out)
    assert f"new token {Token.objects.get(user=student).key}" in out.getvalue()
    with pytest.raises(CommandError, match="unknown student"):
        call_command("revoke_token", str(student.pk + 1000))


def test_a_revocation_that_arrives_by_repair_still_closes_the_old_tokens_socket(student: Any) -> None:
    """The push was lost; the consumer reads the revocation from the database on the next ping and
    closes with 4401 before sending it (or anything else)."""

    async def scenario() -> None:
        communicator = connect(student, "after=0")
        assert await communicator.connect()
        await _sync(student_token_revoke)(student_id=student.pk, actor="test")
        assert await _sync(deliver_without_push)(student) == [1]
        await communicator.send_json_to({"type": "ping"})
        message = await communicator.receive_output(5)
        assert (message["type"], message["code"]) == ("websocket.close", 4401)
        assert await communicator.receive_nothing(timeout=0.3)
        await communicator.disconnect()

    run(scenario)


def test_a_revocation_delivered_while_the_socket_connects_still_closes_it(
    student: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The token is checked, then the revocation commits and is delivered before the consumer reads
    where the stream stands: its event is behind the cursor and would never reach this socket."""
    from realtime import selectors

    read = selectors.stream_position

    def revoke_then_read(**kwargs: Any) -> Any:
        if not OutboxEvent.objects.filter(type="student.token_revoked").exists():
            student_token_revoke(student_id=student.pk, actor="test")
            deliver_pending()
        return read(**kwargs)

    monkeypatch.setattr(selectors, "stream_position", revoke_then_read)

    async def scenario() -> None:
        communicator = connect(student)
        assert await communicator.connect()
        message = await communicator.receive_output(5)
        assert (message["type"], message["code"], message["reason"]) == ("websocket.close", 4401, "token revoked")
        await communicator.disconnect()

    run(scenario)


def _sync(func: Any) -> Any:
    from asgiref.sync import sync_to_async

    return sync_to_async(func)


def trace_command(*args: str) -> tuple[int, str]:
    out = StringIO()
    try:
        call_command("trace", *args, stdout=out, stderr=StringIO())
        return 0, out.getvalue()
    except SystemExit as exit:
        return int(exit.code or 0), out.getvalue()


def test_trace_student_arguments_and_resync(student: Any) -> None:
    with pytest.raises(CommandError, match="unknown student"):
        call_command("trace", "--student", str(student.pk + 1000))
    with pytest.raises(CommandError, match="not both"):
        call_command("trace", "pay_1", "--student", str(student.pk))
    with pytest.raises(CommandError, match="--resync needs --student"):
        call_command("trace", "pay_1", "--resync")
    code, text = trace_command("--student", str(student.pk), "--resync")
    assert code == 1  # the resync is committed, not yet delivered
    assert text.startswith("resync requested (#1 student.resync_requested); tracing:")
    assert "NOT CURRENT (not_delivered)" in text or "NOT CURRENT (delivering)" in text
    deliver_pending()
    code, text = trace_command("--student", str(student.pk))
    assert code == 0
    assert text.splitlines()[0].startswith(f"Student {student.pk} -- OK (no_socket)")


def test_a_cached_dashboard_older_than_the_delivered_stream_is_reported(student: Any) -> None:
    call_command("resync_student", str(student.pk), stdout=StringIO())
    call_command("resync_student", str(student.pk), stdout=StringIO())
    deliver_pending()
    # As if the relay's invalidation had been lost: a view at seq 1, the floor left at 1.
    key = f"{settings.READ_CACHE_PREFIX}:student:{student.pk}"
    redis.Redis.from_url(settings.REDIS_URL).hset(key, mapping={"floor": 1, "dashboard:seq": 1, "dashboard:body": "{}"})
    trace = student_trace(student_id=student.pk)
    assert trace is not None
    assert (trace.verdict.code, trace.verdict.current) == ("cache_stale", False)
    assert "reflects seq 1 but seq 2 was delivered" in trace.verdict.message
    assert f"trace --student {student.pk} --resync" in trace.verdict.message


@pytest.fixture
def ops(db: None) -> Client:
    get_user_model().objects.create_superuser("ops", "ops@example.com", "secret")
    client = Client()
    client.login(request=HttpRequest(), username="ops", password="secret")  # axes needs the request
    return client


def test_admin_revokes_tokens_and_shows_the_trace_with_a_resync_button(ops: Client, student: Any) -> None:
    old = student.auth_token.key
    response = ops.post(
        reverse("admin:auth_user_changelist"),
        {"action": "revoke_tokens", "_selected_action": [student.pk]},
        follow=True,
    )
    new = Token.objects.get(user=student).key
    assert new != old and f"the new token is {new}" in response.content.decode()
    assert OutboxEvent.objects.filter(student_id=student.pk, type="student.token_revoked", actor="admin:ops").exists()

    change = ops.get(reverse("admin:auth_user_change", args=[student.pk])).content.decode()
    assert reverse("admin:student_trace", args=[student.pk]) in change
    page = ops.get(reverse("admin:student_trace", args=[student.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    assert ('id="verdict"' in html and "not_delivered" in html) or "delivering" in html
    assert f"manage.py trace --student {student.pk}" in html
    response = ops.post(reverse("admin:student_trace", args=[student.pk]), {"resync": "1"})
    assert response.status_code == 302
    assert OutboxEvent.objects.filter(
        student_id=student.pk, type="student.resync_requested", actor="admin:ops"
    ).exists()
    assert ops.get(reverse("admin:student_trace", args=[student.pk + 1000])).status_code == 404
