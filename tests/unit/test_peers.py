"""A silent replica's bots are treated as gone."""

from gateway.peers import PeerWatch


def test_silent_replica_bots_expire_once() -> None:
    watch = PeerWatch(silence_s=15)
    watch.heard("a", 0)
    watch.heard("b", 0)
    watch.joined("bot1", "a")
    watch.joined("bot2", "a")
    watch.joined("bot3", "b")
    watch.left("bot2")
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
