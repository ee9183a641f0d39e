"""What the payment provider sends: a `payment.succeeded` (or other) webhook body and its signed
headers, for `dev.py pay`, the tests and the benchmarks.

Standard library only (with `api.payment_signature.sign`, which is too): `dev.py pay` runs it without a
virtualenv.
"""

import json
import time

from api.payment_signature import sign

WEBHOOK_PATH = "/api/v1/payments/webhook"


def payment_body(
    *,
    payment_id: str,
    student_id: int,
    course_id: int,
    event_id: str | None = None,
    type: str = "payment.succeeded",
    amount: str = "240.00",
    currency: str = "EUR",
    created: int | None = None,
) -> bytes:
    """The JSON body of a provider event (`id` defaults to `evt_<payment_id>`)."""
    return json.dumps(
        {
            "id": event_id or f"evt_{payment_id}",
            "type": type,
            "created": int(time.time()) if created is None else created,
            "data": {
                "payment_id": payment_id,
                "student_id": student_id,
                "course_id": course_id,
                "amount": amount,
                "currency": currency,
            },
        }
    ).encode()


def signed_headers(body: bytes, *, secret: str, timestamp: int | None = None) -> dict[str, str]:
    """The request headers the provider sends with `body`, signed with `secret` at `timestamp` (now)."""
    now = int(time.time()) if timestamp is None else timestamp
    return {"Content-Type": "application/json", "Payment-Signature": sign(body=body, secret=secret, timestamp=now)}
