"""One-line JSON logs with the replica and any `extra=` fields."""

from __future__ import annotations

import logging

import orjson

from gateway.logs import JsonFormatter


def test_a_record_is_one_json_line_with_extras() -> None:
    record = logging.makeLogRecord(
        {
            "name": "gateway.core.node",
            "levelname": "WARNING",
            "msg": "slow %s",
            "args": ("viewer",),
            "npc": "miner_1",
            "duration": 0.25,
        }
    )
    line = JsonFormatter("r1").format(record)
    assert "\n" not in line
    entry = orjson.loads(line)
    assert entry["msg"] == "slow viewer" and entry["level"] == "warning"
    assert (entry["replica"], entry["npc"], entry["duration"]) == ("r1", "miner_1", 0.25)
