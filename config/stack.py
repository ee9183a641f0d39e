"""`python -m config.stack run|test|manage`: what `dev.py` runs inside the virtualenv.

run:    start embedded services for what DATABASE_URL / REDIS_URL leave out, migrate, seed the demo,
        then supervise web (WSGI), ws (ASGI), relay and worker in the foreground until Ctrl-C (or until one of
        them dies). Everything it started is stopped on the way out, also when interrupted early.
test:   ruff, ruff format --check, mypy, import-linter and pytest against real services (an embedded
        Redis of its own, because the tests flush it).
manage: one manage.py command against the same services as `run`.
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit, urlunsplit

from config import browser, commands
from config.embedded import EmbeddedServices, default_data_dir
from config.processes import ROOT, Child, Supervisor, port_free

PY = sys.executable
BIN = Path(PY).parent
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_print_lock = threading.Lock()


def say(text: str) -> None:
    with _print_lock:
        print(text, flush=True)


# -- signals --------------------------------------------------------------------------------------


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _watched_signals() -> list[signal.Signals]:
    """The stop signals we act on: an inherited "ignore" (nohup's SIGHUP) stays ignored, for children too."""
    return [sig for sig in STOP_SIGNALS if signal.getsignal(sig) != signal.SIG_IGN]


@contextlib.contextmanager
def _deferred_stop() -> Iterator[None]:
    """Hold Ctrl-C / SIGTERM while starting a child, so none is left started but unrecorded.

    The signal is acted on right after the block.
    """
    received: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, _frame: received.append(signum)) for sig in _watched_signals()}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        raise KeyboardInterrupt


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Block Ctrl-C / SIGTERM while the embedded servers start, for us and the tools pgserver runs.

    The mask is inherited by pg_ctl and initdb, so a Ctrl-C can't kill them half-way; a pending
    signal is delivered when the block ends and stops us cleanly with the servers recorded.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def _ignore_stop_signals() -> None:
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


# -- services -------------------------------------------------------------------------------------


def _env(services: EmbeddedServices, *, redis_name: str = "redis") -> dict[str, str]:
    env = dict(os.environ)
    with _signals_held():
        services.start(env, redis_name=redis_name)
    env.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("COURSECHAIN_DEV", "1")  # local defaults for the secrets (see config/settings.py)
    return env


def _describe(services: EmbeddedServices, env: MutableMapping[str, str]) -> list[str]:
    where = f"embedded, data in {_short(services.data_dir)}/"
    return [
        f"  PostgreSQL  {_redact(env['DATABASE_URL'])}" + (f"  ({where})" if "PostgreSQL" in services.started else ""),
        f"  Redis       {_redact(env['REDIS_URL'])}" + (f"  ({where})" if "Redis" in services.started else ""),
    ]


