"""`python -m config.stack run|test|manage`: what `dev.py` runs inside the virtualenv.

run:    start embedded services if needed, migrate, seed the demo, then supervise web (ASGI), relay
        and worker in the foreground until Ctrl-C (or until one of them dies).
test:   ruff, mypy, import-linter and pytest against the same kind of services.
manage: one manage.py command against those services.
"""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from config.embedded import default_data_dir, ensure_services

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def _env() -> tuple[dict[str, str], list[object]]:
    env = dict(os.environ)
    handles = ensure_services(env, default_data_dir())
    env.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env, handles


def procfile_commands(port: str) -> dict[str, list[str]]:
    """The same three processes as the Procfile."""
    return {
        "web": [
            PY,
            "-m",
            "uvicorn",
            "config.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            port,
            "--lifespan",
            "off",
            "--no-access-log",
        ],
        "relay": [PY, "manage.py", "run_relay"],
        "worker": [PY, "-m", "celery", "-A", "config", "worker", "--loglevel", "INFO", "--concurrency", "2"],
    }


def run() -> int:
    env, _handles = _env()
    port = env.get("PORT", "8000")
    subprocess.run([PY, "manage.py", "migrate", "--noinput"], env=env, check=True, cwd=ROOT)
    seeded = subprocess.run(
        [PY, "manage.py", "seed_demo", "--json"], env=env, check=True, cwd=ROOT, capture_output=True, text=True
    )
    demo = json.loads(seeded.stdout)
    procs = {name: subprocess.Popen(cmd, env=env, cwd=ROOT) for name, cmd in procfile_commands(port).items()}
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_http(f"{base}/api/schema/", procs)
        _print_banner(base, port, demo)
        while all(p.poll() is None for p in procs.values()):
            time.sleep(0.5)
        dead = [name for name, p in procs.items() if p.poll() is not None]
        print(f"\n{', '.join(dead)} exited; stopping the stack.", flush=True)
        return 1
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
        return 0
    finally:
        _stop(procs)


def _wait_http(url: str, procs: dict[str, subprocess.Popen[bytes]], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs.values()):
            raise SystemExit("a process exited during start-up; see its output above")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not answer within {timeout:.0f} s")


def _print_banner(base: str, port: str, demo: dict[str, list[dict[str, object]]]) -> None:
    student = demo["students"][0]
    course = demo["courses"][0]
    lines = [
        "",
        "The stack is up (web + relay + worker). Ctrl-C stops everything.",
        f"  API docs    {base}/api/docs/",
        f"  Admin       {base}/admin/   (create a login: python3 dev.py manage createsuperuser)",
        f"  WebSocket   ws://127.0.0.1:{port}/ws/events/?token={student['token']}&after=0",
        "  Demo students:",
        *(f"    id={s['id']:<3} {s['email']:<22} token={s['token']}" for s in demo["students"]),
        "  Send a signed demo payment:",
        f"    python3 dev.py pay --student {student['id']} --course {course['id']}",
        "  Then see the purchase, its trainer and its sessions:",
        f"    curl -s -H 'Authorization: Token {student['token']}' {base}/api/v1/me/dashboard",
        "",
    ]
    print("\n".join(lines), flush=True)


def _stop(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    for p in procs.values():
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for p in procs.values():
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def test(args: list[str]) -> int:
    env, _handles = _env()
    steps = [
        ["ruff", "check", "."],
        ["ruff", "format", "--check", "."],
        ["mypy", "."],
        ["lint-imports"],
        [PY, "-m", "pytest", *args],
    ]
    failed = []
    for step in steps:
        print(f"\n$ {' '.join(Path(step[0]).name if i == 0 else s for i, s in enumerate(step))}", flush=True)
        cmd = [str(Path(PY).parent / step[0]), *step[1:]] if not step[0].startswith("/") else step
        if subprocess.run(cmd, env=env, cwd=ROOT).returncode != 0:
            failed.append(Path(step[0]).name if step[0] != PY else "pytest")
    if failed:
        print(f"\nFAILED: {', '.join(failed)}", flush=True)
        return 1
    return 0


def manage(args: list[str]) -> int:
    env, _handles = _env()
    return subprocess.run([PY, "manage.py", *args], env=env, cwd=ROOT).returncode


def main() -> int:
    command, args = sys.argv[1], sys.argv[2:]
    if command == "run":
        return run()
    if command == "test":
        return test(args)
    return manage(args)


if __name__ == "__main__":
    sys.exit(main())
