"""Abuse limits and production settings (issue 13, points 3 and 5), in process: the one error shape for
`?format=` and `%00`, the cursor ahead of the stream, static files, rate limits, the admin lockout,
password validators, and `check --deploy` under the README's production environment."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.test import Client

from config import throttling
from config.processes import ROOT
from purchases.models import Course
from tests.support.purchases import buy
from tests.support.webhooks import webhook_body
from tests.test_webhook_edges import send

pytestmark = pytest.mark.django_db(transaction=True)


def auth(student: Any) -> dict[str, str]:
    return {"Authorization": f"Token {student.auth_token.key}"}


def assert_error_shape(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code and error["message"] and isinstance(error["details"], dict)


@pytest.mark.parametrize("fmt", ["xml", "api", "yaml", "openapi", "html", "%00"])
@pytest.mark.parametrize("path", ["/api/v1/me/dashboard", "/api/v1/me/events", "/api/v1/courses", "/api/schema/"])
def test_any_format_gets_the_one_error_shape(client: Client, student: Any, path: str, fmt: str) -> None:
    response = client.get(f"{path}?format={fmt}", headers=auth(student))
    if response.status_code == 200:  # a format the endpoint has (the schema's yaml and openapi)
        return
    assert_error_shape(response, 400 if fmt == "%00" else 404, "invalid_request" if fmt == "%00" else "not_found")


@pytest.mark.parametrize(
    "path",
    [
        "/admin/auth/user/%00/change/",
        "/admin/authtoken/tokenproxy/%00/change/",
        "/admin/outbox/outboxevent/trace/%00/",
        "/admin/outbox/outboxevent/?correlation_id=%00",
        "/admin/purchases/providerevent/?q=a%00",
        "/api/v1/me/events?after=%00",
        "/%00",
    ],
)
def test_a_url_with_nul_is_400_never_500(client: Client, path: str) -> None:
    user = get_user_model().objects.create_superuser("ops", "ops@example.com", "Correct-Horse-Battery-9")
    client.force_login(user)
    assert_error_shape(client.get(path), 400, "invalid_request")


def test_a_cursor_ahead_of_the_stream_is_400_cursor_ahead(client: Client, student: Any, course: Course) -> None:
    buy(student, course)
    assert client.get("/api/v1/me/events?after=1", headers=auth(student)).json() == {"events": [], "seq": 1}
    response = client.get("/api/v1/me/events?after=2", headers=auth(student))
    assert_error_shape(response, 400, "cursor_ahead")
    assert response.json()["error"]["details"] == {"after": 2, "seq": 1}


@pytest.mark.parametrize(
    "path",
    [
        "/static/../config/settings.py",
        "/static/%2e%2e/config/settings.py",
        "/static/..%2fconfig/settings.py",
        "/static/admin/../../config/settings.py",
        "/static/admin/css/../../../manage.py",
        "/static/nothing-here.css",
    ],
)
def test_static_files_are_served_and_traversal_is_404(client: Client, path: str) -> None:
    assert client.get("/static/admin/css/base.css").status_code == 200
    response = client.get(path)
    assert response.status_code == 404
    assert b"SECRET_KEY" not in response.content and b"django" not in response.content.lower()


@pytest.fixture
def low_rates(monkeypatch: pytest.MonkeyPatch) -> None:
    rates = {"student": "3/min", "anonymous": "2/min"}
    monkeypatch.setattr(throttling.SimpleRateThrottle, "THROTTLE_RATES", rates)


@pytest.mark.usefixtures("low_rates")
def test_student_endpoints_are_rate_limited_per_student_with_retry_after(
    client: Client, make_student: Any, course: Course
) -> None:
    alice, bob = make_student(), make_student()
    paths = ["/api/v1/me/dashboard", "/api/v1/me/events", "/api/v1/courses"]
    assert [client.get(p, headers=auth(alice)).status_code for p in paths] == [200, 200, 200]
    throttled = client.get("/api/v1/courses", headers=auth(alice))
    assert_error_shape(throttled, 429, "throttled")
    assert 0 < int(throttled["Retry-After"]) <= 60
    assert throttled.json()["error"]["details"]["retry_after_seconds"] > 0
    assert client.get("/api/v1/courses", headers=auth(bob)).status_code == 200  # per student
    assert [client.get("/api/schema/").status_code for _ in range(3)] == [200, 200, 429]  # anonymous


@pytest.mark.usefixtures("low_rates")
def test_the_webhook_is_never_rate_limited(client: Client, student: Any, course: Course) -> None:
    for i in range(6):
        body = webhook_body(payment_id=f"pay_{i}", student_id=student.pk, course_id=course.pk)
        assert send(client, body).status_code == 200


def login(client: Client, username: str, password: str, address: str) -> int:
    response = client.post(
        "/admin/login/?next=/admin/", {"username": username, "password": password}, REMOTE_ADDR=address
    )
    return int(response.status_code)


def test_admin_logins_lock_out_per_user_and_per_address(client: Client) -> None:
    get_user_model().objects.create_superuser("ops", "ops@example.com", "Correct-Horse-Battery-9")
    # Per user: the fifth wrong password (each from another address) locks "ops" out, even with the
    # right password from yet another address.
    assert [login(client, "ops", "wrong", f"10.0.0.{i}") for i in range(5)] == [200] * 4 + [429]
    assert login(client, "ops", "Correct-Horse-Battery-9", "10.0.1.1") == 429
    # Per address: five users failing from one address lock that address out, for every user.
    assert [login(client, f"nobody{i}", "x", "10.9.9.9") for i in range(5)] == [200] * 4 + [429]
    assert login(client, "someone-else", "x", "10.9.9.9") == 429
    assert login(client, "another", "x", "10.9.9.8") == 200  # another address is not locked


def test_a_successful_login_is_not_locked(client: Client) -> None:
    get_user_model().objects.create_superuser("ops", "ops@example.com", "Correct-Horse-Battery-9")
    assert login(client, "ops", "Correct-Horse-Battery-9", "10.0.0.1") == 302


@pytest.mark.parametrize("password", ["short", "password123", "1234567890123", "ops@example.com"])
def test_weak_passwords_are_refused(password: str) -> None:
    user = get_user_model()(username="ops", email="ops@example.com")
    with pytest.raises(ValidationError):
        validate_password(password, user)


def readme_production_env() -> dict[str, str]:
    """The production environment the README's Security section documents (its ```env block)."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```env\n(.*?)```", readme, re.DOTALL)
    assert block, "README.md has no ```env block (the production environment)"
    pairs = [line.split("=", 1) for line in block.group(1).splitlines() if "=" in line and not line.startswith("#")]
    return {key.strip(): value.strip() for key, value in pairs}


