"""The domain apps declare their event types to the outbox (outbox.registry), which lists them in the
admin and ends `trace`'s verdict with a chain's outcome, without importing the apps."""

import ast
from pathlib import Path

from backoffice.admin.outbox_filters import EventTypeFilter
from outbox import registry
from purchases.services import TOKEN_REVOKED

ROOT = Path(__file__).resolve().parent.parent
DOMAIN_APPS = ["purchases", "allocation", "sessions_app", "flows"]


def emitted_types() -> set[str]:
    """Every `type="..."` literal passed to a call in the domain apps' code (their emit() calls)."""
    found = set()
    for app in DOMAIN_APPS:
        for path in (ROOT / app).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Call):
                    found |= {
                        k.value.value
                        for k in node.keywords
                        if k.arg == "type" and isinstance(k.value, ast.Constant) and isinstance(k.value.value, str)
                    }
    return found


def test_every_event_type_the_apps_emit_is_declared() -> None:
    declared = {t.name for t in registry.event_types()}
    assert emitted_types() | {TOKEN_REVOKED} <= declared
    assert "purchase.created" in emitted_types()  # the scan finds them


def test_the_admin_filters_by_the_declared_types() -> None:
    assert EventTypeFilter.options(None) == [  # type: ignore[arg-type]
        "allocation.waitlisted",
        "purchase.created",
        "purchase.refunded",
        "session.rescheduled",
        "sessions.cancelled",
        "sessions.generated",
        "student.resync_requested",
        "student.token_revoked",
        "trainer.allocated",
    ]


def test_the_outcomes_trace_names() -> None:
    assert {t.name: t.outcome for t in registry.event_types() if t.outcome} == {
        "sessions.generated": "the purchase is active, its trainer allocated and its sessions scheduled",
        "trainer.allocated": "the purchase is active with its trainer",
        "allocation.waitlisted": "the purchase is waitlisted: no trainer had free capacity (re-run allocation later)",
        "purchase.refunded": "the purchase is refunded",
        "sessions.cancelled": "the purchase is refunded and its future sessions cancelled",
    }
    assert registry.outcome_of("purchase.created") == registry.outcome_of("no.such.type") == ""
