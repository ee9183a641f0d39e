"""Chromium for the browser tests (Playwright): launched from `CHROMIUM_PATH`, which `dev.py test`
provides (config/browser.py); run bare, the system's. A screenshot of every open page is kept only
when the test fails, under SCREENSHOT_DIR (default .data/artifacts), and its path printed."""

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

from playwright.sync_api import Browser, sync_playwright

from config.browser import system_chromium
from config.processes import ROOT

CHROMIUM = os.environ.get("CHROMIUM_PATH") or system_chromium() or "chromium (not found: see config/browser.py)"
# As on this machine's probe: no background networking, no sandbox as root, no GPU.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(os.environ.get("SCREENSHOT_DIR", ROOT / ".data" / "artifacts"))


@contextlib.contextmanager
def chromium(test_name: str) -> Iterator[Browser]:
    """A headless Chromium; on failure every open page is screenshotted before the browser closes."""
    # Playwright's sync API keeps an event loop running in this thread: let the test's ORM calls through.
    unsafe = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        except BaseException:
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", test_name)
            pages = [page for context in browser.contexts for page in context.pages]
            for number, page in enumerate(pages, 1):
                path = ARTIFACTS / f"{stem}-{number}.png"
                with contextlib.suppress(Exception):
                    page.screenshot(path=str(path), full_page=True)
                    print(f"screenshot of the failing page: {path}")
            raise
        finally:
            browser.close()
            if unsafe is None:
                os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
            else:
                os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = unsafe
