"""/livez, /readyz, /healthz and /metrics."""

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone

from config.processes import free_port
from outbox.models import Delivery, RelayHeartbeat
from outbox.testing import deliver_pending
from purchases.models import Course
from purchases.services import purchase_create

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def web_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test client's requests are web's. Importing `config.asgi` (another test module does) sets
    COURSECHAIN_PROCESS=ws for the rest of the pytest process, so say which process this is."""
    monkeypatch.setenv("COURSECHAIN_PROCESS", "web")


def test_healthz_reports_the_relay_without_making_web_unready(client: Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200  # web needs PostgreSQL only: a dead relay delays, loses nothing
    body = response.json()
    assert body["status"] == "degraded" and body["ready"] is True and body["process"] == "web"
    assert body["checks"]["relay"]["ok"] is False
    assert body["checks"]["database"]["ok"] is True and body["checks"]["redis"]["ok"] is True
    now = timezone.now()
    RelayHeartbeat.objects.create(relay_id="r1", started_at=now, beat_at=now - timedelta(minutes=5))
    assert client.get("/healthz").json()["status"] == "degraded"  # a stale beat is a dead relay
    RelayHeartbeat.objects.create(relay_id="r2", started_at=now, beat_at=now)
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json()["status"] == "ok"


def test_livez_and_readyz(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    assert client.get("/livez").json() == {"status": "ok", "process": "web"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and set(ready.json()["checks"]) == {"database"}
    monkeypatch.setenv("COURSECHAIN_PROCESS", "ws")
    assert set(client.get("/readyz").json()["checks"]) == {"database", "redis"}
    monkeypatch.setattr(settings, "REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")  # nothing listens
    unready = client.get("/readyz")
    assert unready.status_code == 503 and unready.json()["checks"]["redis"]["ok"] is False
    monkeypatch.setenv("COURSECHAIN_PROCESS", "web")
    assert client.get("/readyz").status_code == 200  # web does not need Redis
    assert client.get("/healthz").status_code == 200 and client.get("/healthz").json()["status"] == "degraded"


def test_metrics_report_lag_backlog_and_handler_timings(client: Client, student: Any, course: Course) -> None:
    purchase_create(
        payment_id="pay_1", student_id=student.pk, course_id=course.pk, amount=Decimal("1"), currency="EUR", actor="t"
    )
    Delivery.objects.update(available_at=timezone.now() - timedelta(seconds=42))
    text = client.get("/metrics").content.decode()
    lag = next(line for line in text.splitlines() if line.startswith('outbox_lag_seconds{sink="realtime"}'))
    assert float(lag.split()[-1]) >= 42
    assert 'outbox_deliveries{sink="realtime",state="due"} 1.0' in text
    handled = 'outbox_handler_duration_seconds_count{handler="allocation.allocate_trainer"}'
    pushed = 'outbox_relay_deliveries_total{sink="realtime"}'
    before = metric_values(text)
    deliver_pending()
    after = metric_values(client.get("/metrics").content.decode())
    assert after['outbox_lag_seconds{sink="realtime"}'] == 0.0
    # Counters are shared by every process of the host (and earlier runs): compare deltas.
    assert after[handled] - before.get(handled, 0.0) == 1.0
    assert after[pushed] - before.get(pushed, 0.0) == 2.0  # purchase.created, allocation.waitlisted


def metric_values(text: str) -> dict[str, float]:
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
