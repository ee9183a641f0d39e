"""The interfaces live in their own packages (docs/architecture.md): `api/` (HTTP), `backoffice/` (admin,
operator commands, traces), `student_page/`. A newcomer finds who calls a service by folder name, so
no domain app (nor the outbox, beyond its relay) defines a view, a model admin or a command."""

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib import admin
from django.core.management import CommandError, get_commands

from api.errors import ApiError, api_exception_handler
from api.payment_signature import InvalidSignature
from backoffice.management.commands._errors import command_errors
from kernel.errors import ApplicationError

ROOT = Path(__file__).resolve().parent.parent
BELOW_THE_INTERFACES = ["kernel", "outbox", "purchases", "allocation", "sessions_app"]
# Base classes that make a module an interface: an HTTP view, a model admin, a management command.
INTERFACE_BASES = {
    "APIView",
    "GenericAPIView",
    "View",
    "ViewSet",
    "ModelAdmin",
    "UserAdmin",
    "ReadOnlyModelAdmin",
    "BaseCommand",
}
# The public contract's commands and the app that owns each: the relay is the outbox's own process.
COMMANDS = {
    "run_relay": "outbox",
    "fix_purchase": "backoffice",
    "refund_purchase": "backoffice",
    "resync_student": "backoffice",
    "revoke_token": "backoffice",
    "seed_demo": "backoffice",
    "trace": "backoffice",
    "outbox": "backoffice",
    "reschedule_session": "backoffice",
    "resolve_overlaps": "backoffice",
}
ALLOWED_COMMAND_FILES = {"outbox/management/commands/run_relay.py"}


def interface_classes(path: Path) -> list[str]:
    """`Class(Base)` for every class in `path` deriving from an interface base, by the base's name."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ClassDef):
            for base in node.bases:
                name = base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", "")
                if name in INTERFACE_BASES:
                    found.append(f"{node.name}({name})")
    return found


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_contract_command_exists_in_its_interface(command: str) -> None:
    assert get_commands().get(command) == COMMANDS[command]


@pytest.mark.parametrize("package", BELOW_THE_INTERFACES)
def test_nothing_below_the_interfaces_defines_a_view_an_admin_or_a_command(package: str) -> None:
    files = [p for p in (ROOT / package).rglob("*.py") if str(p.relative_to(ROOT)) not in ALLOWED_COMMAND_FILES]
    assert files
    offenders = [f"{p.relative_to(ROOT)}: {c}" for p in files for c in interface_classes(p)]
    offenders += [
        str(p.relative_to(ROOT))
        for p in files
        if p.name in {"admin.py", "api.py", "views.py", "serializers.py"} or "commands" in p.parts
        if p.name != "__init__.py"
    ]
    assert offenders == []


def test_every_model_admin_is_in_the_back_office() -> None:
    modules = {type(model_admin).__module__ for model_admin in admin.site._registry.values()}
    project = {"config", "api", "student_page", "realtime", *BELOW_THE_INTERFACES}
    outside = {m for m in modules if m.split(".")[0] in project}
    assert outside == set()
    assert "backoffice.admin.purchases" in modules


def test_the_scan_catches_an_offender(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from django.contrib import admin\nclass A(admin.ModelAdmin): pass\nclass V(APIView): pass\n")
    assert interface_classes(bad) == ["A(ModelAdmin)", "V(APIView)"]


class _Refused(ApplicationError):
    code = "some_refusal"
    status = 409


def test_every_interface_maps_any_application_error_the_same_way() -> None:
    assert issubclass(ApiError, ApplicationError) and issubclass(InvalidSignature, ApplicationError)
    response = api_exception_handler(_Refused("not now", purchase_id=7), {})
    assert response is not None and response.status_code == 409
    assert response.data == {"error": {"code": "some_refusal", "message": "not now", "details": {"purchase_id": 7}}}
    signature = api_exception_handler(InvalidSignature("no signature matches"), {})
    assert signature is not None and signature.status_code == 400
    assert signature.data["error"] == {"code": "invalid_signature", "message": "no signature matches", "details": {}}
    too_large = api_exception_handler(ApiError(code="body_too_large", message="too big", status_code=413), {})
    assert too_large is not None and (too_large.status_code, too_large.data["error"]["code"]) == (413, "body_too_large")
    with pytest.raises(CommandError, match=r"^some refusal: not now$"), command_errors():
        raise _Refused("not now")


def test_the_payment_signature_needs_only_the_standard_library() -> None:
    """`dev.py pay` signs a demo payment with it before any virtualenv exists."""
    code = (
        f"import json, sys; sys.path.insert(0, {str(ROOT)!r}); from api.payment_signature import sign; "
        "sign(body=b'{}', secret='s', timestamp=1); print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    done = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, check=True)
    imported = set(json.loads(done.stdout))
    assert imported - set(sys.stdlib_module_names) - {"__main__"} == {"api", "kernel"}


def test_every_application_error_is_a_refusal_with_a_4xx_status() -> None:
    """A 5xx is a bug, never a refusal: such an error must not derive from ApplicationError, or the API,
    the admin and the commands would show it as an operator's message (docs/architecture.md, Errors)."""
    for package in ("kernel", "outbox", "purchases", "allocation", "sessions_app", "flows", "api", "backoffice"):
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if "migrations" not in parts:
                importlib.import_module(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    seen, todo = [], [ApplicationError]
    while todo:
        cls = todo.pop()
        seen.append(cls)
        todo.extend(cls.__subclasses__())
    assert len(seen) > 10  # the walk found the errors
    assert [c.__name__ for c in seen if not 400 <= c.status < 500] == []
