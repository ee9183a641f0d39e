"""No request gets a 5xx or a traceback (issue 13, points 1, 3 and 5), through the real `web`
(gunicorn, WSGI) and `ws` (uvicorn, ASGI) processes, with raw sockets: garbage requests and headers,
WebSocket upgrades to any path, static paths that try to climb out, a chunked signed webhook, the
rate limit shared by two `web` processes, token redaction in gunicorn's access log, and production
refusing `ALLOWED_HOSTS=*`."""

import base64
import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from config import commands
from config.processes import free_port
from purchases.models import Course, Purchase
from tests.support.processes import Processes
from tests.support.waiting import wait_until
from tests.support.webhooks import signature, webhook_body

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.processes]


@pytest.fixture
def servers(processes: Processes) -> Iterator[dict[str, str]]:
    """Both HTTP-speaking processes, by name."""
    yield {"web": processes.web("web"), "ws": processes.server("ws")}


def raw(host: str, data: bytes, *, timeout: float = 15) -> bytes:
    """Send `data` on a fresh connection; everything the server sends until it closes (or goes quiet)."""
    name, port = host.split(":")
    chunks = []
    with socket.create_connection((name, int(port)), timeout=timeout) as sock:
        sock.sendall(data)
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (TimeoutError, ConnectionResetError):
            pass
    return b"".join(chunks)


def status_of(response: bytes) -> int | None:
    """The HTTP status, or None if the server closed without answering (a fine answer to garbage)."""
    if not response.startswith(b"HTTP/"):
        return None
    return int(response.split(b" ", 2)[1])


def get(path: bytes, *headers: bytes) -> bytes:
    return (
        b"GET "
        + path
        + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + b"".join(h + b"\r\n" for h in headers)
        + b"Connection: close\r\n\r\n"
    )


def no_traceback(processes: Processes) -> None:
    for name in ("web", "ws"):
        log = processes.log(name)
        assert "Traceback" not in log and " 500 " not in log and "Internal Server Error" not in log, log[-3000:]


WEBHOOK = b"POST /api/v1/payments/webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
GARBAGE = {
    "not-http": b"GARBAGE\r\n\r\n",
    "header-without-colon": get(b"/", b"Bad Header"),
    "control-bytes-in-header": get(b"/api/v1/courses", b"X-Thing: \x01\x02\x7f"),
    "nul-in-header": get(b"/api/v1/courses", b"X-Thing: a\x00b"),
    "non-utf8-path": get(b"/api/v1/\xff\xfe"),
    "huge-header": get(b"/", b"X-Long: " + b"a" * 20_000),
    "many-headers": get(b"/", *(b"X-%d: 1" % i for i in range(300))),
    "negative-length": WEBHOOK + b"Content-Length: -1\r\n\r\n",
    "float-length": WEBHOOK + b"Content-Length: 1e3\r\n\r\n",
    "two-lengths": WEBHOOK + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
    "bad-chunk-size": WEBHOOK + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
    "length-and-chunked": WEBHOOK + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "short-body": WEBHOOK + b"Content-Length: 100\r\n\r\n{}",
    "absolute-uri": get(b"http://evil.example/api/v1/courses"),
    "unknown-method": b"BREW /api/v1/courses HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    "non-utf8-token": get(b"/api/v1/me/dashboard", b"Authorization: Token \xff\xfe"),
    "non-ascii-host": b"GET /api/v1/courses HTTP/1.1\r\nHost: \xff\xfe\r\nConnection: close\r\n\r\n",
    "bad-host": b"GET /api/v1/courses HTTP/1.1\r\nHost: a b/c\r\nConnection: close\r\n\r\n",
    "http-9.9": b"GET / HTTP/9.9\r\nHost: 127.0.0.1\r\n\r\n",
    "tls-hello": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40,
    "nul-in-query": get(b"/api/v1/me/events?after=1%00"),
    "admin-nul": get(b"/admin/%00/"),
    "admin-nul-object": get(b"/admin/auth/user/%00/change/"),
    "format-xml": get(b"/api/v1/courses?format=xml"),
}


def test_garbage_requests_never_get_a_5xx_or_a_traceback(servers: dict[str, str], processes: Processes) -> None:
    answers = {}
    for server, host in servers.items():
        for case, data in GARBAGE.items():
            answers[f"{server} {case}"] = status_of(raw(host, data))
    assert {k: v for k, v in answers.items() if v is not None and v >= 500} == {}
    no_traceback(processes)


def upgrade(path: bytes) -> bytes:
    key = base64.b64encode(os.urandom(16))
    return get(
        path,
        b"Upgrade: websocket",
        b"Connection: Upgrade",
        b"Sec-WebSocket-Version: 13",
        b"Sec-WebSocket-Key: " + key,
    ).replace(b"Connection: close\r\n", b"")


@pytest.mark.parametrize(
    "path",
    [
        b"/ws/events",
        b"/",
        b"/ws/",
        b"/ws/events/x",
        b"/ws/events/..",
        b"/static/admin/css/base.css",
        b"/admin/",
        b"/%00",
    ],
)
def test_a_websocket_upgrade_to_an_unknown_path_is_refused_at_the_handshake(
    path: bytes, servers: dict[str, str], processes: Processes
) -> None:
    assert status_of(raw(servers["ws"], upgrade(path), timeout=5)) in (403, 404)
    assert status_of(raw(servers["ws"], upgrade(b"/ws/events/?token=nope"), timeout=2)) == 101  # the real one
    assert (status_of(raw(servers["web"], upgrade(path), timeout=5)) or 0) < 500  # gunicorn: plain HTTP
    no_traceback(processes)


