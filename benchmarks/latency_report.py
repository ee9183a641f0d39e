"""The latency benchmark's table rows and JSON details, from its measured steps (`benchmarks.chain`)."""

import math
import os
from typing import Any

from benchmarks import ramp
from benchmarks.chain import CHAIN, LAST, Step
from benchmarks.harness import Result, percentile

# Issue 15's targets for the outbox chain at 50 purchases/s (shown, not enforced: a miss is a figure).
TARGETS_MS = {CHAIN[0]: 25.0, LAST: 100.0}
TARGET_DONE_AFTER_S = 1.0
TARGET_CPU_MS = 20.0
TARGET_SUSTAINED = 100.0
TARGET_CPU_RATIO = 1.2  # outbox / naive, at most
TARGET_SUSTAINED_RATIO = 0.85  # outbox / naive, at least


def _target(row_target: float | None, value: float, *, at_most: bool = True) -> dict[str, Any]:
    if row_target is None:
        return {}
    met = value <= row_target if at_most else value >= row_target
    return {"target": f"{'<=' if at_most else '>='} {row_target:g}", "met": bool(met) and not math.isnan(value)}


def report_case(
    result: Result,
    case: str,
    base: Step,
    ramped: ramp.RampResult | None,
    *,
    tag: str,
    settled: dict[int, float],
    primary: bool,
) -> None:
    """Rows for one case: the fixed-rate step's chain latencies, losses, lag and CPU, then the ramp."""
    at = f"{case}, {base.rate:g}/s"
    for event_type in CHAIN:
        values = base.latencies_ms(event_type)
        goal = TARGETS_MS.get(event_type) if primary else None
        result.add(at, f"{event_type}: commit->frame p50", percentile(values, 50), "ms")
        p99 = percentile(values, 99)
        result.add(at, f"{event_type}: commit->frame p99", p99, "ms", **_target(goal, p99))
        result.add(at, f"{event_type}: commit->frame max", max(values, default=math.nan), "ms")
    missing = sum(base.missing(t) for t in CHAIN)
    result.add(at, "frames missing (all events)", float(missing), "frames", target="0", met=missing == 0)
    result.add(at, "webhooks failed (5xx, timeouts)", float(base.failed), "requests", target="0", met=base.failed == 0)
    result.add(at, "achieved rate", base.achieved_rate, "purchases/s")
    done_note = "" if base.chains_done else " (not all: gave up)"
    lag = base.chains_done_after_s
    goal_s = TARGET_DONE_AFTER_S if primary else None
    result.add(at, f"chains all done after the last webhook{done_note}", lag, "s", **_target(goal_s, lag))
    cpu = {name.replace(tag, ""): ms for name, ms in base.cpu_ms_per_purchase().items()}
    busy = base.cpu.get("machine", math.nan) / max(base.cpu_seconds, 1e-9)
    result.add(at, "machine busy (first webhook to all done)", busy, f"of {os.cpu_count()} cores")
    result.add(at, "CPU per purchase, whole machine", cpu.get("machine", math.nan), "ms")
    own = _chain_cpu(cpu)
    result.add(
        at,
        "CPU per purchase, the chain's processes + backends",
        own,
        "ms",
        **_target(TARGET_CPU_MS if primary else None, own),
    )
    for name, value in sorted(cpu.items(), key=lambda item: -item[1]):
        if name != "machine" and value >= 0.005:
            result.add(at, f"  in {name}", value, "ms")
    if primary:
        _outbox_split(result, at, base, settled)
    details: dict[str, Any] = {
        "base": _step_details(base, tag),
        "commit_itself_ms": _summary([(r - s) * 1000 for s, r in base.commits.values()]),
        "webhook_response_ms": _summary(base.response_ms),
    }
    if ramped is not None:
        _ramp_rows(result, case, ramped, primary=primary)
        details["ramp"] = {
            "sustained": ramped.sustained,
            "bounded": ramped.bounded,
            "stopped": ramped.stopped,
            "steps": [{**_step_details(s, tag), "verdict": v.why, "kept_up": v.ok} for s, v in ramped.steps],
        }
    result.details[case] = details


