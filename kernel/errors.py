"""The one base of every error the application raises on purpose (see docs/architecture.md).

Each interface maps it once: the API's exception handler to `{"error": {code, message, details}}`
with `status`, the admin to a message on the page, commands to `CommandError`. An error that is not
an `ApplicationError` is a bug and is left to the framework's 5xx handling.
"""

from typing import Any


class ApplicationError(Exception):
    """A refused request: a stable snake_case `code`, a human `message`, JSON-ready `details`.

    `status` is the HTTP status the API answers with (422 unless a subclass says otherwise); the
    other interfaces ignore it. Both are class attributes a subclass sets, or an instance when one
    class covers several refusals (api.errors.ApiError).
    """

    code: str = "application_error"
    status: int = 422

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details
