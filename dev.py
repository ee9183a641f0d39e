#!/usr/bin/env python3
"""Developer entry point; needs only Python 3.11.

    python3 dev.py run      the whole stack (embedded PostgreSQL + Redis unless DATABASE_URL/REDIS_URL)
    python3 dev.py test     lint, types, architecture and the test suite
    python3 dev.py bench [--quick]   the benchmarks (benchmarks/README.md)
    python3 dev.py pay --student ID --course ID     send a signed demo payment to the running stack
    python3 dev.py manage ARGS...                   a manage.py command against the same services

Creates `.venv` from the hash-pinned `requirements.lock` on first use (and when the lock changes).
"""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
LOCK = ROOT / "requirements.lock"


def venv_python() -> Path:
    return VENV / "bin" / "python"


def ensure_python_311() -> None:
    """The lock pins CPython 3.11 wheels: re-run under python3.11 if we were started by another Python."""
    if sys.version_info[:2] == (3, 11):
        return
    other = shutil.which("python3.11")
    if other:
        os.execv(other, [other, *sys.argv])
    raise SystemExit(f"dev.py needs Python 3.11 (this is {sys.version.split()[0]}); install python3.11 and retry")


def ensure_venv() -> None:
    stamp = VENV / ".lock-sha256"
    digest = hashlib.sha256(LOCK.read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest and venv_python().exists():
        return
    if not venv_python().exists():
        print("creating .venv (first run only) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    print("installing pinned dependencies from requirements.lock (about a minute, first run only) ...", flush=True)
    installed = subprocess.run(
        [
            str(venv_python()),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--require-hashes",
            "-r",
            str(LOCK),
        ],
        check=False,
    )
    if installed.returncode != 0:
        raise SystemExit("installing requirements.lock into .venv failed (see pip's output above)")
    stamp.write_text(digest)


def pay(argv: list[str]) -> int:
    import argparse

    sys.path.insert(0, str(ROOT))
    from purchases.webhook import sign

    parser = argparse.ArgumentParser(prog="dev.py pay", description="Send a signed demo payment.")
    parser.add_argument("--student", type=int, required=True)
    parser.add_argument("--course", type=int, required=True)
    parser.add_argument("--amount", default="240.00")
    parser.add_argument("--currency", default="EUR")
    parser.add_argument("--payment-id", default=None)
    parser.add_argument("--url", default=f"http://127.0.0.1:{os.environ.get('PORT', '8000')}")
    args = parser.parse_args(argv)
    payment_id = args.payment_id or f"pay_demo_{uuid.uuid4().hex[:12]}"
    now = int(time.time())
    body = json.dumps(
        {
            "id": f"evt_{uuid.uuid4().hex[:12]}",
            "type": "payment.succeeded",
            "created": now,
            "data": {
                "payment_id": payment_id,
                "student_id": args.student,
                "course_id": args.course,
                "amount": args.amount,
                "currency": args.currency,
            },
        }
    ).encode()
    secret = os.environ.get("PAYMENT_WEBHOOK_SECRET", "whsec_dev_only").split(",")[0]
    request = urllib.request.Request(
        f"{args.url}/api/v1/payments/webhook",
        data=body,
        headers={
            "Content-Type": "application/json",
            "Payment-Signature": sign(body=body, secret=secret, timestamp=now),
        },
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
    ensure_python_311()
    ensure_venv()
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
