"""Shared machinery of the benchmarks: bench databases, child processes, Redis, figures.

The orchestrator (`python -m benchmarks`) never sets Django up: it talks to PostgreSQL with psycopg,
to Redis with redis-py, and runs everything Django-side in child processes (`benchmarks.builder`, the
ASGI server, relays, Celery workers), each pointed at a database of its own named `bench_*`.
"""

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import redis

from config import commands
from config.processes import Child, Supervisor, free_port, port_open, wait_for

PY = sys.executable
SETTINGS = "benchmarks.settings"
WEBHOOK_SECRET = "whsec_bench_only"  # the child processes get it as PAYMENT_WEBHOOK_SECRET
DB_PREFIX = "bench_"
NAIVE_WEBHOOK_PATH = "bench/naive/webhook"  # mounted by benchmarks.urls
NAIVE_WS_PATH = "ws/bench/naive/"  # mounted by benchmarks.asgi
PRODUCT_ASGI, BENCH_ASGI = "config.asgi:application", "benchmarks.asgi:application"


def log(text: str) -> None:
    """Progress goes to stderr, so stdout carries only the table."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


class BenchError(RuntimeError):
    pass


# -- figures --------------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    """Linear-interpolated percentile (p in 0..100) of unsorted values; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class Row:
    """One line of the table (and of the JSON): a figure, its unit and, if any, its target."""

    case: str
    figure: str
    value: float
    unit: str
    target: str = ""
    met: bool | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "case": self.case,
            "figure": self.figure,
            "value": None if math.isnan(self.value) else round(self.value, 3),
            "unit": self.unit,
            "target": self.target,
            "met": self.met,
        }


@dataclass
class Result:
    name: str
    rows: list[Row] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    error: str = ""

    def add(self, case: str, figure: str, value: float, unit: str, *, target: str = "", met: bool | None = None) -> Row:
        row = Row(case, figure, value, unit, target, met)
        self.rows.append(row)
        return row


# -- PostgreSQL -----------------------------------------------------------------------------------