TRAVERSALS = [
    b"/static/../config/settings.py",
    b"/static/%2e%2e/config/settings.py",
    b"/static/..%2fconfig/settings.py",
    b"/static/%2e%2e%2fconfig%2fsettings.py",
    b"/static/admin/css/..%2f..%2f..%2f..%2fconfig/settings.py",
    b"/static/admin/..\\..\\config\\settings.py",
    b"/static/%c0%ae%c0%ae/config/settings.py",
    b"/static//etc/passwd",
    b"/static/admin/css/base.css%00.py",
]


def test_static_files_are_served_by_both_and_traversal_is_404(servers: dict[str, str], processes: Processes) -> None:
    for server, host in servers.items():
        css = raw(host, get(b"/static/admin/css/base.css"))
        assert status_of(css) == 200 and b"text/css" in css.split(b"\r\n\r\n")[0], server
        for path in TRAVERSALS:
            response = raw(host, get(path))
            assert status_of(response) in (400, 404), (server, path, response[:300])
            assert b"SECRET_KEY" not in response and b"root:" not in response
    no_traceback(processes)


def test_a_chunked_signed_webhook_is_read_whole_by_both(servers: dict[str, str], student: Any, course: Course) -> None:
    for server, host in servers.items():
        body = webhook_body(payment_id=f"pay_chunked_{server}", student_id=student.pk, course_id=course.pk)
        halves = [body[: len(body) // 2], body[len(body) // 2 :]]
        chunked = b"".join(b"%x\r\n%s\r\n" % (len(h), h) for h in halves) + b"0\r\n\r\n"
        request = (
            WEBHOOK
            + b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
            + b"Payment-Signature: "
            + signature(body).encode()
            + b"\r\n\r\n"
            + chunked
        )
        response = raw(host, request)
        assert status_of(response) == 200, (server, response)
    assert Purchase.objects.count() == 2


def test_the_rate_limit_is_shared_by_web_processes_and_says_when_to_retry(student: Any, processes: Processes) -> None:
    token = b"Authorization: Token " + student.auth_token.key.encode()
    first = processes.web("web-a", None, API_THROTTLE_STUDENT_RATE="3/min")
    second = processes.web("web-b", None, API_THROTTLE_STUDENT_RATE="3/min")
    answers = [status_of(raw(host, get(b"/api/v1/courses", token))) for host in (first, second, first)]
    assert answers == [200, 200, 200]
    throttled = raw(second, get(b"/api/v1/courses", token))
    assert status_of(throttled) == 429
    head, body = throttled.split(b"\r\n\r\n", 1)
    assert b"retry-after: " in head.lower() and b'"code":"throttled"' in body
    webhook = webhook_body(payment_id="pay_unthrottled", student_id=student.pk, course_id=1)
    for _ in range(5):  # the webhook is never throttled (422: no such course, but answered)
        sent = WEBHOOK + b"Content-Length: %d\r\nPayment-Signature: %s\r\n\r\n" % (
            len(webhook),
            signature(webhook).encode(),
        )
        assert status_of(raw(first, sent + webhook)) == 422


def test_gunicorn_access_log_redacts_tokens(student: Any, processes: Processes) -> None:
    host = processes.web("web", None, WEB_ACCESS_LOG="1")
    secret = student.auth_token.key
    raw(
        host, get(b"/api/v1/courses?token=" + secret.encode() + b"&x=1", b"Referer: http://a/?token=" + secret.encode())
    )
    wait_until(lambda: "GET /api/v1/courses" in processes.log("web"), what="the access log line")
    log = processes.log("web")
    assert secret not in log
    assert "token=[redacted]" in log


def test_production_refuses_to_start_with_allowed_hosts_star(processes: Processes) -> None:
    production = {
        "COURSECHAIN_DEV": "0",
        "ALLOWED_HOSTS": "*",
        "DJANGO_SECRET_KEY": os.urandom(32).hex(),
        "PAYMENT_WEBHOOK_SECRET": "whsec_production_test",
    }
    proc = processes.start("web", commands.web(f"127.0.0.1:{free_port()}", "--workers", "1"), **production)
    assert proc.wait(timeout=60) != 0
    assert "ALLOWED_HOSTS must list this deployment's host names (not *) in production" in processes.log("web")


def test_refused_handshakes_leave_nothing_behind_and_origins_are_checked_for_browsers_only(
    student: Any, processes: Processes
) -> None:
    host = processes.server("ws", None, ALLOWED_HOSTS="127.0.0.1")
    port = host.split(":")[1].encode()
    token = b"/ws/events/?token=" + student.auth_token.key.encode()
    assert status_of(raw(host, upgrade(token) + b"", timeout=2)) == 101  # an app: no Origin header
    same_site = upgrade(token).replace(
        b"Host: 127.0.0.1\r\n", b"Host: 127.0.0.1\r\nOrigin: http://127.0.0.1:" + port + b"\r\n"
    )
    assert status_of(raw(host, same_site, timeout=2)) == 101
    other_site = upgrade(token).replace(b"Host: 127.0.0.1\r\n", b"Host: 127.0.0.1\r\nOrigin: http://evil.example\r\n")
    for _ in range(10):
        assert status_of(raw(host, other_site, timeout=5)) == 403
        assert status_of(raw(host, upgrade(b"/nothing"), timeout=5)) == 403
    proc = processes.procs["ws"]
    proc.terminate()
    proc.wait(timeout=8)  # no refused handshake left a task that holds up the shutdown
    assert "Traceback" not in processes.log("ws")
