"""History on a Redis Stream: one stream for the gateway, numbered by one Lua script.

Why an INCR-assigned seq rather than the stream's own ids: §11 wants seq to grow by exactly 1
per event, and stream ids (`ms-n`) do not. The script numbers a batch with INCR and adds each
event with the explicit id `0-seq`, so the id *is* the seq and `XREAD` from `0-S` resumes after
S. It also owns the epoch: when the epoch key is missing (a Redis that restarted empty), it
installs the caller's fresh epoch and starts the numbering and the stream over, atomically.

Every replica (the appending one included) learns of each event by reading the stream, so all
of them see one order. An appender task pipelines whatever piled up into one script call; while
Redis is unreachable the events wait in a bounded queue and go out when it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from typing import Any

import msgpack
from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.backoff import Backoff
from gateway.history.base import Entry, OnEntry
from gateway.redis_pool import fail_fast_client

log = logging.getLogger(__name__)

# One hash tag: the three keys live in one slot of a Redis Cluster.
STREAM_KEY = "{aicraft:hist}:stream"
EPOCH_KEY = "{aicraft:hist}:epoch"
SEQ_KEY = "{aicraft:hist}:seq"

_APPEND = """
local epoch = redis.call('GET', KEYS[2])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[2], epoch)
  redis.call('DEL', KEYS[1], KEYS[3])
end
local seqs = {}
for i = 3, #ARGV, 2 do
  local seq = redis.call('INCR', KEYS[3])
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '0-' .. seq,
             'e', epoch, 't', ARGV[i], 'p', ARGV[i + 1])
  seqs[#seqs + 1] = seq
end
return seqs
"""

_READ_BLOCK_MS = 1000
_READ_COUNT = 1000


class RedisHistory:
    backend = "redis"

    def __init__(
        self,
        url: str,
        *,
        max_events: int = 10_000,
        max_queue: int = 10_000,
        max_batch: int = 500,
        connect_timeout_s: float = 1.0,
        socket_timeout_s: float = 2.0,
    ) -> None:
        self._url = url
        self._max_events = max_events
        self._max_queue = max_queue
        self._max_batch = max_batch
        self._connect_timeout_s = connect_timeout_s
        self._socket_timeout_s = socket_timeout_s
        self._queue: deque[tuple[int, bytes]] = deque()
        self._wakeup = asyncio.Event()
        self._drained = asyncio.Event()  # set while the queue is empty
        self._writer: Redis | None = None
        self._reader: Redis | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._on_entry: OnEntry | None = None
        self._closed = False
        self._epoch: bytes | None = None  # the epoch being read
        self._last_id = "0-0"
        self.appended = 0
        self.dropped = 0
        self.read = 0
        self.write_up = False
        self.read_up = False

    async def start(self, on_entry: OnEntry) -> None:
        """Connect, load the stream's window, then follow it. Waits for the first attempt
        only: a replica whose Redis is down still starts and catches up when it is back."""
        self._on_entry = on_entry
        self._writer = fail_fast_client(self._url, self._connect_timeout_s, self._socket_timeout_s)
        self._reader = fail_fast_client(
            self._url, self._connect_timeout_s, self._socket_timeout_s + _READ_BLOCK_MS / 1000
        )
        tried = asyncio.Event()
        self._tasks = [
            asyncio.create_task(self._append_loop(), name="history-append"),
            asyncio.create_task(self._read_loop(tried), name="history-read"),
        ]
        await tried.wait()

    def append(self, message: dict[str, Any], about: dict[str, Any] | None) -> None:
        if len(self._queue) >= self._max_queue:
            self.dropped += 1
            return
        payload = msgpack.packb({"m": message, "a": about}, use_bin_type=True)
        self._queue.append((int(time.time() * 1000), payload))
        self._drained.clear()
        self._wakeup.set()

    async def close(self) -> None:
        # Give what is queued a moment to go out: accepted events are not dropped at shutdown
        # while Redis is reachable.
        if self._queue and self.write_up:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), 2.0)
        self._closed = True
        self._on_entry = None
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        for client in (self._writer, self._reader):
            if client is not None:
                await client.aclose()
        self._writer = self._reader = None

    def stats(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "appended": self.appended,
            "dropped": self.dropped,
            "queued": len(self._queue),
            "connected": self.write_up and self.read_up,
        }

    # -- appending -----------------------------------------------------------------------

    async def _append_loop(self) -> None:
        assert self._writer is not None
        script = self._writer.register_script(_APPEND)
        backoff = Backoff()
        while not self._closed:
            if not self._queue:
                self._drained.set()
                await self._wakeup.wait()
                self._wakeup.clear()
                continue
            batch = [self._queue[i] for i in range(min(self._max_batch, len(self._queue)))]
            args: list[Any] = [uuid.uuid4().hex[:16], self._max_events]
            for ts, payload in batch:
                args += [ts, payload]
            try:
                await script(keys=[STREAM_KEY, EPOCH_KEY, SEQ_KEY], args=args)
            except (RedisError, OSError) as exc:
                # Kept at the head of the queue: sent again once Redis answers.
                if self.write_up or backoff.first:
                    log.warning("history: cannot append, will retry: %s", exc)
                self.write_up = False
                await backoff.wait()
                continue
            for _ in batch:
                self._queue.popleft()
            self.appended += len(batch)
            self.write_up = True
            backoff.succeeded()

    # -- reading -------------------------------------------------------------------------

    async def _read_loop(self, tried: asyncio.Event) -> None:
        assert self._reader is not None
        backoff = Backoff()
        while not self._closed:
            try:
                await self._sync_epoch()
                self.read_up = True
                backoff.succeeded()
                await self._follow(tried)
            except (RedisError, OSError) as exc:
                if self.read_up or backoff.first:
                    log.warning("history: lost Redis while reading: %s", exc)
                self.read_up = False
                tried.set()
                await backoff.wait()

    async def _sync_epoch(self) -> None:
        """A different epoch in Redis (it restarted empty): read its stream from the start."""
        assert self._reader is not None
        epoch = await self._reader.get(EPOCH_KEY)
        if epoch != self._epoch:
            self._epoch = epoch
            self._last_id = "0-0"

    async def _follow(self, caught_up: asyncio.Event) -> None:
        """Read without blocking until caught up (then `caught_up` is set), then block."""
        assert self._reader is not None
        block: int | None = None
        while not self._closed:
            got = await self._reader.xread(
                {STREAM_KEY: self._last_id}, count=_READ_COUNT, block=block
            )
            read = 0
            for _stream, entries in got or ():
                for entry_id, fields in entries:
                    self._last_id = entry_id.decode()
                    self._deliver(entry_id, fields)
                    read += 1
            if read < _READ_COUNT and block is None:
                caught_up.set()
                block = _READ_BLOCK_MS
            elif read == 0:
                await self._sync_epoch()  # quiet: make sure we are not reading a dead epoch

    def _deliver(self, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        try:
            seq = int(entry_id.split(b"-", 1)[1])
            self._epoch = fields[b"e"]  # what a reconnect compares Redis's epoch with
            epoch = self._epoch.decode()
            body = msgpack.unpackb(fields[b"p"], raw=False)
            message = dict(body["m"], epoch=epoch, seq=seq)
            entry = Entry(epoch, seq, int(fields[b"t"]), message, body.get("a"))
        except (KeyError, ValueError, TypeError, msgpack.UnpackException):
            log.warning("history: skipping a malformed entry %r", entry_id)
            return
        self.read += 1
        if self._on_entry is not None:
            try:
                self._on_entry(entry)
            except Exception:
                log.exception("history: handler failed on entry %d", seq)