def _outbox_split(result: Result, at: str, base: Step, settled: dict[int, float]) -> None:
    """The earlier rounds' figures for `purchase.created`: where its time goes, and bounds."""
    first = base.frames.get(CHAIN[0], {})
    to_relay = [(settled[p] - r) * 1000 for p, (_, r) in base.commits.items() if p in settled and p in first]
    to_socket = [(first[p] - settled[p]) * 1000 for p in first if p in settled]
    from_sent = [(first[p] - s) * 1000 for p, (s, _) in base.commits.items() if p in first]
    commit_ms = [(r - s) * 1000 for s, r in base.commits.values()]
    upper = [(first[p] - occurred) * 1000 for p, occurred in base.occurred.items() if p in first]
    result.add(at, "  purchase.created: commit->relay pushed p99", percentile(to_relay, 99), "ms")
    result.add(at, "  purchase.created: pushed->frame p99", percentile(to_socket, 99), "ms")
    result.add(at, "  purchase.created: COMMIT sent->frame p99", percentile(from_sent, 99), "ms")
    result.add(at, "  the webhook's COMMIT itself p99", percentile(commit_ms, 99), "ms")
    result.add(at, "  the webhook's COMMIT itself max", max(commit_ms, default=math.nan), "ms")
    result.add(at, "  purchase.created: created_at->frame p99 (upper bound)", percentile(upper, 99), "ms")
    result.add(at, "webhook response p99", percentile(base.response_ms, 99), "ms")


def _ramp_rows(result: Result, case: str, ramped: ramp.RampResult, *, primary: bool) -> None:
    at = f"{case}, ramp"
    for step, verdict in ramped.steps:
        p99 = percentile(step.latencies_ms(LAST), 99)
        cpu = _chain_cpu(step.cpu_ms_per_purchase())
        result.add(at, f"{step.rate:g}/s: chain p99 ({verdict.short}; CPU/purchase {cpu:.0f} ms)", p99, "ms")
    bound = "" if ramped.bounded else " (lower bound: nothing faster failed)"
    result.add(
        at,
        f"highest sustainable rate{bound}",
        ramped.sustained,
        "purchases/s",
        **_target(TARGET_SUSTAINED if primary else None, ramped.sustained, at_most=False),
    )
    if ramped.stopped:
        result.details.setdefault("ramp_stopped", {})[case] = ramped.stopped


def report_comparison(
    result: Result,
    outbox: tuple[Step, ramp.RampResult | None],
    naive: tuple[Step, ramp.RampResult | None],
    *,
    names: tuple[str, str],
) -> None:
    """Ours against the naive chain: CPU per purchase at the fixed rate, and sustainable rates."""
    at = "outbox / naive"
    ours, theirs = (_chain_cpu(step.cpu_ms_per_purchase()) for step, _ in (outbox, naive))
    ratio = ours / theirs if theirs else math.nan
    result.add(at, f"CPU per purchase ({ours:.1f} / {theirs:.1f} ms)", ratio, "x", **_target(TARGET_CPU_RATIO, ratio))
    if outbox[1] is not None and naive[1] is not None:
        a, b = outbox[1].sustained, naive[1].sustained
        ratio = a / b if b else math.nan
        goal = _target(TARGET_SUSTAINED_RATIO, ratio, at_most=False)
        result.add(at, f"highest sustainable rate ({a:g} / {b:g} per s)", ratio, "x", **goal)
    result.details["compared"] = list(names)


SHARED = ("machine", "other", "postgres (the rest)", "redis-server")


def _chain_cpu(cpu: dict[str, float]) -> float:
    """The CPU of the chain's own processes, the PostgreSQL backends serving them and the load generator.
    Not counted: `other`, the server-wide rest of PostgreSQL (background writers, but also every other
    database's backends) and Redis, all of which on a shared machine carry someone else's work too (on
    a quiet machine PostgreSQL's rest and Redis take 1-3 ms per purchase)."""
    return sum(v for k, v in cpu.items() if k not in SHARED) if "machine" in cpu else math.nan


def _step_details(step: Step, tag: str) -> dict[str, Any]:
    return {
        "rate": step.rate,
        "seconds": step.seconds,
        "sent": step.sent,
        "achieved_rate": round(step.achieved_rate, 2),
        "late_sends": step.late_sends,
        "errors": step.errors,
        "chains_done": step.chains_done,
        "chains_done_after_s": round(step.chains_done_after_s, 2),
        "commit_to_frame_ms": {t: step.summary(t) for t in CHAIN},
        "cpu_ms_per_purchase": {k.replace(tag, ""): round(v, 3) for k, v in step.cpu_ms_per_purchase().items()},
        "cpu_window_seconds": round(step.cpu_seconds, 2),
    }


def _summary(values: list[float]) -> dict[str, float | int]:
    return {
        "n": len(values),
        "p50": round(percentile(values, 50), 2),
        "p99": round(percentile(values, 99), 2),
        "max": round(max(values), 2) if values else math.nan,
    }
