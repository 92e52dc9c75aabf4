"""Mining strategy: rank ore deposits for a bot (docs/api.md `POST /api/strategy/mining`).

Pure: validation and ranking, no I/O. score = value[kind] * count / (1 + distance), distance the
straight line from the bot to the deposit; a kind missing from `values` is worth 0. The best
`top` deposits come back best first; equal scores keep the order they were sent in.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import Any

from gateway.protocol import MAX_COORD, ErrorCode, ProtocolError

DEFAULT_TOP = 10
MAX_TOP = 1000
MAX_DEPOSITS = 100_000
MAX_KINDS = 1000
MAX_KIND_LEN = 64


@dataclass(frozen=True, slots=True)
class MiningRequest:
    position: tuple[float, float, float]
    deposits: list[tuple[float, float, float, str, int]]
    values: dict[str, float]
    top: int


def _bad(message: str, ref: Any) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_MESSAGE, message, ref)


def _finite(value: Any) -> bool:
    return (type(value) is int or type(value) is float) and math.isfinite(value)


def _coord(value: Any, what: str, ref: Any) -> float:
    if not _finite(value) or abs(value) > MAX_COORD:
        raise _bad(f"{what} must be a finite number within the world", ref)
    return value  # type: ignore[no-any-return]  # int or float, echoed as sent


def parse_mining(msg: dict[str, Any], ref: Any = None, deep: bool = True) -> MiningRequest:
    """Validate a `mining_plan` message or REST body; ``ProtocolError(BAD_MESSAGE)`` if wrong.

    With ``deep=False`` the deposits are only counted, not checked one by one (and the result
    holds none): the cheap half, for the event loop.
    """
    pos = msg.get("position")
    if type(pos) is not list or len(pos) != 3:
        raise _bad("position must be [x, y, z]", ref)
    position = (
        _coord(pos[0], "position", ref),
        _coord(pos[1], "position", ref),
        _coord(pos[2], "position", ref),
    )
    values = msg.get("values")
    if type(values) is not dict or len(values) > MAX_KINDS:
        raise _bad(f"values must be a map of at most {MAX_KINDS} kinds to numbers", ref)
    for kind, value in values.items():
        if type(kind) is not str or not _finite(value):
            raise _bad("values must map kind names to finite numbers", ref)
    top = msg.get("top", DEFAULT_TOP)
    if top is None:
        top = DEFAULT_TOP
    if type(top) is not int or not 1 <= top <= MAX_TOP:
        raise _bad(f"top must be an integer 1-{MAX_TOP}", ref)
    raw = msg.get("deposits")
    if type(raw) is not list or len(raw) > MAX_DEPOSITS:
        raise _bad(f"deposits must be a list of at most {MAX_DEPOSITS}", ref)
    deposits = []
    for d in raw if deep else ():
        if type(d) is not dict:
            raise _bad("a deposit must be a map {x, y, z, kind, count}", ref)
        kind, count = d.get("kind"), d.get("count")
        if type(kind) is not str or not 0 < len(kind) <= MAX_KIND_LEN:
            raise _bad(f"deposit kind must be a string of 1-{MAX_KIND_LEN}", ref)
        if type(count) is not int or count < 0:
            raise _bad("deposit count must be a non-negative integer", ref)
        x, y, z = (_coord(d.get(k), f"deposit {k}", ref) for k in "xyz")
        deposits.append((x, y, z, kind, count))
    return MiningRequest(position, deposits, {k: float(v) for k, v in values.items()}, top)


def rank_deposits(req: MiningRequest) -> list[dict[str, Any]]:
    """The `top` deposits by score, best first, each as {x, y, z, kind, count, distance, score}."""
    px, py, pz = req.position
    values = req.values

    def scored(item: tuple[int, tuple[float, float, float, str, int]]) -> tuple[float, int]:
        i, (x, y, z, kind, count) = item
        dist = math.sqrt((x - px) ** 2 + (y - py) ** 2 + (z - pz) ** 2)
        return values.get(kind, 0.0) * count / (1.0 + dist), -i  # -i: earlier wins a tie

    best = heapq.nlargest(req.top, enumerate(req.deposits), key=scored)
    plan = []
    for item in best:
        _, (x, y, z, kind, count) = item
        score = scored(item)[0]
        dist = math.sqrt((x - px) ** 2 + (y - py) ** 2 + (z - pz) ** 2)
        plan.append(
            {"x": x, "y": y, "z": z, "kind": kind, "count": count, "distance": dist, "score": score}
        )
    return plan
