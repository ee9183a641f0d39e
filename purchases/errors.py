"""Errors of the purchase services: each an `ApplicationError` with its code and HTTP status
(kernel/errors.py), mapped once by each interface (API, admin, commands)."""

from kernel.errors import ApplicationError


class UnknownStudent(ApplicationError):
    code = "unknown_student"


class UnknownCourse(ApplicationError):
    code = "unknown_course"


class UnknownPayment(ApplicationError):
    code = "unknown_payment"


class NotAStudent(ApplicationError):
    """Only students hold purchases: staff and superusers are operators, never buyers."""

    code = "not_a_student"


class MoveToSameCourse(ApplicationError):
    code = "same_course"


class NotMovable(ApplicationError):
    """The purchase is refunded (or already moved), or its payment id leaves no room for the moved one's."""

    code = "not_movable"


class EventConflict(ApplicationError):
    """The provider event id is recorded with another body."""

    code = "event_conflict"
    status = 409


class InvalidTimezone(ApplicationError):
    """Not an IANA time zone name (a student's profile)."""

    code = "invalid_timezone"
    status = 400
