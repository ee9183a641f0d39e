"""Summarise a py-spy raw profile: `python -m benchmarks.profile results/profiles/<process>.txt [N] [FILTER]`.

Prints the functions with the most samples on their own (self) and anywhere on the stack (total),
optionally only over stacks containing FILTER (e.g. a thread's entry function).
"""

import sys
from collections import Counter


def summarise(path: str, top: int = 25, only: str = "") -> str:
    self_counts: Counter[str] = Counter()
    total_counts: Counter[str] = Counter()
    samples = 0
    with open(path) as f:
        for line in f:
            stack, _, count_text = line.rstrip("\n").rpartition(" ")
            if not stack or (only and only not in stack):
                continue
            count = int(count_text)
            samples += count
            frames = stack.split(";")
            self_counts[frames[-1]] += count
            for frame in set(frames):
                total_counts[frame] += count
    out = [f"{samples} samples" + (f" in stacks containing {only!r}" if only else "")]
    for title, counts in (("self", self_counts), ("total", total_counts)):
        out.append(f"-- top {top} by {title}")
        for frame, count in counts.most_common(top):
            out.append(f"{100 * count / max(samples, 1):6.1f}%  {frame[:150]}")
    return "\n".join(out)


if __name__ == "__main__":
    print(
        summarise(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 25, sys.argv[3] if len(sys.argv) > 3 else "")
    )
