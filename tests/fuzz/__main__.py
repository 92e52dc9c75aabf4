"""`make fuzz`: python -m tests.fuzz [--frames N] [--seed S]; exits 1 on any crash."""

from __future__ import annotations

import argparse
import sys

from tests.fuzz.runner import run


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__)
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"fuzzing /ws/npc and /ws/viewer (JSON and msgpack) with {args.frames} frames")
    report = run(args.frames, args.seed, verbose=True)
    for line in report.lines():
        print(line)
    return 1 if report.crashes else 0


if __name__ == "__main__":
    sys.exit(main())
