"""The browser the browser tests drive, provided by `dev.py test` as it provides PostgreSQL and Redis.

In this order: `CHROMIUM_PATH` when set (it must exist); the system's Chromium; as root with apt-get,
Debian's `chromium` package; else Playwright's own installer. When none works the test run stops at
once with one line saying what to install: the browser tests are never skipped silently.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

SYSTEM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
WHAT_TO_INSTALL = (
    "install Chromium (Debian/Ubuntu: `apt-get install chromium`; or `python -m playwright install chromium`) "
    "or set CHROMIUM_PATH to a Chromium/Chrome binary"
)


class NoBrowser(Exception):
    """No Chromium could be found or installed; the message says what to install."""


def system_chromium() -> str | None:
    for name in SYSTEM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


def _apt_install() -> str | None:
    apt = shutil.which("apt-get")
    if os.geteuid() != 0 or not apt:
        return None
    print("no Chromium on this machine: installing Debian's chromium package (apt-get, as root) ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([apt, "update", "-qq"], check=False, stdout=subprocess.DEVNULL, env=env)
    subprocess.run([apt, "install", "-y", "-qq", "chromium"], check=False, stdout=subprocess.DEVNULL, env=env)
    return system_chromium()


def _playwright_install() -> str | None:
    print("no Chromium on this machine: trying Playwright's installer ...", flush=True)
    done = subprocess.run([sys.executable, "-m", "playwright", "install", "chromium"], check=False)
    if done.returncode != 0:
        return None
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        path = pw.chromium.executable_path
    return path if Path(path).exists() else None


def provide() -> str:
    """The path of a Chromium binary, installing one if needed; raises NoBrowser with what to do."""
    configured = os.environ.get("CHROMIUM_PATH")
    if configured:
        if Path(configured).is_file() and os.access(configured, os.X_OK):
            return configured
        raise NoBrowser(f"CHROMIUM_PATH={configured} is not an executable file: {WHAT_TO_INSTALL}")
    found = system_chromium() or _apt_install() or _playwright_install()
    if not found:
        raise NoBrowser(f"no Chromium for the browser tests: {WHAT_TO_INSTALL}")
    return found
