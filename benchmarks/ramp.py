"""The ramp: the highest rate of purchases a second at which the chains keep up.

A step keeps up when, over the step: every webhook was answered (no 5xx, no timeout) and the sender
held its rate; every purchase's whole chain arrived; the last frame of the chain (`sessions.generated`)
came within `CHAIN_P99_MS` of the webhook's COMMIT for 99 % of the purchases; and the backlog did not
grow: every chain was done within `BACKLOG_S` of the last webhook's answer (a backlog that grows during
the step is still there at its end).

The search starts at a low rate and moves by `FACTOR`: up while steps keep up, down while they don't,
until it crosses; then, if asked, one step between the last two rates. So at most the last step or
two fall behind, and their backlog is small. Each step starts once the previous one's backlog drained;
the search stops if it does not.
"""

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from benchmarks.chain import LAST, Step
from benchmarks.harness import percentile

CHAIN_P99_MS = 250.0
BACKLOG_S = 1.0
RATE_HELD = 0.95  # achieved / asked
FACTOR = math.sqrt(2)
LOWEST = 5.0


@dataclass
class Verdict:
    ok: bool
    why: str  # what failed, or "kept up"
    short: str  # the same in a word or two per failure: "kept up", "p99, backlog"


def judge(step: Step) -> Verdict:
    problems: list[tuple[str, str]] = []
    if step.failed:
        problems.append(("errors", f"{step.failed} webhooks failed"))
    if step.achieved_rate < RATE_HELD * step.rate:
        problems.append(("rate", f"sent {step.achieved_rate:.0f}/s of {step.rate:g}/s"))
    missing = step.missing(LAST)
    if missing:
        problems.append(("unfinished", f"{missing} chains unfinished"))
    p99 = percentile(step.latencies_ms(LAST), 99)
    if not p99 <= CHAIN_P99_MS:  # NaN (no chain at all) fails too
        problems.append(("p99", f"chain p99 {p99:.0f} ms > {CHAIN_P99_MS:g}"))
    if not step.chains_done or step.chains_done_after_s > BACKLOG_S:
        problems.append(("backlog", f"chains done {step.chains_done_after_s:.1f} s after the last webhook"))
    if not problems:
        return Verdict(True, "kept up", "kept up")
    return Verdict(False, "; ".join(why for _, why in problems), "no: " + ", ".join(word for word, _ in problems))


@dataclass
class RampResult:
    steps: list[tuple[Step, Verdict]]
    sustained: float  # highest rate that kept up; 0 if none did
    bounded: bool  # a faster rate was tried and did not keep up (else `sustained` is only a lower bound)
    stopped: str  # why the search ended early, if it did


async def search(
    run: Callable[[float], Awaitable[Step]],
    ready: Callable[[], Awaitable[bool]],
    *,
    start: float,
    max_steps: int,
    refine: bool,
    highest: float = 400.0,
) -> RampResult:
    """At most `max_steps` steps, the first at `start`, each `await run(rate)` once `await ready()` says
    the previous step's backlog drained."""
    steps: list[tuple[Step, Verdict]] = []
    passed: list[float] = []
    failed: list[float] = []
    stopped = ""
    rate = start
    for n in range(max_steps):
        if n:
            if passed and failed:  # crossed: one step between, if asked
                low, high = max(passed), min(failed)
                if not refine or high / low < 1.15:
                    break
                rate, refine = round(math.sqrt(low * high)), False
            else:
                rate = round(rate * (FACTOR if passed else 1 / FACTOR))
                if rate > highest or rate < LOWEST:
                    stopped = f"reached the ramp's bound ({rate:g}/s)"
                    break
            if not await ready():
                stopped = f"the backlog of {steps[-1][0].rate:g}/s did not drain"
                break
        step = await run(rate)
        verdict = judge(step)
        steps.append((step, verdict))
        (passed if verdict.ok else failed).append(rate)
    sustained = max(passed, default=0.0)
    return RampResult(steps, sustained, bounded=any(f > sustained for f in failed), stopped=stopped)