def _redact(url: str) -> str:
    """The URL without its password, fit for a log."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _short(path: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(path.resolve().relative_to(ROOT))
    return str(path)


# -- run ------------------------------------------------------------------------------------------


def procfile_commands(port: str, ws_port: str) -> dict[str, list[str]]:
    """The Procfile's four processes, tuned for a laptop (loopback only, one web process, quick worker
    start)."""
    return {
        "web": commands.web(f"127.0.0.1:{port}", "--workers", "1"),
        "ws": commands.ws("127.0.0.1", ws_port, *commands.WS_FLAGS),
        "relay": commands.relay(),
        "worker": commands.worker("--concurrency", "2"),
    }


# A line in each process's output that says it is ready (the web process is asked over HTTP instead).
READY_MARKERS = {"relay": " started", "worker": " ready."}


def _forget_dead_metrics(env: dict[str, str]) -> None:
    """Drop the multi-process metric files of processes that are gone (prometheus_client's advice).

    Files are named `<kind>_<pid>.db`; those of live processes (another stack) are kept.
    """
    import psutil

    directory = Path(env.get("PROMETHEUS_MULTIPROC_DIR") or ROOT / ".data" / "prometheus")
    for path in directory.glob("*_*.db"):
        pid = path.stem.rsplit("_", 1)[-1]
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            path.unlink(missing_ok=True)


def run() -> int:
    port = os.environ.get("PORT", "8000")
    if not port.isdigit():
        say(f"PORT must be a number, not {port!r}")
        return 2
    ws_port = os.environ.get("WS_PORT", str(int(port) + 1))
    if not ws_port.isdigit() or ws_port == port:
        say(f"WS_PORT must be a number other than PORT, not {ws_port!r}")
        return 2
    for number in (port, ws_port):
        if not port_free(int(number)):
            say(f"port {number} is in use (another `dev.py run`?); pick others: PORT=8010 python3 dev.py run")
            return 2
    started_at = time.monotonic()
    services = EmbeddedServices(default_data_dir())
    supervisor = Supervisor(
        echo=say, report=say, own_session=False
    )  # in our group: Ctrl-C at the terminal reaches them
    children = supervisor.children
    try:
        env = _env(services)
        env["PORT"] = port
        env["WS_PORT"] = ws_port
        # The student page served by `web` opens its socket on the `ws` process's port.
        env.setdefault("REALTIME_WS_URL", f"ws://127.0.0.1:{ws_port}")
        say("\n".join(["services:", *_describe(services, env)]))
        say("migrating ...")
        subprocess.run([PY, "manage.py", "migrate", "--noinput", "-v", "0"], env=env, check=True, cwd=ROOT)
        seeded = subprocess.run(
            [PY, "manage.py", "seed_demo", "--json"], env=env, check=True, cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        demo = json.loads(seeded.stdout.strip().splitlines()[-1])  # the JSON is its last line
        _forget_dead_metrics(env)
        for name, cmd in procfile_commands(port, ws_port).items():
            child_env = {**env, "DB_APPLICATION_NAME": env.get("DB_APPLICATION_NAME") or f"coursechain-{name}"}
            with _deferred_stop():
                supervisor.start(name, cmd, child_env, ready_marker=READY_MARKERS.get(name))
        base = f"http://127.0.0.1:{port}"
        _wait_ready([f"{base}/api/schema/", f"http://127.0.0.1:{ws_port}/api/schema/"], children)
        _print_banner(base, port, env["REALTIME_WS_URL"], demo, time.monotonic() - started_at)
        while all(c.alive() for c in children):
            time.sleep(0.5)
        dead = [c.name for c in children if not c.alive()]
        say(f"\n{', '.join(dead)} exited; stopping the stack.")
        return 1
    except KeyboardInterrupt:
        say("\nstopping ...")
        return 0
    except subprocess.CalledProcessError as exc:
        say(f"\n`{' '.join(Path(a).name for a in exc.cmd[:3])}` failed (exit {exc.returncode}); stopping.")
        return 1
    except StartupFailed as exc:
        say(f"\n{exc}; stopping.")
        return 1
    finally:
        _ignore_stop_signals()  # a second Ctrl-C must not cut the clean-up short; it is bounded
        stopped = [c.name for c in children]
        supervisor.stop_all(grace=10.0)
        services.stop()
        stopped += [f"the embedded {name}" for name in services.started]
        if stopped:
            say(f"stopped {', '.join(stopped)}.")


class StartupFailed(Exception):
    pass


def _wait_ready(urls: list[str], children: list[Child], timeout: float = 90.0, markers_timeout: float = 20.0) -> None:
    """Wait until the web and ws processes answer HTTP and the relay and worker have said they are ready.

    The servers are required; a missing ready line (a changed log format) only delays the banner.
    """
    started = time.monotonic()
    down = list(urls)
    while True:
        dead = [c.name for c in children if not c.alive()]
        if dead:
            raise StartupFailed(f"{', '.join(dead)} exited during start-up (see its output above)")
        for url in list(down):
            try:
                with urllib.request.urlopen(url, timeout=2):
                    down.remove(url)
            except urllib.error.HTTPError:
                down.remove(url)  # it answers: up
            except OSError:
                pass
        waiting = [c.name for c in children if c.name in READY_MARKERS and not c.ready.is_set()]
        elapsed = time.monotonic() - started
        if not down and (not waiting or elapsed > markers_timeout):
            if waiting:
                say(f"({', '.join(waiting)} did not report ready yet; going on)")
            return
        if elapsed > timeout:
            raise StartupFailed(f"no answer from {', '.join(down)} within {timeout:.0f} s")
        time.sleep(0.1)


def _print_banner(base: str, port: str, ws_url: str, demo: dict[str, list[dict[str, object]]], took: float) -> None:
    student = demo["students"][0]
    course = demo["courses"][0]
    pay_prefix = f"PORT={port} " if port != "8000" else ""
    auth = f"'Authorization: Token {student['token']}'"
    lines = [
        "",
        f"Ready in {took:.1f} s: web + ws + relay + worker. Ctrl-C stops everything.",
        f"  Open {student['email']}'s live page, then pay (below) or add a purchase in the admin:",
        f"    {base}/?token={student['token']}",
        f"  API docs    {base}/api/docs/",
        f"  Admin       {base}/admin/   (create a login: python3 dev.py manage createsuperuser)",
        "  Demo students (API token; the WebSocket takes it as ?token=):",
        *(f"    id={s['id']:<3} {s['email']:<20} token={s['token']}" for s in demo["students"]),
        "  Demo courses:",
        *(f"    id={c['id']:<3} {c['title']}" for c in demo["courses"]),
        f"  Pay for '{course['title']}' as {student['email']} (a signed webhook call, like the provider's):",
        f"    {pay_prefix}python3 dev.py pay --student {student['id']} --course {course['id']}",
        "  Then the dashboard shows the purchase, its trainer and its sessions:",
        f"    curl -s -H {auth} {base}/api/v1/me/dashboard",
        "  Live events (every event after seq 0, then new ones as they happen):",
        f"    {ws_url}/ws/events/?token={student['token']}&after=0",
        "",
    ]
    say("\n".join(lines))


# -- test -----------------------------------------------------------------------------------------


def _run_foreground(cmd: list[str], env: dict[str, str]) -> tuple[int, bool]:
    """Run a command that shares our terminal; returns its exit code and whether a stop was asked.

    Ctrl-C reaches the command from the terminal itself (same process group), so we let it finish its
    own way (pytest tears down, a shell just cancels the line); SIGTERM / SIGHUP sent to us alone are
    passed on to it.
    """
    received: list[int] = []
    proc: subprocess.Popen[bytes] | None = None

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)
        if signum != signal.SIGINT and proc is not None and proc.poll() is None:
            proc.send_signal(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in _watched_signals()}
    try:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT)
        if any(sig != signal.SIGINT for sig in received):
            proc.terminate()
        return proc.wait(), bool(received)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def test(args: list[str]) -> int:
    try:
        # The browser tests' Chromium, provided like the services (first, so a missing one stops at once).
        os.environ["CHROMIUM_PATH"] = browser.provide()
    except browser.NoBrowser as exc:
        say(str(exc))
        return 1
    services = EmbeddedServices(default_data_dir())
    try:
        env = _env(services, redis_name="test-redis")
        env["DJANGO_SETTINGS_MODULE"] = "tests.settings"  # the tests' own settings (see tests/settings.py)
        header = "services (pytest creates and drops test_<database>; each test flushes Redis):"
        say("\n".join([header, *_describe(services, env)]))
        steps = [
            ("ruff", [str(BIN / "ruff"), "check", "."]),
            ("ruff format", [str(BIN / "ruff"), "format", "--check", "."]),
            ("mypy", [str(BIN / "mypy"), "."]),
            ("lint-imports", [str(BIN / "lint-imports")]),
            ("pytest", [PY, "-m", "pytest", *args]),
        ]
        failed = []
        for name, cmd in steps:
            shown = cmd[3:] if name == "pytest" else cmd[1:]
            say(f"\n$ {' '.join([name.split()[0], *shown])}")
            returncode, stopped = _run_foreground(cmd, env)
            if stopped:
                say("\ninterrupted")
                return 130
            if returncode != 0:
                failed.append(name)
        say(f"\nFAILED: {', '.join(failed)}" if failed else "\nall checks passed")
        return 1 if failed else 0
    except KeyboardInterrupt:
        return 130
    finally:
        _ignore_stop_signals()
        services.stop()


# -- bench ----------------------------------------------------------------------------------------


def bench(args: list[str]) -> int:
    """`python -m benchmarks` against the same kind of services as the tests (its own Redis)."""
    services = EmbeddedServices(default_data_dir())
    try:
        env = _env(services, redis_name="bench-redis")
        say(
            "\n".join(
                [
                    "services (benchmarks create and drop bench_* databases; they flush Redis):",
                    *_describe(services, env),
                ]
            )
        )
        returncode, stopped = _run_foreground([PY, "-m", "benchmarks", *args], env)
        return 130 if stopped else returncode
    except KeyboardInterrupt:
        return 130
    finally:
        _ignore_stop_signals()
        services.stop()


# -- manage ---------------------------------------------------------------------------------------


def manage(args: list[str]) -> int:
    services = EmbeddedServices(default_data_dir())
    try:
        env = _env(services)
        return _run_foreground([PY, "manage.py", *args], env)[0]
    except KeyboardInterrupt:
        return 130
    finally:
        _ignore_stop_signals()
        services.stop()


def main() -> int:
    # Stop cleanly on Ctrl-C and SIGTERM even if we inherited "ignore SIGINT" (started with `&` from a
    # script); keep an inherited "ignore SIGHUP" (nohup).
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    if signal.getsignal(signal.SIGHUP) != signal.SIG_IGN:
        signal.signal(signal.SIGHUP, _interrupt)
    try:
        # dev.py blocks these signals across its exec into us, so a Ctrl-C during our start-up
        # lands here, before anything was started.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        command, args = sys.argv[1], sys.argv[2:]
    except KeyboardInterrupt:
        return 130
    if command == "run":
        return run()
    if command == "test":
        return test(args)
    if command == "bench":
        return bench(args)
    return manage(args)


if __name__ == "__main__":
    sys.exit(main())
