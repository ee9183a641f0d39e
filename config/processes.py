"""The one process supervisor: `dev.py run` (config/stack.py), the process tests, the chaos suite and
the benchmarks start, watch and stop their child processes through it.

Standard library only. A child runs in its own session (process group) unless told otherwise, so a
Ctrl-C at the terminal reaches only the supervisor, which then stops the children in order, and
stopping a child also takes down what it started (a Celery worker's pool processes). Its output goes
to a log file, or, with `echo`, line by line to a callback (the terminal of `dev.py run`).
"""

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent


class ProcessFailed(RuntimeError):
    """A child exited while it was waited for, or a wait timed out."""


class Child:
    """One supervised process: its output in `log_path` (or echoed), and a ready flag set when a line
    of its output contains `ready_marker`."""

    def __init__(
        self,
        name: str,
        args: list[str],
        *,
        env: Mapping[str, str],
        cwd: Path = ROOT,
        log_path: Path | None = None,
        echo: Callable[[str], None] | None = None,
        ready_marker: str | None = None,
        own_session: bool = True,
    ) -> None:
        self.name = name
        self.log_path = log_path
        self.own_session = own_session
        self._terminated = False
        self.ready = threading.Event()
        self._marker = ready_marker
        self._pump: threading.Thread | None = None
        if echo is not None:
            out: Any = subprocess.PIPE
        elif log_path is not None:
            out = open(log_path, "wb")  # noqa: SIM115 (the child holds it; closed below once handed over)
        else:
            out = subprocess.DEVNULL
        try:
            self.popen: subprocess.Popen[bytes] = subprocess.Popen(
                args,
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=own_session,
            )
        finally:
            if echo is None and log_path is not None:
                out.close()
        if echo is not None:
            self._pump = threading.Thread(target=self._echo, args=(self.popen.stdout, echo), daemon=True)
            self._pump.start()

    def _echo(self, stream: IO[bytes] | None, echo: Callable[[str], None]) -> None:
        assert stream is not None
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace").rstrip()
            if self._marker and self._marker in line:
                self.ready.set()
            echo(f"{self.name:<6}| {line}")

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        """The child's output so far (its log file; empty when it is echoed instead)."""
        if self.log_path is None:
            return ""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def is_ready(self) -> bool:
        """Whether the ready marker was seen (in the echoed output, or in the log file)."""
        if not self.ready.is_set() and self._marker and self._marker in self.output():
            self.ready.set()
        return self.ready.is_set()

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.popen.send_signal(signum)
        if signum == signal.SIGTERM:
            self._terminated = True

    def stop(self, grace: float = 10.0, *, on_kill: Callable[[str], None] | None = None) -> None:
        """SIGTERM, wait up to `grace` s, then SIGKILL (its whole process group when it leads one)."""
        if self.alive():
            if not self._terminated:  # once: a second SIGTERM may cut a graceful shutdown short
                self.signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                if on_kill is not None:
                    on_kill(f"{self.name} did not stop within {grace:.0f} s; killing it")
        self.kill()
        if self._pump is not None:
            self._pump.join(1.0)

    def kill(self) -> None:
        """SIGKILL the child and, if it leads its own process group, whatever it left behind."""
        if self.own_session:  # the group outlives its leader: pool children may still be in it
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
        if self.alive():
            self.popen.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=5)


class Supervisor:
    """Starts children and always stops them: `stop_all()` (or the end of a `scope()` block) sends
    SIGTERM to every running child at once, waits up to the grace period, then kills the rest."""

    def __init__(
        self,
        *,
        log_dir: Path | None = None,
        cwd: Path = ROOT,
        echo: Callable[[str], None] | None = None,
        report: Callable[[str], None] | None = None,
        own_session: bool = True,
        grace: float = 10.0,
    ) -> None:
        """`echo` takes the children's output lines instead of log files in `log_dir`; `report` is
        told when a child had to be killed."""
        self.log_dir = log_dir
        self.cwd = cwd
        self.echo = echo
        self.report = report
        self.own_session = own_session
        self.grace = grace
        self.children: list[Child] = []
        if log_dir is not None:
            log_dir.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, args: list[str], env: Mapping[str, str], *, ready_marker: str | None = None) -> Child:
        log_path = self.log_dir / f"{name}.log" if self.log_dir is not None and self.echo is None else None
        child = Child(
            name,
            args,
            env=env,
            cwd=self.cwd,
            log_path=log_path,
            echo=self.echo,
            ready_marker=ready_marker,
            own_session=self.own_session,
        )
        self.children.append(child)
        return child

    def stop(self, child: Child, grace: float | None = None) -> None:
        child.stop(self.grace if grace is None else grace, on_kill=self.report)
        if child in self.children:
            self.children.remove(child)

    def stop_all(self, grace: float | None = None) -> None:
        self._stop_together(list(self.children), grace)

    @contextlib.contextmanager
    def scope(self) -> Iterator["Supervisor"]:
        """Stop every child started inside the block when it ends, however it ends (as `stop_all`)."""
        before = set(map(id, self.children))
        try:
            yield self
        finally:
            self._stop_together([c for c in self.children if id(c) not in before])

    def _stop_together(self, children: list[Child], grace: float | None = None) -> None:
        """SIGTERM to all at once, so they stop in parallel, then one shared `grace` for all of them (not
        one each): whatever is still running when it has passed is killed."""
        for child in children:
            if child.alive():
                child.signal(signal.SIGTERM)
        deadline = time.monotonic() + (self.grace if grace is None else grace)
        for child in children:
            self.stop(child, max(0.0, deadline - time.monotonic()))


def wait_for(
    predicate: Callable[[], Any],
    *,
    timeout: float,
    what: str,
    children: list[Child] | None = None,
    every: float = 0.05,
    error: type[Exception] = ProcessFailed,
) -> Any:
    """Poll until `predicate()` is truthy and return its value; raise `error` after `timeout` s, or as
    soon as one of the watched `children` exits."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        for child in children or []:
            if not child.alive():
                raise error(f"{child.name} exited while waiting for {what}:\n{child.tail()}")
        if time.monotonic() > deadline:
            raise error(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the OS's pick)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:`port`."""
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def port_free(port: int) -> bool:
    """Whether a server could bind 127.0.0.1:`port` (SO_REUSEADDR, as uvicorn binds)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
