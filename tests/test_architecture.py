"""Invariant 2, the part import-linter can't express: domain apps never import Django's cache.

(import-linter contracts in pyproject.toml cover the channel layer, Redis, Celery and the relay.)
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOMAIN_APPS = ["purchases", "allocation", "sessions_app", "flows"]
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


def imports_in_function_bodies(path: Path) -> list[str]:
    """Each import statement inside a function of `path`, as `line: statement`."""
    return [
        f"{node.lineno}: {ast.unparse(node)}"
        for fn in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef)
        for node in ast.walk(fn)
        if isinstance(node, ast.Import | ast.ImportFrom)
    ]


@pytest.mark.parametrize("app", DOMAIN_APPS)
def test_domain_apps_import_at_module_level_only(app: str) -> None:
    """An import in a function body would hide an upward arrow from import-linter's layers: only the
    apps' `ready()` imports late (registering handlers and providers once the apps are loaded)."""
    files = [p for p in (ROOT / app).rglob("*.py") if p.name != "apps.py" and "migrations" not in p.parts]
    assert files
    offenders = [f"{path.relative_to(ROOT)}:{hit}" for path in files for hit in imports_in_function_bodies(path)]
    assert offenders == []


def test_the_body_import_checker_catches_one(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import json\n\n\ndef f() -> None:\n    from purchases import services\n")
    assert imports_in_function_bodies(bad) == ["5: from purchases import services"]
