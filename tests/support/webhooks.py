"""Payment webhooks as the provider sends them, and plain HTTP calls to a test server."""

import json
import time
import urllib.error
import urllib.request
from typing import Any

from django.conf import settings

from api.payment_signature import sign
from config.payment_provider import WEBHOOK_PATH, payment_body, signed_headers


def webhook_body(
    *, payment_id: str, student_id: int, course_id: int, event_id: str | None = None, type: str = "payment.succeeded"
) -> bytes:
    return payment_body(payment_id=payment_id, student_id=student_id, course_id=course_id, event_id=event_id, type=type)


def signature(body: bytes, *, secret: str | None = None, timestamp: int | None = None) -> str:
    return sign(
        body=body,
        secret=secret or settings.PAYMENT_WEBHOOK_SECRETS[0],
        timestamp=int(time.time()) if timestamp is None else timestamp,
    )


def http(
    host: str, path: str, *, body: bytes | None = None, headers: dict[str, str] | None = None, timeout: float = 10
) -> tuple[int, Any]:
    """One request to a test server: `(status, JSON body)`; an HTTP error keeps its status and body."""
    request = urllib.request.Request(f"http://{host}{path}", data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def post_webhook(host: str, body: bytes, *, timeout: float = 30) -> tuple[int, Any]:
    """POST `body` to the server's payment webhook, signed as the provider would."""
    headers = signed_headers(body, secret=settings.PAYMENT_WEBHOOK_SECRETS[0])
    return http(host, WEBHOOK_PATH, body=body, headers=headers, timeout=timeout)
