"""The log line of a slow batch: how long it took and where its time went."""

import itertools
import logging

# The relay's modules share one logger, "outbox.relay" (log filters and alerts match that name).
logger = logging.getLogger("outbox.relay")

# A batch that takes longer than this, plus SLOW_BATCH_PER_DELIVERY per delivery, is logged with where
# its time went (an empty claim too: a slow one is a bad plan or a lock, and it delays every event).
SLOW_BATCH_SECONDS = 0.1
SLOW_BATCH_PER_DELIVERY = 0.001


def log_if_slow(claimed: int, started: float, marks: list[tuple[str, float]]) -> None:
    """Log one warning if the batch that started at `started` (perf_counter) and passed the named
    `marks` took longer than its allowance; each mark's time is counted from the previous one."""
    took = marks[-1][1] - started
    if took <= SLOW_BATCH_SECONDS + claimed * SLOW_BATCH_PER_DELIVERY:
        return
    steps = itertools.pairwise([("", started), *marks])
    logger.warning(
        "slow batch: %d deliveries in %.0f ms (%s)",
        claimed,
        took * 1000,
        ", ".join(f"{name} {(at - before) * 1000:.0f} ms" for (_, before), (name, at) in steps),
    )
