"""The one typed reader of the environment (environs), and its one-line refusal.

A settings module makes its reader with `reader()`, reads every variable through it (validation is
deferred, so an invalid value reads as None for now), then calls `check(reader)` once: a bad value
anywhere stops the process with one line that names each bad variable and what it holds, instead of a
traceback from deep inside the settings import. One reader per module: a checked reader is sealed.
"""

import os
import sys
from typing import NoReturn

from environs import Env, EnvValidationError


def reader() -> Env:
    return Env(eager=False, expand_vars=False)


def fail(message: str) -> NoReturn:
    """Stop the process with one line on stderr (exit status 2), never a traceback."""
    sys.stderr.write(f"configuration error: {message}\n")
    sys.stderr.flush()
    raise SystemExit(2)


def check(env: Env) -> None:
    """Refuse every variable that did not parse (all of them, in one line), or return."""
    try:
        env.seal()
    except EnvValidationError as exc:
        messages: dict[str, list[str]] = exc.error_messages  # type: ignore[assignment]
        fail(
            "; ".join(
                f"{name}={os.environ.get(name, '')!r}: {' '.join(map(str, texts))}"
                for name, texts in sorted(messages.items())
            )
        )
