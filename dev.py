#!/usr/bin/env python3
"""Developer entry point; needs only CPython 3.11 or newer (3.11, 3.12 and 3.13 are tested).

    python3 dev.py run      the whole stack (embedded PostgreSQL + Redis unless DATABASE_URL/REDIS_URL)
    python3 dev.py test     lint, types, architecture and the test suite
    python3 dev.py bench [--quick]   the benchmarks (benchmarks/README.md)
    python3 dev.py pay --student ID --course ID     send a signed demo payment to the running stack
    python3 dev.py manage ARGS...                   a manage.py command against the same services

Uses the Python it was started with: creates `.venv-<X.Y>` for it (and points `.venv` at it) from the
hash-pinned locks on first use and when a lock changes: `requirements.lock` (what production runs) for
`run` and `manage`, `requirements-dev.lock` (the same pins plus the test and lint tools) for `test` and
`bench`. Both locks are universal: one file resolves for every supported Python.
"""

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent
# One virtualenv per Python, so switching between 3.11 and 3.13 never reinstalls: `.venv-3.13`.
VENV = ROOT / f".venv-{sys.version_info[0]}.{sys.version_info[1]}"
LINK = ROOT / ".venv"  # the last one used, for `.venv/bin/python ...` in the docs
LOCK = ROOT / "requirements.lock"
DEV_LOCK = ROOT / "requirements-dev.lock"  # LOCK's pins plus the tools (it is compiled with -c LOCK)


def venv_python() -> Path:
    return VENV / "bin" / "python"


def ensure_supported_python() -> None:
    if sys.version_info < (3, 11) or sys.implementation.name != "cpython":
        raise SystemExit(
            f"dev.py needs CPython 3.11 or newer (this is {sys.version.split()[0]}); install one and retry"
        )


def _digest(lock: Path) -> str:
    return hashlib.sha256(lock.read_bytes()).hexdigest()


def ensure_venv(lock: Path) -> None:
    """Install `lock` unless it (or the dev lock, a superset with the same pins) is what is installed."""
    stamp = VENV / ".lock-sha256"
    installed = stamp.read_text().split() if stamp.exists() else []
    good = {_digest(lock), _digest(DEV_LOCK)} if lock == LOCK else {_digest(lock)}
    if venv_python().exists() and good & set(installed):
        _link_venv()
        return
    if not venv_python().exists():
        print(f"creating {VENV.name} for Python {sys.version.split()[0]} (first run only) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    print(f"installing pinned dependencies from {lock.name} (about a minute, first run only) ...", flush=True)
    result = subprocess.run(
        [
            str(venv_python()),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--require-hashes",
            "-r",
            str(lock),
        ],
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"installing {lock.name} into {VENV.name} failed (see pip's output above)")
    stamp.write_text(_digest(lock))
    _link_venv()


def _link_venv() -> None:
    if LINK.is_symlink() and os.readlink(LINK) == VENV.name:
        return
    if LINK.exists() and not LINK.is_symlink():
        # A `.venv` from before per-Python virtualenvs: replaced by the link.
        shutil.rmtree(LINK)
    tmp = ROOT / f".venv.tmp-{os.getpid()}"
    tmp.symlink_to(VENV.name)
    tmp.replace(LINK)


def pay(argv: list[str]) -> int:
    import argparse

    sys.path.insert(0, str(ROOT))
    from config.payment_provider import WEBHOOK_PATH, payment_body, signed_headers

    parser = argparse.ArgumentParser(prog="dev.py pay", description="Send a signed demo payment.")
    parser.add_argument("--student", type=int, required=True)
    parser.add_argument("--course", type=int, required=True)
    parser.add_argument("--amount", default="240.00")
    parser.add_argument("--currency", default="EUR")
    parser.add_argument("--payment-id", default=None)
    parser.add_argument("--url", default=f"http://127.0.0.1:{os.environ.get('PORT', '8000')}")
    args = parser.parse_args(argv)
    payment_id = args.payment_id or f"pay_demo_{uuid.uuid4().hex[:12]}"
    body = payment_body(
        payment_id=payment_id,
        student_id=args.student,
        course_id=args.course,
        event_id=f"evt_{uuid.uuid4().hex[:12]}",
        amount=args.amount,
        currency=args.currency,
    )
    secret = os.environ.get("PAYMENT_WEBHOOK_SECRET", "whsec_dev_only").split(",")[0]
    request = urllib.request.Request(
        f"{args.url}{WEBHOOK_PATH}", data=body, headers=signed_headers(body, secret=secret)
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            print(response.status, response.read().decode())
            return 0
    except urllib.error.HTTPError as exc:
        print(exc.code, exc.read().decode())
        return 1
    except OSError as exc:
        print(f"no answer from {args.url} ({exc}); is `python3 dev.py run` running on that port (PORT)?")
        return 1


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in {"run", "test", "bench", "pay", "manage"}:
        print(__doc__)
        return 2
    command, rest = sys.argv[1], sys.argv[2:]
    if command == "pay":
        return pay(rest)
    ensure_supported_python()
    ensure_venv(DEV_LOCK if command in {"test", "bench"} else LOCK)
    os.chdir(ROOT)
    # Hold Ctrl-C / SIGTERM across the exec: config.stack unblocks them once it can clean up.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
    os.execv(str(venv_python()), [str(venv_python()), "-m", "config.stack", command, *rest])
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
