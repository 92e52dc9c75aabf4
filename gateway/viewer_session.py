"""`/ws/viewer`: one map viewer — welcome and snapshot, subscriptions, resyncs."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any

from aiohttp import WSMsgType, web

from gateway.core.links import QueuedEvent
from gateway.core.node import Node, now_ms
from gateway.history import Entry
from gateway.keys import CLAIMS, NODE
from gateway.protocol import (
    MAX_FRAME_BYTES,
    VIEWER_TYPES,
    CloseCode,
    ErrorCode,
    ProtocolError,
    Since,
    auth_ok,
    decode,
    encode,
    in_view,
    message_type,
    parse_auth,
    parse_since,
    parse_subscribe,
    pong,
    recovered,
    snapshot,
    viewer_welcome,
)
from gateway.ratelimit import FloodGuard
from gateway.sessions import RATE_LIMITED, encoding_of, frame_type_of, websocket
from gateway.store import StoreUnavailable
from gateway.token_deadline import TokenDeadline
from gateway.viewer import ViewerConnection


async def viewer_endpoint(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE]
    if node.state != "ok":
        raise web.HTTPServiceUnavailable(text="draining")
    try:
        since = parse_since(request.query.get("since"))
    except ProtocolError as err:
        raise web.HTTPBadRequest(text=err.message) from None
    ws = websocket()
    await ws.prepare(request)
    encoding = encoding_of(ws)
    viewer = ViewerConnection(
        ws, encoding, request.transport, partial(_resync, node), node.telemetry
    )
    deadline = TokenDeadline(
        request[CLAIMS],
        lambda: node.tasks.spawn(
            viewer.close(CloseCode.TOKEN_EXPIRED, "token expired"), "close-expired"
        ),
    )
    deadline.arm()
    mark = node.leaves.serial
    npcs = await _load_npcs(node)
    # From here to start() nothing awaits: the snapshot is exactly the state before the first
    # frame the viewer is offered, and welcome and snapshot are its first two messages.
    node.hub.add_viewer(viewer)
    ring = node.history_ring
    viewer.live_from = viewer.event_seq = viewer.sent_seq = ring.last_seq
    viewer.sent_epoch = ring.epoch
    viewer.offer_message(encode(viewer_welcome(node.replica, node.settings.tick_ms), encoding))
    first = _snapshot(node, npcs, viewer, mark)
    viewer.offer_message(first)
    if since is not None:
        _recover(node, viewer, since, first)
    viewer.start()
    try:
        await _viewer_receive_loop(node, viewer, deadline)
    finally:
        deadline.cancel()
        node.hub.remove_viewer(viewer)
        await viewer.close(CloseCode.GOING_AWAY, "bye")
    await ws.linger(request)
    return ws


async def _load_npcs(node: Node) -> list[dict[str, Any]]:
    try:
        return await node.registry.everyone()
    except StoreUnavailable:
        # Degraded: what this replica has seen move, until the registry is back; online as the
        # replica knows it (an NPC that moved once may have left since).
        known = node.known_online()
        return [dict(u, online=u["id"] in known) for u in node.live.values()]


def _snapshot(node: Node, npcs: list[dict[str, Any]], viewer: ViewerConnection, mark: int) -> bytes:
    """The encoded snapshot for the viewer's subscription, freshened with what the node has
    seen since the registry was read at leave `mark` (call without awaiting between this and
    offering it). `online` is the node's view now, which later `joined` / `left` change: the
    bots it knows, or presence's word unless the NPC left after it was read."""
    known = node.known_online()
    fresh = []
    for npc in npcs:
        npc = node.registry.freshen(npc)
        npc_id = npc["id"]
        online = npc_id in known or (
            bool(npc.get("online")) and not node.leaves.left_since(npc_id, mark)
        )
        fresh.append(npc if npc.get("online") == online else {**npc, "online": online})
    if viewer.dim is not None or viewer.area is not None:
        fresh = [n for n in fresh if in_view(n, viewer.dim, viewer.area)]
    return encode(snapshot(fresh), viewer.encoding)


