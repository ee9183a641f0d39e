"""`python -m benchmarks [--quick] [--only NAME ...]`: run the benchmarks, print a table, write JSON.

Needs DATABASE_URL (its server hosts the `bench_*` databases this creates and drops; the database it
names is never touched) and REDIS_URL (its database is flushed: give the benchmarks their own).
"""

import argparse
import contextlib
import json
import math
import os
import platform
import secrets
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from benchmarks import bench_drain, bench_history, bench_latency, bench_webhook
from benchmarks.harness import PY, SETTINGS, WEBHOOK_SECRET, Context, Postgres, Processes, Result, log
from config.processes import ROOT

BENCHMARKS: dict[str, Callable[[Context], Result]] = {
    "webhook": bench_webhook.run,
    "drain": bench_drain.run,
    "latency": bench_latency.run,
    "history": bench_history.run,
}
TEMPLATE_DB = "bench_template"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="every benchmark, briefly (CI: about 2 minutes)")
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted(BENCHMARKS),
        metavar="NAME",
        help=f"run only this benchmark (repeatable): {', '.join(BENCHMARKS)}",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "benchmarks" / "results" / "latest.json",
        help="where to write the figures as JSON (default: benchmarks/results/latest.json)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the bench_* databases (for a look afterwards)")
    parser.add_argument(
        "--profile",
        action="append",
        default=[],
        metavar="PROCESS",
        help="sample child processes whose name starts with this (web-outbox, relay, worker, ...) "
        "with py-spy (BENCH_PYSPY=<path>) into results/profiles/; see benchmarks/profile.py",
    )
    args = parser.parse_args(argv)

    database_url, redis_url = os.environ.get("DATABASE_URL", ""), os.environ.get("REDIS_URL", "")
    if not database_url or not redis_url:
        print("DATABASE_URL and REDIS_URL must be set (REDIS_URL's database is flushed).", file=sys.stderr)
        return 2
    # The orchestrator reads the product's settings (channel layer, cache prefix) but never sets up Django.
    # Every process gets the same benchmark-only secrets (production settings demand real ones).
    os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS
    os.environ["PAYMENT_WEBHOOK_SECRET"] = WEBHOOK_SECRET
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only-secret-key-not-for-production-0123456789")
    # Every request and socket goes to 127.0.0.1 (and says so in Host and Origin), so production
    # settings, which may refuse a wildcard, run as they are.
    os.environ.setdefault("ALLOWED_HOSTS", "127.0.0.1,localhost")

    # SIGTERM / SIGHUP stop us like Ctrl-C: through the finally below, which stops every child.
    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    names = args.only or list(BENCHMARKS)
    started = time.monotonic()
    out_dir = args.out.parent
    run_id = secrets.token_hex(3)  # names this run's databases and log folder
    log_dir = out_dir / "logs" / run_id
    base_env = dict(os.environ, REDIS_URL=redis_url, LOG_LEVEL="INFO")
    pg = Postgres(database_url, run_id=run_id)
    procs = Processes(log_dir, base_env, profile=args.profile)
    ctx = Context(pg=pg, procs=procs, redis_url=redis_url, quick=args.quick, template=TEMPLATE_DB, out_dir=out_dir)
    results: list[Result] = []
    interrupted = False
    try:
        log(f"run {run_id}, {'quick' if args.quick else 'full'}: {', '.join(names)}; load average {_load()}")
        log(f"databases bench_{run_id}_*, logs in {log_dir}")
        _make_template(ctx)
        for name in names:
            log(f"--- {name}")
            bench_started = time.monotonic()
            try:
                result = BENCHMARKS[name](ctx)
            except KeyboardInterrupt:
                raise
            except Exception as exc:
                traceback.print_exc()
                result = Result(name, error=f"{type(exc).__name__}: {exc}")
            finally:
                procs.stop_all()
            result.seconds = time.monotonic() - bench_started
            results.append(result)
            log(f"{name} took {result.seconds:.0f} s")
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted; stopping everything")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the clean-up is bounded: let it finish
        procs.stop_all()
        if not args.keep:
            pg.drop_all()
    total = time.monotonic() - started
    print(render(results, quick=args.quick, total=total))
    report = {
        "mode": "quick" if args.quick else "full",
        "run": run_id,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(total, 1),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_after": _load()},
        "interrupted": interrupted,
        "benchmarks": {
            r.name: {
                "seconds": round(r.seconds, 1),
                "error": r.error or None,
                "rows": [row.as_dict() for row in r.rows],
                "details": r.details,
            }
            for r in results
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    log(f"figures written to {args.out}")
    if interrupted:
        return 130
    return 1 if any(r.error for r in results) else 0


def _make_template(ctx: Context) -> None:
    """A migrated, empty database every benchmark clones its own from."""
    log(f"creating {TEMPLATE_DB} (migrate)")
    ctx.pg.create(TEMPLATE_DB)
    ctx.procs.run("migrate", [PY, "manage.py", "migrate", "--noinput", "-v", "0"], ctx.env(TEMPLATE_DB), timeout=300)


def _load() -> str:
    with contextlib.suppress(OSError):
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    return "?"


def _fmt(value: float) -> str:
    if value is None or math.isnan(value):
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def render(results: list[Result], *, quick: bool, total: float) -> str:
    header = ("benchmark", "case", "figure", "value", "unit", "target", "met")
    lines: list[tuple[str, ...]] = [header]
    for r in results:
        if r.error:
            lines.append((r.name, "ERROR", r.error[:80], "", "", "", "no"))
        for row in r.rows:
            met = "" if row.met is None else ("yes" if row.met else "NO")
            lines.append((r.name, row.case, row.figure, _fmt(row.value), row.unit, row.target, met))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for n, line in enumerate(lines):
        cells = [c.rjust(widths[i]) if i == 3 else c.ljust(widths[i]) for i, c in enumerate(line)]
        out.append("  ".join(cells).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    out.append(f"({'quick' if quick else 'full'} run, {total:.0f} s, load average now {_load()})")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
