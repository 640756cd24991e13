"""Summarise a ``py-spy record --format raw`` file (as bench/mount.py --pyspy writes them).

    python3 bench/pyspy_top.py FILE [--top 25] [--match TEXT]

Prints, over all threads, the functions with the most samples on the CPU by themselves
(self) and anywhere on the stack (total), and the samples per thread kind.
"""

from __future__ import annotations

import argparse
import collections
import re


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--match", help="only stacks containing this text")
    args = ap.parse_args()
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    samples = 0
    with open(args.file) as fh:
        for line in fh:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack or (args.match and args.match not in stack):
                continue
            n = int(count)
            frames = stack.split(";")
            thread = re.sub(r"\d+", "N", frames[1] if len(frames) > 1 else frames[0])
            threads[thread] += n
            samples += n
            frames = [re.sub(r":\d+\)$", ")", f) for f in frames[1:]]
            if frames:
                own[frames[-1]] += n
            for f in set(frames):
                total[f] += n
    print(f"{samples} samples")
    print("by thread:")
    for t, n in threads.most_common(8):
        print(f"  {100 * n / samples:5.1f}%  {t}")
    for title, counter in (("self", own), ("total", total)):
        print(f"{title}:")
        for f, n in counter.most_common(args.top):
            print(f"  {100 * n / samples:5.1f}%  {f}")


if __name__ == "__main__":
    main()