def production(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COURSECHAIN_DEV", "DJANGO_SETTINGS_MODULE")}
    env.update(readme_production_env())
    env.update(DJANGO_SETTINGS_MODULE="config.settings", DJANGO_SECRET_KEY="x" * 8 + os.urandom(32).hex(), **extra)
    return env


def test_check_deploy_is_clean_under_the_readmes_production_environment() -> None:
    env = production(PAYMENT_WEBHOOK_SECRET="whsec_test")
    done = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "System check identified no issues" in done.stdout


@pytest.mark.parametrize("hosts", ["*", "", "api.example.com,*"])
def test_production_refuses_to_start_without_explicit_allowed_hosts(hosts: str) -> None:
    env = production(PAYMENT_WEBHOOK_SECRET="whsec_test", ALLOWED_HOSTS=hosts)
    done = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0
    assert "ALLOWED_HOSTS must list this deployment's host names (not *) in production" in done.stderr


def test_the_readme_env_block_is_what_the_settings_read() -> None:
    settings_text = Path(ROOT / "config" / "settings.py").read_text()
    for key in readme_production_env():
        assert f'"{key}"' in settings_text or key in ("DATABASE_URL", "REDIS_URL"), key


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/livez", "/readyz", "/healthz"])
def test_probes_answer_whatever_host_the_orchestrator_sends(path: str, settings: Any) -> None:
    """Kubernetes' httpGet probes a pod by its address, which ALLOWED_HOSTS does not list: a 400 there
    would keep every pod unready. Other paths still refuse the unknown Host."""
    settings.ALLOWED_HOSTS = ["api.example.com"]
    client = Client(HTTP_HOST="10.1.2.3:8000")
    assert client.get(path).status_code in (200, 503)  # answered by the probe, not refused
    assert json.loads(client.get(path).content)["process"] == "web"
    assert client.get("/api/v1/courses").status_code == 400


def test_an_unparsable_origin_is_refused_without_a_traceback() -> None:
    from config.asgi import application

    sent: list[dict[str, Any]] = []
    scope = {"type": "websocket", "path": "/ws/events/", "query_string": b"", "headers": [(b"origin", b"http://[::1")]}

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async_to_sync(application)(scope, receive, send)
    assert sent == [{"type": "websocket.close", "code": 1008}]
