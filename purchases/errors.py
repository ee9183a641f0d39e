"""Domain errors that interfaces translate (API: 422, commands: CommandError, admin: form errors)."""


class DomainError(Exception):
    code = "domain_error"

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class UnknownStudent(DomainError):
    code = "unknown_student"


class UnknownCourse(DomainError):
    code = "unknown_course"


class UnknownPayment(DomainError):
    code = "unknown_payment"


class NotAStudent(DomainError):
    """Only students hold purchases: staff and superusers are operators, never buyers."""

    code = "not_a_student"


class MoveToSameCourse(DomainError):
    code = "same_course"


class NotMovable(DomainError):
    """The purchase is refunded (or already moved), or its payment id leaves no room for the moved one's."""

    code = "not_movable"


class EventConflict(DomainError):
    """The provider event id is recorded with another body."""

    code = "event_conflict"


class InvalidTimezone(ValueError):
    """Not an IANA time zone name (a student's profile)."""
