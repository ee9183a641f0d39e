"""Which handlers subscribe to which event types.

Domain apps register their reactions in `<app>/handlers.py` (imported from their AppConfig.ready),
so `emit()` knows at write time which deliveries an event needs. A handler's name is also its sink
name and its inbox key, so renaming a handler re-delivers history to it: don't.
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


_by_name: dict[str, Handler] = {}


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
