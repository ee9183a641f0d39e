"""The one process supervisor (config/processes.py): children always stop, their own children too."""

import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from config.processes import Child, ProcessFailed, Supervisor, free_port, port_free, port_open, wait_for

# Ignores SIGTERM, starts a grandchild that sleeps, and says so.
STUBBORN = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
print("ready", grandchild.pid, flush=True)
time.sleep(60)
"""


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with open(f"/proc/{pid}/stat") as f:  # a zombie waiting for its (dead) parent's reaper is gone too
        return f.read().rpartition(")")[2].split()[0] == "Z"


def test_a_child_that_ignores_sigterm_is_killed_with_what_it_started(tmp_path: Path) -> None:
    reports: list[str] = []
    supervisor = Supervisor(log_dir=tmp_path, report=reports.append, grace=0.5)
    child = supervisor.start("stubborn", [sys.executable, "-c", STUBBORN], os.environ, ready_marker="ready")
    wait_for(child.is_ready, timeout=20, what="the child to start", children=[child])
    grandchild = int(child.output().split()[1])
    supervisor.stop_all()
    assert not child.alive() and supervisor.children == []
    assert len(reports) == 1 and reports[0].startswith("stubborn did not stop within")
    wait_for(lambda: _gone(grandchild), timeout=10, what="the grandchild to be killed")


def test_stop_all_gives_all_children_one_shared_grace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not one grace each: with three stubborn children and a 1 s grace, the first waits it out and the
    others are killed at once (`dev.py run`'s Ctrl-C takes one grace, not one per process)."""
    graces: list[float] = []
    child_stop = Child.stop

    def recording_stop(self: Child, grace: float = 10.0, **kwargs: Any) -> None:
        graces.append(grace)
        child_stop(self, grace, **kwargs)

    monkeypatch.setattr(Child, "stop", recording_stop)
    supervisor = Supervisor(log_dir=tmp_path, report=lambda _: None, grace=1.0)
    children = [
        supervisor.start(f"stubborn{i}", [sys.executable, "-c", STUBBORN], os.environ, ready_marker="ready")
        for i in range(3)
    ]
    for child in children:
        wait_for(child.is_ready, timeout=20, what="the children to start", children=children)
    supervisor.stop_all()
    assert not any(child.alive() for child in children)
    assert len(graces) == 3 and graces[0] <= 1.0
    assert graces[1] < 0.5 and graces[2] < 0.5  # the first child's wait used the shared grace up


def test_echoed_output_and_the_ready_marker(tmp_path: Path) -> None:
    lines: list[str] = []
    supervisor = Supervisor(echo=lines.append)
    with supervisor.scope():
        child = supervisor.start(
            "hello", [sys.executable, "-c", "print('all ready')"], os.environ, ready_marker="ready"
        )
        wait_for(lambda: not child.alive(), timeout=20, what="the child to exit")
    assert child.is_ready() and supervisor.children == []
    assert lines == ["hello | all ready"]


def test_wait_for_fails_fast_when_a_watched_child_exits(tmp_path: Path) -> None:
    supervisor = Supervisor(log_dir=tmp_path)
    with supervisor.scope():
        child = supervisor.start("dies", [sys.executable, "-c", "print('bye')"], os.environ)
        started = time.monotonic()
        with pytest.raises(ProcessFailed, match="dies exited while waiting for never:\nbye"):
            wait_for(lambda: False, timeout=30, what="never", children=[child])
        assert time.monotonic() - started < 20
    with pytest.raises(AssertionError, match="timed out after 0s waiting for nothing"):
        wait_for(lambda: False, timeout=0.1, what="nothing", error=AssertionError)


def test_ports() -> None:
    port = free_port()
    assert port_free(port) and not port_open(port)
