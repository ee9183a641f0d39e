"""Prometheus metrics at /metrics.

Two sources: gauges read from PostgreSQL at scrape time (per-sink lag as the age of the oldest due
delivery, open and dead counts, relays' heartbeats; only open deliveries are scanned, through partial
indexes, so history never makes a scrape slower), and counters/histograms that the relay and worker
processes write to PROMETHEUS_MULTIPROC_DIR (prometheus_client's multi-process mode), aggregated here.
"""

from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from outbox.models import RelayHeartbeat

HANDLER_SECONDS = Histogram(
    "outbox_handler_duration_seconds",
    "Time to apply one delivery in a handler (inbox + service, one transaction).",
    ["handler"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
HANDLER_FAILURES = Counter("outbox_handler_failures_total", "Handler attempts that raised.", ["handler"])
RELAY_DELIVERIES = Counter(
    "outbox_relay_deliveries_total", "Deliveries the relay pushed (realtime) or enqueued (handlers).", ["sink"]
)
RELAY_FAILURES = Counter("outbox_relay_failures_total", "Deliveries the relay could not pass on (retried).", ["sink"])


class OutboxCollector(Collector):
    """Reads the outbox's state from the database at scrape time."""

    def collect(self) -> Iterator[Any]:
        from outbox.operations import outbox_status

        lag = GaugeMetricFamily("outbox_lag_seconds", "Age of the oldest due delivery, per sink.", labels=["sink"])
        open_ = GaugeMetricFamily("outbox_deliveries", "Open deliveries by state, per sink.", labels=["sink", "state"])
        for row in outbox_status():
            lag.add_metric([row.sink], row.lag.total_seconds())
            for state in ("due", "scheduled", "in_flight", "failing", "dead"):
                open_.add_metric([row.sink, state], getattr(row, state))
        yield lag
        yield open_
        now = timezone.now()
        claimed = CounterMetricFamily("outbox_relay_claimed", "Deliveries claimed by each relay.", labels=["relay"])
        beat_age = GaugeMetricFamily(
            "outbox_relay_heartbeat_age_seconds", "Since each relay's last beat.", labels=["relay"]
        )
        for beat in RelayHeartbeat.objects.all():
            claimed.add_metric([beat.relay_id], beat.claimed_total)
            beat_age.add_metric([beat.relay_id], (now - beat.beat_at).total_seconds())
        yield claimed
        yield beat_age


def metrics_view(request: HttpRequest) -> HttpResponse:
    token = settings.METRICS_TOKEN
    if token and request.headers.get("Authorization") != f"Bearer {token}":
        return HttpResponse("metrics need the bearer token\n", status=401, content_type="text/plain")
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    registry.register(OutboxCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
