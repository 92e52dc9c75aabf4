"""Which region channel a position goes to and which ones a replica's viewers need (scaling.md)."""

from __future__ import annotations

from gateway.regions import (
    ALL,
    MAX_REGIONS_PER_REPLICA,
    REGION_BLOCKS,
    channels_for,
    region_channel,
    wanted_channels,
)


def test_a_region_is_512_blocks_square_and_negative_coordinates_round_down() -> None:
    assert region_channel("overworld", 0, 0) == region_channel("overworld", 511.9, 511.9)
    assert region_channel("overworld", 512, 0) != region_channel("overworld", 511, 0)
    assert region_channel("overworld", -0.5, -1) == "aicraft:pos:overworld:-1:-1"
    assert region_channel("the_nether", 0, 0) != region_channel("overworld", 0, 0)


def test_an_area_touches_every_region_it_overlaps() -> None:
    assert channels_for("overworld", (0, 0, 511, 511)) == {"aicraft:pos:overworld:0:0"}
    assert channels_for("overworld", (500, -10, 520, 10)) == {
        "aicraft:pos:overworld:0:-1",
        "aicraft:pos:overworld:1:-1",
        "aicraft:pos:overworld:0:0",
        "aicraft:pos:overworld:1:0",
    }


def test_no_viewers_need_nothing_and_an_unfiltered_one_needs_everything() -> None:
    assert wanted_channels([]) == set()
    assert wanted_channels([("overworld", (0, 0, 10, 10)), (None, None)]) is ALL
    assert wanted_channels([("overworld", None)]) is ALL  # a whole dimension
    assert wanted_channels([(None, (0, 0, 10, 10))]) is ALL  # an area of every dimension


def test_filters_are_merged_and_too_many_regions_mean_all() -> None:
    two = wanted_channels([("overworld", (0, 0, 10, 10)), ("overworld", (5000, 0, 5001, 1))])
    assert two == {"aicraft:pos:overworld:0:0", "aicraft:pos:overworld:9:0"}
    side = REGION_BLOCKS * MAX_REGIONS_PER_REPLICA  # one row of regions past the limit
    assert wanted_channels([("overworld", (0, 0, side, 0))]) is ALL
    edge = REGION_BLOCKS * (MAX_REGIONS_PER_REPLICA - 1)  # exactly at the limit: listed
    listed = wanted_channels([("overworld", (0, 0, edge, 0))])
    assert listed is not ALL and len(listed) == MAX_REGIONS_PER_REPLICA
