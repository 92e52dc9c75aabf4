"""The history window (gateway/history/ring.py): what is kept and what a resuming viewer gets."""

from __future__ import annotations

import pytest

from gateway.history import Entry, HistoryRing

E = "epoch-a"


def entry(seq: int, ts_ms: int = 1_000, epoch: str = E, dim: str = "overworld") -> Entry:
    msg = {"type": "event", "npc": "n", "name": "e", "data": {}, "epoch": epoch, "seq": seq}
    return Entry(epoch, seq, ts_ms, msg, {"dim": dim, "x": 0.0, "z": 0.0})


def filled(n: int, **kw: int) -> HistoryRing:
    ring = HistoryRing(**kw)
    for seq in range(1, n + 1):
        ring.add(entry(seq))
    return ring


def seqs(entries: list[Entry] | None) -> list[int] | None:
    return None if entries is None else [e.seq for e in entries]


def test_after_gives_every_later_event_in_order() -> None:
    ring = filled(5)
    assert seqs(ring.after(E, 2, 1_000)) == [3, 4, 5]
    assert seqs(ring.after(E, 0, 1_000)) == [1, 2, 3, 4, 5]


def test_resuming_at_the_newest_seq_gives_nothing_but_succeeds() -> None:
    assert seqs(filled(5).after(E, 5, 1_000)) == []


def test_a_seq_from_the_future_or_another_epoch_cannot_be_resumed() -> None:
    ring = filled(5)
    assert ring.after(E, 6, 1_000) is None
    assert ring.after("other", 2, 1_000) is None
    assert HistoryRing().after(E, 0, 1_000) is None  # nothing seen yet: no epoch to match


def test_the_count_cap_is_exact_at_the_boundary() -> None:
    ring = filled(12, max_events=10)  # 3..12 kept
    assert len(ring) == 10 and ring.oldest_seq == 3
    assert seqs(ring.after(E, 2, 1_000)) == list(range(3, 13))  # the oldest kept follows 2
    assert ring.after(E, 1, 1_000) is None  # 2 was dropped: a gap would follow


def test_the_age_cap_is_exact_at_the_boundary() -> None:
    ring = HistoryRing(max_age_ms=1_000)
    ring.add(entry(1, ts_ms=5_000))
    ring.add(entry(2, ts_ms=5_500))
    assert seqs(ring.after(E, 0, 6_000)) == [1, 2]  # exactly max_age old: still kept
    assert ring.after(E, 0, 6_001) is None  # 1 just aged out
    assert seqs(ring.after(E, 1, 6_001)) == [2]
    assert seqs(ring.after(E, 2, 9_000)) == []  # everything aged out, but nothing was missed
    assert ring.after(E, 1, 9_000) is None


def test_a_new_epoch_starts_the_window_over() -> None:
    ring = filled(3)
    assert ring.add(entry(1, epoch="epoch-b")) is False
    assert ring.epoch == "epoch-b" and len(ring) == 1 and ring.restarts == 1
    assert ring.after(E, 3, 1_000) is None
    assert seqs(ring.after("epoch-b", 0, 1_000)) == [1]


def test_a_gap_starts_the_window_over_so_no_replay_skips_events() -> None:
    ring = filled(3)
    assert ring.add(entry(7)) is False
    assert ring.after(E, 3, 1_000) is None  # 4-6 were never seen here
    assert seqs(ring.after(E, 6, 1_000)) == [7]


def test_a_repeated_entry_is_kept_once() -> None:
    ring = filled(3)
    assert ring.add(entry(2)) is True
    assert seqs(ring.after(E, 0, 1_000)) == [1, 2, 3]


def test_a_filter_selects_replayed_events() -> None:
    ring = HistoryRing()
    for seq, dim in enumerate(["overworld", "the_nether", "overworld"], start=1):
        ring.add(entry(seq, dim=dim))
    nether = ring.after(
        E, 0, 1_000, lambda e: e.about is not None and e.about["dim"] == "the_nether"
    )
    assert seqs(nether) == [2]


def test_an_empty_window_is_refused() -> None:
    with pytest.raises(ValueError):
        HistoryRing(max_events=0)
