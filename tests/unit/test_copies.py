"""Copies: a window heard both on its region channel and as a copy is delivered once."""

from __future__ import annotations

from gateway.bus.copies import Copies

R1, R2 = "aicraft:pos:overworld:0:0", "aicraft:pos:overworld:1:0"


def test_the_copy_after_its_original_is_dropped_and_the_reverse() -> None:
    copies = Copies()
    assert copies.first(R1, b"w1", copy=False, now=0.0)
    assert not copies.first(R1, b"w1", copy=True, now=0.1)
    assert copies.first(R1, b"w2", copy=True, now=0.2)
    assert not copies.first(R1, b"w2", copy=False, now=0.3)
    assert len(copies) == 0  # a matched pair is forgotten


def test_a_pair_is_matched_once() -> None:
    copies = Copies()
    assert copies.first(R1, b"w", copy=False, now=0.0)
    assert not copies.first(R1, b"w", copy=True, now=0.0)
    assert copies.first(R1, b"w", copy=True, now=0.0)  # a third: not the twin of anything


def test_two_originals_alike_are_both_delivered() -> None:
    """Two cuts of one millisecond with the same rows are two windows, not a copy."""
    copies = Copies()
    assert copies.first(R1, b"w", copy=False, now=0.0)
    assert copies.first(R1, b"w", copy=False, now=0.0)
    assert copies.first(R1, b"w", copy=True, now=0.0) is False  # still one copy's twin


def test_the_same_payload_in_another_region_is_another_window() -> None:
    copies = Copies()
    assert copies.first(R1, b"w", copy=False, now=0.0)
    assert copies.first(R2, b"w", copy=True, now=0.0)


def test_windows_are_forgotten_after_keep_s() -> None:
    copies = Copies(keep_s=5.0)
    assert copies.first(R1, b"w", copy=False, now=0.0)
    assert copies.first(R1, b"w", copy=True, now=5.5)  # too late to be its twin: heard
    assert len(copies) == 1


def test_the_number_remembered_is_bounded() -> None:
    copies = Copies(keep=3)
    for i in range(5):
        copies.first(R1, b"w%d" % i, copy=False, now=0.0)
    assert len(copies) == 3
    assert copies.first(R1, b"w0", copy=True, now=0.0)  # forgotten: heard again
    assert not copies.first(R1, b"w4", copy=True, now=0.0)
