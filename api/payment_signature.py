"""Payment provider signatures: `Payment-Signature: t=<unix>,v1=<hex>[,v1=<hex>...]`.

`<hex>` is HMAC-SHA256 over `"<t>.<raw body>"` with one of the configured secrets (several during a
rotation). A `t` more than the tolerance away from now, either way, is rejected (replay window).

The header is parsed strictly, before any arithmetic: at most `MAX_HEADER_LENGTH` characters of
comma-separated `key=value` parts, `t` exactly once as 1-12 ASCII digits (no sign, no `_`, no
Unicode digits), each `v1` exactly 64 hex digits, and nothing else. Anything else is refused.

Standard library (and the stdlib-only kernel) only: `dev.py pay` signs with it before any virtualenv.
"""

import hashlib
import hmac
import re
import time

from kernel.errors import ApplicationError

# Room for a timestamp and eight signatures (a rotation needs two).
MAX_HEADER_LENGTH = 600
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


class InvalidSignature(ApplicationError):
    """The API answers it 400 `invalid_signature` with the reason as the message."""

    code = "invalid_signature"
    status = 400


def sign(*, body: bytes, secret: str, timestamp: int) -> str:
    """The header value the provider would send; used by the demo command and the tests."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def parse_header(header: str | None) -> tuple[int, list[str]]:
    """`(t, [v1, ...])` of a well-formed header (signatures lower-cased), or `InvalidSignature`."""
    if not header:
        raise InvalidSignature("missing Payment-Signature header")
    if len(header) > MAX_HEADER_LENGTH:
        raise InvalidSignature(f"Payment-Signature header longer than {MAX_HEADER_LENGTH} characters")
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip(" ").partition("=")
        if key == "t" and sep and timestamp is None and _TIMESTAMP.fullmatch(value):
            timestamp = int(value)
        elif key == "v1" and sep and _HEX64.fullmatch(value):
            candidates.append(value.lower())
        else:
            raise InvalidSignature("header must be t=<1-12 digits>,v1=<64 hex digits>[,v1=<64 hex digits>...]")
    if timestamp is None or not candidates:
        raise InvalidSignature("header needs t=<unix seconds> and at least one v1=<hex>")
    return timestamp, candidates


def verify(*, header: str | None, body: bytes, secrets: list[str], tolerance: int, now: float | None = None) -> int:
    """Return the signed timestamp, or raise `InvalidSignature` saying why."""
    timestamp, candidates = parse_header(header)
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise InvalidSignature("timestamp outside the tolerance window")
    signed = f"{timestamp}.".encode() + body
    for secret in secrets:
        expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
        if any(hmac.compare_digest(expected, c) for c in candidates):
            return timestamp
    raise InvalidSignature("no signature matches")
