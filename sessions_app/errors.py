"""Errors of the sessions services: each an `ApplicationError` with its code and HTTP status."""

from kernel.errors import ApplicationError


class SessionNotFound(ApplicationError):
    code = "not_found"
    status = 404


class SessionNotReschedulable(ApplicationError):
    code = "session_not_reschedulable"
    status = 409


class NoFreeSlot(ApplicationError):
    code = "no_free_slot"
    status = 409
