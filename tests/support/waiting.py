"""Waiting for something that happens in another thread or process."""

from collections.abc import Callable
from typing import Any

from config.processes import wait_for


def wait_until(predicate: Callable[[], Any], *, timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll `predicate` until it returns a truthy value and return it; fail (AssertionError) with `what`
    after `timeout` seconds."""
    return wait_for(predicate, timeout=timeout, what=what, error=AssertionError)
