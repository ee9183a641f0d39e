"""The allocation app's services, the only writers of its rows (docs/architecture.md).

- `allocations.py`: a purchase's trainer: allocate, waitlist, release, promote the waitlist.
- `trainers.py`: the trainers' reference data: name, capacity, time zone, weekly availability.

Callers import from here (`from allocation import services`); the modules are how the code is kept.
"""

from allocation.services.allocations import (
    NO_CAPACITY,
    NO_FREE_SLOT,
    WAITLIST_LOCK,
    allocation_release,
    allocation_waitlist,
    trainer_allocate,
    waitlist_promote,
)
from allocation.services.trainers import (
    CapacityBelowLoad,
    InvalidAvailability,
    availability_check,
    availability_replace,
    trainer_save,
)

__all__ = [
    "NO_CAPACITY",
    "NO_FREE_SLOT",
    "WAITLIST_LOCK",
    "CapacityBelowLoad",
    "InvalidAvailability",
    "allocation_release",
    "allocation_waitlist",
    "availability_check",
    "availability_replace",
    "trainer_allocate",
    "trainer_save",
    "waitlist_promote",
]
