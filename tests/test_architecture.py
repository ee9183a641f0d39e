"""Invariant 2, the part import-linter can't express: domain apps never import Django's cache.

(import-linter contracts in pyproject.toml cover the channel layer, Redis, Celery and the relay.)
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOMAIN_APPS = ["purchases", "allocation", "sessions_app"]
FORBIDDEN = ("django.core.cache", "channels", "channels_redis", "redis", "celery", "config.celery", "outbox.celery_app")


def imported_modules(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names += [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
    return names


@pytest.mark.parametrize("app", DOMAIN_APPS)
def test_domain_apps_do_not_import_side_effect_libraries(app: str) -> None:
    files = list((ROOT / app).rglob("*.py"))
    assert files
    offenders = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in files
        for name in imported_modules(path)
        if any(name == f or name.startswith(f + ".") for f in FORBIDDEN)
    ]
    assert offenders == []


def test_the_checker_catches_an_offender(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from django.core.cache import cache\n")
    assert "django.core.cache" in imported_modules(bad)
