"""The claim loop: claim a batch, hand its realtime share to `push` and its handler share to Celery,
settle; drain until nothing is due, then sleep until a NOTIFY (`listen`) or the poll interval."""

import contextlib
import logging
import os
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from typing import Any

import psycopg
from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections, connection
from django.utils import timezone

from outbox import deliveries, metrics, relay_status
from outbox.deliveries import Claimed
from outbox.relay import heartbeat
from outbox.relay.listen import Listener
from outbox.relay.push import Pusher
from outbox.relay.slow_batches import log_if_slow
from outbox.services import REALTIME_SINK
from outbox.tasks import run_handler_batch

# The relay's modules share one logger, "outbox.relay" (log filters and alerts match that name).
logger = logging.getLogger("outbox.relay")


class Relay:
    def __init__(self, *, batch_size: int | None = None, poll_seconds: float | None = None) -> None:
        self.relay_id = f"{socket.gethostname()}:{os.getpid()}"
        self.batch_size = batch_size or settings.OUTBOX_BATCH_SIZE
        self.poll_seconds = poll_seconds if poll_seconds is not None else settings.OUTBOX_POLL_SECONDS
        self.stopping = threading.Event()
        self._pusher = Pusher()
        self._listener = Listener()
        self.took_all = False
        self.database = relay_status.ConnectionWatch(relay_id=self.relay_id)

    # -- one batch -------------------------------------------------------------------------------

    def step(self) -> int:
        """Claim and deliver one batch; returns how many deliveries it claimed. Sets `took_all`: whether
        the claim took everything that was due (see `deliveries.claim_took_all`)."""
        started = time.perf_counter()
        claimed = deliveries.claim(relay_id=self.relay_id, limit=self.batch_size)
        self.took_all = deliveries.claim_took_all(claimed, limit=self.batch_size)
        marks = [("claim", time.perf_counter())]
        realtime = [c for c in claimed if c.sink == REALTIME_SINK]
        handlers = [c for c in claimed if c.sink != REALTIME_SINK]
        if realtime:
            self._deliver_realtime(realtime)
            marks.append(("realtime", time.perf_counter()))
        if handlers:
            self._dispatch_handlers(handlers)
            marks.append(("handlers", time.perf_counter()))
        log_if_slow(len(claimed), started, marks)
        return len(claimed)

    def _deliver_realtime(self, claimed: list[Claimed]) -> None:
        ids = [c.id for c in claimed]
        try:
            self._pusher.push_batch(claimed)
        except Exception as exc:  # Redis down or slow: retry later, never lose the delivery
            logger.warning("realtime delivery failed for %d events: %s", len(ids), exc)
            deliveries.settle_failed(ids, error=f"realtime: {exc!r}", may_dead_letter=False)
            metrics.RELAY_FAILURES.labels(REALTIME_SINK).inc(len(ids))
            return
        deliveries.settle_done(ids)
        metrics.RELAY_DELIVERIES.labels(REALTIME_SINK).inc(len(ids))

    def _dispatch_handlers(self, claimed: list[Claimed]) -> None:
        by_sink: dict[str, list[int]] = defaultdict(list)
        for c in claimed:
            by_sink[c.sink].append(c.id)
        for sink, ids in by_sink.items():
            try:
                reprs: dict[str, Any] = {"argsrepr": _args_repr(sink, ids), "kwargsrepr": "{}"}  # (not in the stubs)
                run_handler_batch.apply_async(args=(sink, ids), retry=False, **reprs)
            except Exception as exc:  # broker down: back off, the lease keeps them ours meanwhile
                logger.warning("could not enqueue %d deliveries for %s: %s", len(ids), sink, exc)
                deliveries.settle_failed(ids, error=f"enqueue: {exc!r}", may_dead_letter=False)
                metrics.RELAY_FAILURES.labels(sink).inc(len(ids))
                continue
            metrics.RELAY_DELIVERIES.labels(sink).inc(len(ids))
        # Handler deliveries stay in flight: the worker settles them when the handler has run.

    # -- loops -----------------------------------------------------------------------------------

    def drain(self, *, every_batch: Callable[[int], None] | None = None, until_notified: bool = False) -> int:
        """Deliver until nothing is claimable; returns the number of deliveries claimed.

        `every_batch(n)` is called after each batch (the heartbeat, so a long drain still beats). With
        `until_notified`, stop as soon as a batch took everything that was due, without the claim that
        would confirm it (at a steady trickle, half the claims came back empty): whatever commits
        afterwards sends a NOTIFY, which the caller waits for."""
        total = 0
        while not self.stopping.is_set():
            n = self.step()
            total += n
            if n and every_batch is not None:
                every_batch(n)
            if n == 0 or (until_notified and self.took_all):
                break
        return total

    def run_forever(self) -> None:
        """Drain, then sleep until NOTIFY (or the poll interval, for retries and lost notifies)."""
        logger.info("relay %s started", self.relay_id)
        started_at = timezone.now()
        claimed_total = 0
        next_beat = 0.0

        def beat_if_due(claimed: int) -> None:
            nonlocal claimed_total, next_beat
            claimed_total += claimed
            if time.monotonic() >= next_beat:
                self.beat(started_at=started_at, claimed_total=claimed_total)
                next_beat = time.monotonic() + heartbeat.HEARTBEAT_SECONDS

        while not self.stopping.is_set():
            try:
                self._listener.listen()  # before claiming: see Listener.listen
                self.drain(every_batch=beat_if_due, until_notified=True)
                beat_if_due(0)
                self.database.ok()
                self._listener.wait(self.poll_seconds)
            except (OperationalError, InterfaceError, psycopg.Error) as exc:
                self.database.failed(exc)
                self._reset_connections()
                self.stopping.wait(min(self.poll_seconds, 1.0))
            except Exception:
                # Whatever went wrong, the claimed deliveries' leases will expire and be retried; a relay
                # that keeps running is better than one that needs a human to restart it.
                logger.exception("relay %s: unexpected error; continuing", self.relay_id)
                self._reset_connections()
                self.stopping.wait(min(self.poll_seconds, 1.0))
        self._reset_connections()
        self._pusher.close()
        logger.info("relay %s stopped", self.relay_id)

    def beat(self, *, started_at: datetime, claimed_total: int) -> None:
        """Record that this relay is alive (see `heartbeat.beat`)."""
        heartbeat.beat(relay_id=self.relay_id, started_at=started_at, claimed_total=claimed_total)

    def _reset_connections(self) -> None:
        self._listener.close()
        close_old_connections()
        with contextlib.suppress(OperationalError, InterfaceError):
            connection.close()

    def stop(self) -> None:
        self.stopping.set()


# Celery's limit for the task's argument text in its message headers (what logs and monitors show).
ARGS_REPR_MAXSIZE = 1024


def _args_repr(sink: str, ids: list[int]) -> str:
    """The text Celery would put in the task's `argsrepr` header, made with the builtin repr: Celery's
    own (`saferepr`, pure Python, over up to OUTBOX_BATCH_SIZE ids) was a tenth of each enqueue's CPU."""
    text = repr((sink, ids))
    return text if len(text) <= ARGS_REPR_MAXSIZE else text[: ARGS_REPR_MAXSIZE - 3] + "..."
