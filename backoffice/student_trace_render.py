"""`trace --student` as text (one terminal screen, the verdict first) and as JSON."""

from typing import Any

from backoffice.student_trace import StudentTrace, clock, duration_s, short

MAX_LINES_PER_PART = 8


def student_trace_json(t: StudentTrace) -> dict[str, Any]:
    return {
        "student_id": t.student_id,
        "at": t.at.isoformat(),
        "verdict": {"code": t.verdict.code, "current": t.verdict.current, "message": t.verdict.message},
        "stream": {
            "last_seq": t.last_seq,
            "delivered_seq": t.delivered_seq,
            "open_deliveries": [
                {
                    "id": d.step.id,
                    "sink": d.step.sink,
                    "seq": d.seq,
                    "event_type": d.event_type,
                    "status": d.step.status,
                    "attempts": d.step.attempts,
                    "last_error": d.step.last_error,
                    "next_attempt": d.step.available_at.isoformat(),
                    "state": d.step.state,
                    "note": d.step.note,
                }
                for d in t.open_deliveries
            ],
        },
        "cache": {"floor": t.cache_floor, "dashboard_seq": t.cache_seq, "error": t.cache_error or None},
        "sockets": [
            {
                "socket_id": s.entry.socket_id,
                "process": s.entry.process,
                "connected_at": s.entry.connected_at,
                "start_cursor": s.entry.start_cursor,
                "last_sent": s.entry.last_sent,
                "behind": s.behind,
                "last_pong": s.entry.last_pong or None,
                "send_blocked_since": s.entry.send_blocked_since or None,
                "send_timeout": s.entry.send_timeout,
                "beat_at": s.entry.beat_at,
            }
            for s in t.sockets
        ],
        "sockets_error": t.sockets_error or None,
    }


def student_trace_text(t: StudentTrace) -> str:
    """Verdict first, then the stream, the cache and the sockets; every time in UTC with its age."""
    mark = "OK" if t.verdict.current else "NOT CURRENT"
    lines = [
        f"Student {t.student_id} -- {mark} ({t.verdict.code}): {t.verdict.message}",
        "",
        f"traced at {clock(t.at, t.at).split(' (')[0]}",
        f"stream   last committed #{t.last_seq}, delivered to the app (realtime) up to #{t.delivered_seq}",
    ]
    for d in t.open_deliveries[:MAX_LINES_PER_PART]:
        error = f"; error: {short(d.step.last_error)}" if d.step.last_error else ""
        lines.append(
            f"  #{d.seq} {d.event_type} -> {d.step.sink}: {d.step.status}, {d.step.attempts} attempt(s), next "
            f"{clock(d.step.available_at, t.at)}{error}"
        )
    lines += _more(len(t.open_deliveries), "open")
    if t.cache_error:
        lines.append(f"cache    {t.cache_error}")
    else:
        cached = f"dashboard cached at seq {t.cache_seq}" if t.cache_seq is not None else "no dashboard cached"
        lines.append(f"cache    {cached}, floor set by the relay {t.cache_floor if t.cache_floor is not None else '-'}")
    if t.sockets_error:
        lines.append(f"sockets  {t.sockets_error}")
    else:
        lines.append(f"sockets  {len(t.sockets)} open")
    for s in t.sockets[:MAX_LINES_PER_PART]:
        e = s.entry
        blocked = f", send blocked for {duration_s(s.blocked_for)}" if s.blocked_for else ""
        lines.append(
            f"  {e.process}: at seq {e.last_sent} ({s.behind} behind), started after {e.start_cursor}, connected "
            f"{clock(e.connected_at, t.at)}, last pong {clock(e.last_pong, t.at)}{blocked}"
        )
    lines += _more(len(t.sockets), "open sockets")
    return "\n".join(lines)


def _more(count: int, what: str) -> list[str]:
    extra = count - MAX_LINES_PER_PART
    return [f"  ... {extra} more {what} (see --json)"] if extra > 0 else []
