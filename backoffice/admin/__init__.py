"""The admin, one module per domain app; importing this package registers every model admin
(Django's autodiscover imports `backoffice.admin`)."""

from backoffice.admin import allocation, outbox, purchases, sessions, students

__all__ = ["allocation", "outbox", "purchases", "sessions", "students"]