def with_dbname(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


class Postgres:
    """Creates, clones and drops `bench_*` databases on the server DATABASE_URL names.

    Benchmarks use logical names (`bench_drain_10000`); on the server each carries this run's id
    (`bench_<run>_drain_10000`), so two runs on one server (a developer and CI, say) never touch each
    other's databases. `physical()` gives the server-side name; "postgres" is left alone."""

    def __init__(self, base_url: str, *, run_id: str) -> None:
        self.base_url = base_url
        self.run_id = run_id
        self.created: list[str] = []

    def physical(self, name: str) -> str:
        if not name.startswith(DB_PREFIX):
            return name
        return f"{DB_PREFIX}{self.run_id}_{name[len(DB_PREFIX) :]}"[:63]

    def url(self, name: str) -> str:
        return with_dbname(self.base_url, self.physical(name))

    def _admin(self) -> psycopg.Connection[tuple[Any, ...]]:
        return psycopg.connect(self.url("postgres"), autocommit=True)

    def create(self, name: str, *, template: str | None = None, file_copy: bool = False) -> str:
        """A fresh database, empty or cloned from `template`.

        `file_copy`: copy the template's files (one checkpoint) instead of WAL-logging every page,
        much faster for a large template."""
        assert name.startswith(DB_PREFIX), name
        physical = self.physical(name)
        with self._admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{physical}" WITH (FORCE)')  # this run's own
            if name not in self.created:
                self.created.append(name)
            sql = f'CREATE DATABASE "{physical}"'
            if template:
                sql += f' TEMPLATE "{self.physical(template)}"'
            admin.execute(sql + (" STRATEGY FILE_COPY" if file_copy else ""))
        return self.url(name)

    def drop(self, name: str) -> None:
        assert name.startswith(DB_PREFIX), name
        with self._admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{self.physical(name)}" WITH (FORCE)')
        if name in self.created:
            self.created.remove(name)

    def drop_all(self) -> None:
        for name in list(reversed(self.created)):
            with contextlib.suppress(psycopg.Error):
                self.drop(name)

    def disable_event_guards(self, name: str) -> list[str]:
        """Turn off the "no state without its event" triggers (`*_requires_event`) in database `name`,
        for the naive baselines, which write state without events. Returns the triggers turned off."""
        with self.connect(name) as conn:
            found = conn.execute(
                "SELECT tgrelid::regclass::text, tgname FROM pg_trigger "
                "WHERE tgname LIKE '%\\_requires\\_event' AND NOT tgisinternal ORDER BY 1, 2"
            ).fetchall()
            if not found:
                raise BenchError(f"no *_requires_event trigger in {name}: did the guards move?")
            for table, trigger in found:
                conn.execute(f'ALTER TABLE {table} DISABLE TRIGGER "{trigger}"')
        return [trigger for _, trigger in found]

    def connect(self, name: str) -> psycopg.Connection[tuple[Any, ...]]:
        return psycopg.connect(self.url(name), autocommit=True)

    def scalar(self, name: str, sql: str, params: Any = None) -> Any:
        with self.connect(name) as conn:
            row = conn.execute(sql, params).fetchone()
        return row[0] if row else None


# -- Redis ----------------------------------------------------------------------------------------


def flush_redis(url: str) -> None:
    """Empty the one Redis database REDIS_URL names (the benchmarks' own)."""
    redis.Redis.from_url(url).flushdb()


# -- processes ------------------------------------------------------------------------------------


def _proc_cpu() -> dict[tuple[int, int, str], float]:
    """CPU seconds of every live process in /proc (Linux), by (pid, process group, command name)."""
    tick = os.sysconf("SC_CLK_TCK")
    totals: dict[tuple[int, int, str], float] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                comm, _, rest = f.read().partition(" (")[2].rpartition(")")
        except OSError:  # gone meanwhile
            continue
        fields = rest.split()
        # After "(comm)": state ppid pgrp ... utime (12th) stime (13th), in clock ticks.
        totals[(int(entry.name), int(fields[2]), comm)] = (int(fields[11]) + int(fields[12])) / tick
    return totals


def machine_busy_seconds() -> float:
    """Busy CPU seconds of the whole machine since boot, from /proc/stat; the difference of two readings
    is the machine's use in between (every core, every process, PostgreSQL too)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values) - idle) / os.sysconf("SC_CLK_TCK")


class CpuUsage:
    """Where the CPU went between `start()` and `stop()`: each child process (group), the PostgreSQL
    backends serving each of them (by `application_name`, which every child sets to its name), this
    process (the load generator) and the whole machine, so that "the rest" (Redis, the server's own
    background processes, anything else running) shows too.

    A thread samples every `every` seconds in between, so that a process that starts or ends meanwhile
    (a worker's pool replacing its connections, say) is counted as whose it is, not as "other"; only
    its time after its last sample is missed."""

    def __init__(
        self, procs: list[Child], backends: Callable[[], dict[int, str]] | None = None, *, every: float = 1.0
    ) -> None:
        self.procs = procs
        self.backends = backends or dict
        self.every = every
        self.totals: dict[str, float] = {}
        self._last: dict[int, float] = {}  # pid -> its CPU seconds at the previous sample
        self._bounds: list[tuple[float, float, float]] = []  # (monotonic, own CPU, machine busy)
        self._stopping = threading.Event()
        self._sampler: threading.Thread | None = None

    def start(self) -> None:
        self._sample(count=False)
        self._bounds.append(self._bound())
        self._sampler = threading.Thread(target=self._sample_until_stopped, name="cpu-usage", daemon=True)
        self._sampler.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._sampler is not None:
            self._sampler.join()
        self._sample(count=True)
        self._bounds.append(self._bound())

    def _sample_until_stopped(self) -> None:
        try:
            while not self._stopping.wait(self.every):
                self._sample(count=True)
        except psycopg.Error as exc:  # the benchmark failed and closed its connection: stop() won't come
            log(f"cpu usage: sampling stopped: {exc}")

    @staticmethod
    def _bound() -> tuple[float, float, float]:
        own = os.times()
        return time.monotonic(), own.user + own.system, machine_busy_seconds()

    def _sample(self, *, count: bool) -> None:
        groups = {p.pid: p.name for p in self.procs}
        backends = self.backends()
        for (pid, pgrp, comm), cpu in _proc_cpu().items():
            previous = self._last.get(pid, 0.0)  # unseen before: it started since the last sample
            self._last[pid] = cpu
            if pgrp in groups:
                key = groups[pgrp]
            elif pid in backends:
                key = f"postgres for {backends[pid] or '?'}"
            elif comm in ("postgres", "redis-server"):  # the rest of PostgreSQL (background, other
                key = f"{comm} (the rest)" if comm == "postgres" else comm  # databases), and Redis
            else:
                continue
            if count:
                self.totals[key] = self.totals.get(key, 0.0) + max(cpu - previous, 0.0)

    def seconds(self) -> float:
        """Wall-clock seconds between `start()` and `stop()`."""
        return self._bounds[-1][0] - self._bounds[0][0]

    def used(self) -> dict[str, float]:
        """CPU seconds used between `start()` and `stop()`, by name; `machine` is every core of the
        machine, `loadgen` this process, `other` the machine minus everything named."""
        (_, own0, busy0), (_, own1, busy1) = self._bounds[0], self._bounds[-1]
        out = dict(self.totals)
        out["loadgen"] = own1 - own0
        out["machine"] = busy1 - busy0
        out["other"] = out["machine"] - sum(v for k, v in out.items() if k != "machine")
        return out


class Processes:
    """Every child process a benchmark starts, on the one supervisor (`config.processes`): each in its own
    session (so a Ctrl-C at the terminal reaches only the orchestrator, which then stops them in order),
    logging to `<log_dir>/<name>.log`. `stop_all` sends SIGTERM, waits, then SIGKILLs the child's own
    process group (a Celery worker's pool children included)."""

    def __init__(self, log_dir: Path, base_env: dict[str, str], *, profile: list[str] | None = None) -> None:
        self.log_dir = log_dir
        self.base_env = base_env
        self.supervisor = Supervisor(log_dir=log_dir, report=log, grace=15.0)
        # py-spy (BENCH_PYSPY=<path to py-spy>) samples the children whose name starts with one of these.
        self.profile = profile or []
        self.pyspy = os.environ.get("BENCH_PYSPY", "py-spy")

    @property
    def procs(self) -> list[Child]:
        return self.supervisor.children

    def env(self, database_url: str, **extra: str) -> dict[str, str]:
        env = dict(self.base_env)
        env.update(DATABASE_URL=database_url, DJANGO_SETTINGS_MODULE=SETTINGS, PYTHONUNBUFFERED="1")
        env.update(extra)
        return env

    def start(self, name: str, args: list[str], env: dict[str, str]) -> Child:
        env = {"DB_APPLICATION_NAME": name[:60], **env}  # who is who in pg_stat_activity
        proc = self.supervisor.start(name, args, env)
        if any(name.startswith(p) for p in self.profile):
            self._attach_profiler(proc)
        return proc

    def _attach_profiler(self, proc: Child) -> None:
        """py-spy records `proc` (and its children) until it exits, as collapsed stacks (see profile.py)."""
        out = self.log_dir.parent / "profiles" / f"{proc.name}.txt"
        out.parent.mkdir(parents=True, exist_ok=True)
        args = [self.pyspy, "record", "--pid", str(proc.pid), "--format", "raw", "--rate", "250"]
        # BENCH_PYSPY_GIL=1: only the thread holding the GIL, i.e. where the Python CPU time goes
        # (the default, --idle, also shows what threads wait on).
        args += ["--subprocesses", "--nonblocking", "-o", str(out)]
        args.append("--gil" if os.environ.get("BENCH_PYSPY_GIL") == "1" else "--idle")
        # Started after its target, so stop_all() stops the target first and py-spy writes its file.
        self.supervisor.start(f"pyspy-{proc.name}", args, os.environ)
        log(f"profiling {proc.name} into {out}")

    def run(self, name: str, args: list[str], env: dict[str, str], *, timeout: float) -> str:
        """Run a child to completion (bounded by `timeout`); returns its output, raises if it failed."""
        proc = self.start(name, args, env)
        try:
            proc.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            self.stop(proc)
            raise BenchError(f"{name} did not finish within {timeout:.0f} s") from exc
        finally:
            if proc in self.procs and not proc.alive():
                self.procs.remove(proc)
        if proc.popen.returncode != 0:
            raise BenchError(f"{name} failed (exit {proc.popen.returncode}):\n{proc.tail()}")
        return proc.output()

    def web(self, name: str, env: dict[str, str], *, workers: int | None = None) -> tuple[Child, int]:
        """The Childfile's `web` process (gunicorn, `config.wsgi`, `config/gunicorn.conf.py`); `workers`
        overrides the configured number of processes (WEB_CONCURRENCY)."""
        port = free_port()
        args = commands.web(f"127.0.0.1:{port}", "--log-level", "warning")
        if workers is not None:
            args += ["--workers", str(workers)]
        proc = self.start(name, args, env)
        wait_for(lambda: port_open(port), timeout=60, what=f"{name} to listen", children=[proc], error=BenchError)
        return proc, port

    def ws(self, name: str, env: dict[str, str]) -> tuple[Child, int]:
        """The Childfile's `ws` process (uvicorn, `config.asgi`; it serves HTTP too)."""
        port = free_port()
        args = commands.ws("127.0.0.1", port, "--log-level", "warning")
        proc = self.start(name, args, env)
        wait_for(lambda: port_open(port), timeout=60, what=f"{name} to listen", children=[proc], error=BenchError)
        return proc, port

    def naive_ws(self, name: str, env: dict[str, str]) -> tuple[Child, int]:
        """The `ws` process as the Childfile runs it, serving `benchmarks.asgi` (the product's routes plus
        the naive chain's socket, `benchmarks.naive_ws`)."""
        port = free_port()
        args = [
            BENCH_ASGI if a == PRODUCT_ASGI else a for a in commands.ws("127.0.0.1", port, "--log-level", "warning")
        ]
        if BENCH_ASGI not in args:
            raise BenchError(f"config.commands.ws no longer serves {PRODUCT_ASGI}: {args}")
        proc = self.start(name, args, env)
        wait_for(lambda: port_open(port), timeout=60, what=f"{name} to listen", children=[proc], error=BenchError)
        return proc, port

    def relay(self, name: str, env: dict[str, str]) -> Child:
        return self.start(name, commands.relay(), env)

    def worker(self, name: str, env: dict[str, str], *, concurrency: int | None = 2) -> Child:
        """A Celery worker (prefork); `concurrency=None` leaves Celery's default, one process per core,
        as the Procfile runs it."""
        sizing = [] if concurrency is None else ["--concurrency", str(concurrency)]
        args = commands.worker(*sizing, "--without-heartbeat", "-n", f"{name}@%h")
        return self.start(name, args, env)

    def wait_ready(self, procs: list[Child], marker: str, *, timeout: float = 60) -> None:
        wait_for(
            lambda: all(marker in p.output() for p in procs),
            timeout=timeout,
            what=marker,
            children=procs,
            error=BenchError,
        )

    def stop(self, proc: Child, grace: float = 15.0) -> None:
        if proc.name.startswith("pyspy-") and proc.alive():
            # py-spy writes its file when its target exits (stopped before it); nudge it if it hangs.
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(timeout=20)
            if proc.alive():
                proc.signal(signal.SIGINT)
        self.supervisor.stop(proc, grace)

    def stop_all(self) -> None:
        for proc in [p for p in self.procs if p.alive() and not p.name.startswith("pyspy-")]:
            proc.signal(signal.SIGTERM)  # all at once, in parallel
        for proc in list(self.procs):
            self.stop(proc)

    @contextlib.contextmanager
    def scope(self) -> Iterator["Processes"]:
        """Stop every process started inside the block when it ends, however it ends."""
        before = set(map(id, self.procs))
        try:
            yield self
        finally:
            for proc in [p for p in self.procs if id(p) not in before]:
                self.stop(proc)


# -- context --------------------------------------------------------------------------------------


@dataclass
class Context:
    """What every benchmark gets: the servers, its processes, the mode and where to leave logs."""

    pg: Postgres
    procs: Processes
    redis_url: str
    quick: bool
    template: str
    out_dir: Path

    def env(self, db: str, **extra: str) -> dict[str, str]:
        return self.procs.env(self.pg.url(db), **extra)

    def build(self, db: str, spec: dict[str, Any], *, timeout: float = 900, parallel: int = 1) -> dict[str, Any]:
        """Run `benchmarks.builder` against `db` with `spec`; returns what it printed (JSON).

        `parallel` > 1 writes the backlog with that many builder processes (disjoint students)."""
        if parallel <= 1 or "backlog" not in spec:
            return self._build_one(f"builder-{db}", db, spec, timeout)
        first = {k: v for k, v in spec.items() if k not in ("backlog", "vacuum")}
        out = self._build_one(f"builder-{db}", db, first, timeout) if first else {"timings": {}}
        started = time.monotonic()
        builders = []
        for k in range(parallel):
            part = {"backlog": {**spec["backlog"], "part": k, "parts": parallel}}
            args = [PY, "-m", "benchmarks.builder", json.dumps(part)]
            builders.append(self.procs.start(f"builder-{db}-{k}", args, self.env(db)))
        wait_for(
            lambda: not any(b.alive() for b in builders), timeout=timeout, what="the backlog builders", error=BenchError
        )
        for b in builders:
            self.procs.procs.remove(b)
            if b.popen.returncode != 0:
                raise BenchError(f"{b.name} failed (exit {b.popen.returncode}):\n{b.tail()}")
        out["timings"]["backlog"] = time.monotonic() - started
        if spec.get("vacuum"):
            out["timings"].update(self._build_one(f"builder-{db}-vacuum", db, {"vacuum": True}, timeout)["timings"])
        return out

    def _build_one(self, name: str, db: str, spec: dict[str, Any], timeout: float) -> dict[str, Any]:
        out = self.procs.run(name, [PY, "-m", "benchmarks.builder", json.dumps(spec)], self.env(db), timeout=timeout)
        for line in reversed(out.splitlines()):
            if line.startswith("{"):
                parsed: dict[str, Any] = json.loads(line)
                return parsed
        raise BenchError(f"builder printed no result:\n{out[-2000:]}")
