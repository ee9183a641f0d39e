"""Token authentication for WebSocket connections.

A client presents the same DRF token as for the REST API, either as the query parameter `?token=<key>`
(browsers cannot set headers on a WebSocket) or as the header `Authorization: Token <key>` (mobile
apps, scripts). The query parameter wins when both are present. Guarantees: a connection is
authenticated only by an existing token of an active user; anything else (no credential, an unknown
or malformed key, an inactive user) yields `None` and the consumer closes with 4401.
"""

import re
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from rest_framework.authtoken.models import Token

# DRF keys are 40 hex characters; anything much longer is not a key, so don't take it to the database.
MAX_KEY_LENGTH = 128
# DRF's tokens are 40 hex digits; anything else is refused before it reaches the database.
_KEY_SHAPE = re.compile(r"[0-9A-Za-z]{1,128}")


def token_from_scope(scope: dict[str, Any]) -> str | None:
    """The token the client presented, or None. Does not check it."""
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    for key in query.get("token", []):
        if key.strip():
            return key.strip()
    for name, value in scope.get("headers", []):
        if name.lower() == b"authorization":
            # Same shape DRF's TokenAuthentication accepts: exactly "Token <key>", keyword case-insensitive.
            parts = value.decode("latin-1").split()
            if len(parts) == 2 and parts[0].lower() == "token":
                return parts[1]
            return None
    return None


@database_sync_to_async
def student_id_for_token(key: str) -> int | None:
    """The id of the active user owning `key`, or None."""
    if not key or len(key) > MAX_KEY_LENGTH or not _KEY_SHAPE.fullmatch(key):
        return None  # never let junk (a NUL byte, say) reach the database
    token = Token.objects.select_related("user").filter(key=key).first()
    if token is None or not token.user.is_active:
        return None
    return int(token.user_id)
