"""Payment provider signatures: `Payment-Signature: t=<unix>,v1=<hex>[,v1=<hex>...]`.

`<hex>` is HMAC-SHA256 over `"<t>.<raw body>"` with one of the configured secrets (several during a
rotation). A `t` more than the tolerance away from now, either way, is rejected (replay window).
"""

import hashlib
import hmac
import time


class InvalidSignature(Exception):
    pass


def sign(*, body: bytes, secret: str, timestamp: int) -> str:
    """The header value the provider would send; used by the demo command and the tests."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(*, header: str | None, body: bytes, secrets: list[str], tolerance: int, now: float | None = None) -> int:
    """Return the signed timestamp, or raise `InvalidSignature` saying why."""
    if not header:
        raise InvalidSignature("missing Payment-Signature header")
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError as exc:
                raise InvalidSignature("malformed timestamp") from exc
        elif key == "v1" and value:
            candidates.append(value)
    if timestamp is None or not candidates:
        raise InvalidSignature("header needs t=<unix seconds> and at least one v1=<hex>")
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise InvalidSignature("timestamp outside the tolerance window")
    signed = f"{timestamp}.".encode() + body
    for secret in secrets:
        expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
        if any(hmac.compare_digest(expected, c) for c in candidates):
            return timestamp
    raise InvalidSignature("no signature matches")
