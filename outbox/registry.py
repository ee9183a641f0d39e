"""Which event types the domain apps emit, and which handlers subscribe to them.

Domain apps declare their event types (`declare_event_type`, from their AppConfig.ready), so the
outbox's admin and `trace` know them without importing the apps, and register their reactions in
`<app>/handlers.py` (imported from their AppConfig.ready), so `emit()` knows at write time which
deliveries an event needs. A handler's name is also its sink name and its inbox key, so renaming a
handler re-delivers history to it: don't.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from outbox.models import OutboxEvent

HandlerFunc = Callable[["OutboxEvent"], None]


@dataclass(frozen=True)
class Handler:
    name: str
    event_type: str
    func: HandlerFunc


@dataclass(frozen=True)
class EventType:
    name: str
    # What a payment's chain that ends with this event means, for `trace`'s verdict ("" for nothing).
    outcome: str = ""


_by_name: dict[str, Handler] = {}
_event_types: dict[str, EventType] = {}


def declare_event_type(name: str, *, outcome: str = "") -> None:
    """Declare that an app emits events of type `name` (idempotent for the same declaration)."""
    existing = _event_types.get(name)
    if existing is not None and existing.outcome != outcome:
        raise ValueError(f"event type {name!r} is already declared with another outcome")
    _event_types[name] = EventType(name=name, outcome=outcome)


def event_types() -> list[EventType]:
    """The declared event types, in declaration order."""
    return list(_event_types.values())


def outcome_of(event_type: str) -> str:
    """What a chain that ends with `event_type` means ("" if undeclared or nothing to say)."""
    declared = _event_types.get(event_type)
    return declared.outcome if declared is not None else ""


def handles(event_type: str, *, name: str) -> Callable[[HandlerFunc], HandlerFunc]:
    """Subscribe the decorated function to `event_type` under the stable sink `name`."""

    def register(func: HandlerFunc) -> HandlerFunc:
        existing = _by_name.get(name)
        if existing is not None and existing.func is not func:
            raise ValueError(f"handler name {name!r} is already registered")
        _by_name[name] = Handler(name=name, event_type=event_type, func=func)
        return func

    return register


def handlers_for(event_type: str) -> list[Handler]:
    return [h for h in _by_name.values() if h.event_type == event_type]


def all_handlers() -> list[Handler]:
    return list(_by_name.values())


def get(name: str) -> Handler:
    return _by_name[name]
