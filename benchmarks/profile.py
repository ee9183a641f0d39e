"""Summarise a py-spy raw profile: `python -m benchmarks.profile results/profiles/<process>.txt [N] [FILTER]`.

Prints the functions with the most samples on their own (self) and anywhere on the stack (total),
optionally only over stacks containing FILTER (e.g. a thread's entry function), and the self samples
by package (`django/db`, `psycopg`, `rest_framework`, `outbox`, ...): where a process's CPU goes when
no single function stands out.
"""

import re
import sys
from collections import Counter

_LOCATION = re.compile(r"\((?P<path>[^():]+):\d+\)$")


def package(frame: str) -> str:
    """The package a frame's code is in: two path levels for django (`django/db`), else one."""
    found = _LOCATION.search(frame)
    if found is None:
        return "(native or process)"
    path = found["path"]
    if path.startswith("<frozen"):
        return "(python import machinery)" if "importlib" in path else "(python stdlib)"
    parts = path.split("/")
    if parts[0] == "django" and len(parts) > 2:
        return "/".join(parts[:2])
    return parts[0] if len(parts) > 1 else f"(python stdlib) {parts[0]}"


def summarise(path: str, top: int = 25, only: str = "") -> str:
    self_counts: Counter[str] = Counter()
    total_counts: Counter[str] = Counter()
    package_counts: Counter[str] = Counter()
    samples = 0
    pending = ""  # a frame's name may contain a newline (py-spy writes it as is): join until the count
    with open(path) as f:
        for line in f:
            stack, _, count_text = (pending + line.rstrip("\n")).rpartition(" ")
            if not count_text.isdigit():
                pending += line.rstrip("\n") + " "
                continue
            pending = ""
            if not stack or (only and only not in stack):
                continue
            count = int(count_text)
            samples += count
            frames = stack.split(";")
            self_counts[frames[-1]] += count
            package_counts[package(frames[-1])] += count
            for frame in set(frames):
                total_counts[frame] += count
    out = [f"{samples} samples" + (f" in stacks containing {only!r}" if only else "")]
    for title, counts in (("self", self_counts), ("total", total_counts), ("self, by package", package_counts)):
        out.append(f"-- top {top} by {title}")
        for frame, count in counts.most_common(top):
            out.append(f"{100 * count / max(samples, 1):6.1f}%  {frame[:150]}")
    return "\n".join(out)


if __name__ == "__main__":
    print(
        summarise(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 25, sys.argv[3] if len(sys.argv) > 3 else "")
    )