def _recover(
    node: Node,
    viewer: ViewerConnection,
    since: Since,
    fresh: bytes,
    already: Callable[[Entry], bool] | None = None,
) -> None:
    """Offer `recovered` and the events after `since` that the viewer's filter covers (less
    those `already` offered), or `recovered` not ok and the `fresh` snapshot. Never awaits: the
    replay ends exactly where live events start, so nothing is missed or repeated."""
    epoch, seq = since
    ring = node.history_ring

    def wanted(entry: Entry) -> bool:
        return viewer.wants(entry) and (already is None or not already(entry))

    entries = ring.after(epoch, seq, now_ms(), wanted)
    if entries is None:
        node.recoveries["failed"] += 1
        viewer.offer_message(encode(recovered(None), viewer.encoding))
        viewer.offer_message(fresh)
        return
    node.recoveries["ok"] += 1
    viewer.offer_message(encode(recovered(len(entries)), viewer.encoding))
    viewer.offer_replay(_encoded(entries, viewer))
    viewer.event_seq = max(viewer.event_seq, ring.last_seq)


def _encoded(entries: list[Entry], viewer: ViewerConnection) -> list[QueuedEvent]:
    return [QueuedEvent(e.epoch, e.seq, encode(e.message, viewer.encoding)) for e in entries]


async def _resync(node: Node, viewer: ViewerConnection) -> None:
    """The viewer fell so far behind that queued messages were dropped: start it afresh, and
    send again the events it was not sent, from the history (§11)."""
    mark = node.leaves.serial
    npcs = await _load_npcs(node)
    # From here nothing awaits: the replay below ends where live events start again.
    viewer.drop_queued_events()  # queued while we awaited: the replay has them, in order
    viewer.reset_positions()
    viewer.offer_message(_snapshot(node, npcs, viewer, mark))
    ring = node.history_ring
    if ring.epoch is not None and (viewer.sent_epoch or ring.epoch) == ring.epoch:
        entries = ring.after(ring.epoch, viewer.sent_seq, now_ms(), viewer.wants)
        if entries:
            viewer.offer_replay(_encoded(entries, viewer))
    viewer.event_seq = max(viewer.event_seq, ring.last_seq)


def _offered_live(viewer: ViewerConnection) -> Callable[[Entry], bool]:
    """Which events this connection was already offered live under its current filter."""
    dim, area, start, last = viewer.dim, viewer.area, viewer.live_from, viewer.event_seq

    def offered(entry: Entry) -> bool:
        if not start < entry.seq <= last:
            return False
        return (dim is None and area is None) or (
            entry.about is not None and in_view(entry.about, dim, area)
        )

    return offered


async def _viewer_receive_loop(
    node: Node, viewer: ViewerConnection, deadline: TokenDeadline
) -> None:
    ws, encoding = viewer.ws, viewer.encoding
    settings = node.settings
    flood = FloodGuard(settings.viewer_rate_per_s, settings.viewer_rate_burst, time.monotonic())
    async for frame in ws:
        if frame.type is WSMsgType.ERROR:
            break
        if frame.type is not WSMsgType.TEXT and frame.type is not WSMsgType.BINARY:
            continue
        if len(frame.data) > MAX_FRAME_BYTES:  # aiohttp enforces it too; the contract is ours
            await viewer.close(CloseCode.TOO_BIG, "frame over 64 KiB")
            break
        verdict = flood.check(time.monotonic())
        if verdict == "close":
            await viewer.close(CloseCode.POLICY, "persistent flooding")
            break
        if verdict != "ok":
            if verdict == "reject":
                viewer.offer_message(encode(RATE_LIMITED, encoding))
            continue
        try:
            if frame.type is not frame_type_of(encoding):
                raise ProtocolError(ErrorCode.BAD_ENCODING, f"frames must be {encoding.value}")
            msg = decode(frame.data, encoding)
            kind, ref = message_type(msg, VIEWER_TYPES)
            if kind == "ping":
                viewer.offer_message(encode(pong(ref), encoding))
            elif kind == "auth":
                exp = deadline.refresh(node.settings.secret, parse_auth(msg, ref), ref)
                viewer.offer_message(encode(auth_ok(exp, ref), encoding))
            elif kind == "subscribe":
                dim, area = parse_subscribe(msg, ref)
                since = parse_since(msg.get("since"), ref)
                mark = node.leaves.serial
                npcs = await _load_npcs(node)
                already = _offered_live(viewer)
                viewer.dim, viewer.area = dim, area
                node.hub.views_changed()  # the replica hears the regions it now watches
                viewer.reset_positions()  # older frames were cut for the old subscription
                fresh = _snapshot(node, npcs, viewer, mark)
                viewer.offer_message(fresh)
                if since is not None:
                    _recover(node, viewer, since, fresh, already)
        except ProtocolError as err:
            viewer.offer_message(encode(err.to_message(), encoding))
