"""Errors of the sessions services (API: 404/409 in the one error shape, commands: CommandError)."""

from purchases.errors import DomainError


class SessionNotFound(DomainError):
    code = "not_found"


class SessionNotReschedulable(DomainError):
    code = "session_not_reschedulable"


class NoFreeSlot(DomainError):
    code = "no_free_slot"
