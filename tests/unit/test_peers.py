"""A silent replica's bots are treated as gone."""

from gateway.core.peers import PeerWatch


def test_silent_replica_bots_expire_once() -> None:
    watch = PeerWatch(silence_s=15)
    watch.heard("a", 0)
    watch.heard("b", 0)
    watch.joined("bot1", "a")
    watch.joined("bot2", "a")
    watch.joined("bot3", "b")
    assert watch.left("bot2", "a")
    assert not watch.left("bot2", "a")  # told once
    watch.heard("b", 10)
    assert watch.expire(14) == []
    assert watch.expire(15) == ["bot1"]  # a is silent; b was heard at 10
    assert watch.expire(30) == ["bot3"]
    assert watch.expire(60) == []


def test_a_bot_that_moved_belongs_to_its_new_replica() -> None:
    watch = PeerWatch(silence_s=15)
    watch.heard("a", 0)
    watch.heard("b", 20)
    watch.joined("bot", "a")
    watch.joined("bot", "b")
    assert watch.expire(20) == []


def test_heard_asks_for_the_list_when_new_or_after_a_gap() -> None:
    watch = PeerWatch(silence_s=15.0, gap_s=7.5)
    assert watch.heard("b", 0.0) is True  # first time
    assert watch.heard("b", 5.0) is False  # heartbeats keep coming
    assert watch.heard("b", 13.0) is True  # an 8 s gap: messages were lost


def test_replace_turns_a_full_list_into_joined_and_left() -> None:
    watch = PeerWatch(silence_s=15.0)
    watch.joined("x", "b")
    watch.joined("y", "b")
    watch.joined("z", "c")
    joined, gone = watch.replace("b", ["y", "w"])
    assert (joined, gone) == (["w"], ["x"])
    assert watch.replace("b", ["y", "w"]) == ([], [])  # idempotent
    assert watch.expire(100.0) == []  # nobody was heard: nothing to expire


def test_joined_and_left_say_whether_anything_changed() -> None:
    watch = PeerWatch(silence_s=15.0)
    assert watch.joined("x", "b")
    assert not watch.joined("x", "b")  # already known (a full list said so)
    assert not watch.left("x", "c")  # c does not hold it
    assert watch.left("x", "b")
