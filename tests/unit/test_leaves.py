"""LeaveLog: a snapshot read before a `left` must not show that NPC online again."""

from __future__ import annotations

from gateway.core.leaves import LeaveLog


def test_a_leave_after_the_mark_counts_one_before_does_not() -> None:
    log = LeaveLog()
    log.left("early")
    mark = log.serial
    log.left("late")
    assert log.left_since("late", mark)
    assert not log.left_since("early", mark)
    assert not log.left_since("never", mark)


def test_leaving_again_moves_the_leave_forward() -> None:
    log = LeaveLog()
    log.left("bot")
    mark = log.serial
    assert not log.left_since("bot", mark)
    log.left("bot")
    assert log.left_since("bot", mark)


def test_a_forgotten_leave_is_assumed_for_marks_older_than_it() -> None:
    log = LeaveLog(keep=2)
    old_mark = log.serial
    log.left("a")
    log.left("b")
    log.left("c")  # forgets "a"
    fresh_mark = log.serial
    assert log.left_since("a", old_mark)  # it may have left after this mark: assume so
    assert log.left_since("x", old_mark)
    assert not log.left_since("x", fresh_mark)
