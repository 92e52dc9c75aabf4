"""The short fuzz run of every `make test`: a few thousand frames, no crash (issue #10)."""

from __future__ import annotations

import os

from tests.fuzz.runner import run

FRAMES = int(os.environ.get("FUZZ_FRAMES", "2500"))


def test_fuzzed_frames_never_crash_the_replica() -> None:
    report = run(FRAMES, base_seed=int(os.environ.get("FUZZ_SEED", "1")))
    print("\n".join(report.lines()))
    assert report.frames >= FRAMES
    assert report.checks > 0
    assert report.crashes == [], "\n".join(report.lines())
    assert sum(report.errors.values()) > 0  # the frames were bad enough to be refused
