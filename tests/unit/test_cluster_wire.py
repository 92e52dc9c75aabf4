"""Wire names on a Redis Cluster: each region channel its own slot, the rest on the bus's."""

from __future__ import annotations

from redis.crc import key_slot

from gateway.bus.base import EVENTS, WORLD, command_channel
from gateway.bus.cluster import (
    NEW_REGIONS,
    REGIONS_KEY,
    TAG,
    bus_channel,
    unwrap_copy,
    wire_name,
    wrap_copy,
)
from gateway.regions import region_channel


def slot(name: str) -> int:
    return key_slot(name.encode())


def test_region_channels_are_their_own_tag_and_spread_over_slots() -> None:
    regions = [region_channel("overworld", rx * 512.0, 0.0) for rx in range(32)]
    assert wire_name(regions[0]) == "{aicraft:pos:overworld:0:0}"
    assert len({slot(wire_name(r)) for r in regions}) == len(regions)


def test_the_other_channels_and_the_registry_share_the_bus_slot() -> None:
    names = [EVENTS, WORLD, command_channel("r1"), NEW_REGIONS]
    assert {slot(wire_name(c)) for c in names} | {slot(REGIONS_KEY)} == {slot(TAG)}


def test_wire_names_are_undone() -> None:
    for channel in (EVENTS, command_channel("r1"), region_channel("the_nether", -600.0, 9.0)):
        assert bus_channel(wire_name(channel)) == channel


def test_a_copy_carries_its_region() -> None:
    region = region_channel("overworld", 0.0, 0.0)
    assert unwrap_copy(wrap_copy(region, b"\x00payload")) == (region, b"\x00payload")
