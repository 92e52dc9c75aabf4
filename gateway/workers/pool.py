"""A pool of worker processes driven from the asyncio loop without ever blocking it.

Why not ``concurrent.futures.ProcessPoolExecutor``: it cannot kill one stuck worker (only the
whole pool), and one worker dying marks the whole executor broken and fails every pending
future. Here each worker is a ``spawn``-context process (never a fork of the running loop)
talking over its own socketpair; the parent side is non-blocking and read with the loop's
``sock_recv``, so a slow or dead worker costs the loop nothing. One driver coroutine per worker
slot takes tasks from a bounded queue, sends one, and awaits its answer under a hard deadline:

- queue full → :class:`PoolBusy` at once; an owner with `max_per_owner` tasks in flight (queued
  or running) → :class:`OwnerBusy` at once, so one client cannot fill the pool;
- still queued at its deadline → :class:`TaskTimeout` then, not when a worker frees up;
- no answer by ``timeout_s + grace_s`` → the worker is killed (SIGKILL) and replaced, the task
  fails with :class:`TaskTimeout`;
- the worker dies (EOF on its socket) → it is replaced, the task fails with
  :class:`WorkerCrashed`;
- ``cancel_owner(owner)`` drops that owner's queued tasks (their awaiters see CancelledError).

Tasks are ``fn(arg, budget_s)`` for a picklable top-level function `fn`; `budget_s` is what is
left of the task's time when it reaches the worker, so a task can stop itself cleanly first.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import itertools
import logging
import multiprocessing
import os
import pickle
import signal
import socket
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

log = logging.getLogger(__name__)

TaskFn = Callable[[Any, float], Any]

DEFAULT_WARMUP = "gateway.workers.tasks:warm_up"
STARTUP_S = 120.0  # a first start may compile the numba kernel on a loaded machine
STOP_S = 2.0  # how long a worker gets to exit on its own before it is killed
_HEADER = struct.Struct("!i")  # multiprocessing.Connection's framing: length, then bytes


class PoolError(Exception):
    """Base of the pool's failures."""


class PoolBusy(PoolError):
    """The queue is full."""


class OwnerBusy(PoolError):
    """This owner (a token or an NPC) already has its share of tasks in flight."""


class PoolClosed(PoolError):
    """The pool is not running (not started yet, or closing)."""


class TaskTimeout(PoolError):
    """The task ran out of time; its worker was killed if it did not stop by itself."""


class WorkerCrashed(PoolError):
    """The worker running the task died; it has been replaced."""


class TaskFailed(PoolError):
    """The task function raised in the worker (type name and message are kept)."""


# -- worker process side -------------------------------------------------------------------------


def _resolve(spec: str) -> Callable[[], Any]:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


def _worker_main(conn: Connection, warmup: str | None) -> None:
    """Entry point of a worker process: warm up, say ready, then answer tasks one at a time."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when workers stop
    # Searches yield the CPU to the gateway's event loop when they compete for a core: a
    # saturated pool must not make ticks late or pings slow.
    with contextlib.suppress(OSError):
        os.nice(10)
    if warmup:
        try:
            _resolve(warmup)()
        except Exception:
            log.exception("worker warm-up %s failed; continuing cold", warmup)
    conn.send_bytes(pickle.dumps(("ready", os.getpid())))
    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            return  # the parent went away
        msg = pickle.loads(data)
        if msg is None:
            return
        task_id, fn, arg, budget = msg
        try:
            reply = pickle.dumps((task_id, "ok", fn(arg, budget)))
        except Exception as exc:
            reply = pickle.dumps((task_id, "error", f"{type(exc).__name__}: {exc}"[:500]))
        conn.send_bytes(reply)


# -- parent side ---------------------------------------------------------------------------------


@dataclass(eq=False)
class _Task:
    fn: TaskFn
    arg: Any
    owner: str | None
    deadline: float  # loop.time()
    timeout_s: float
    future: asyncio.Future[Any]
    id: int = 0
    started: bool = False  # a driver took it: its deadline is the driver's to enforce


@dataclass(eq=False)
class _Worker:
    proc: BaseProcess
    sock: socket.socket
    pid: int = 0
    task: _Task | None = None
    dead: bool = False  # stuck or crashed: kill, don't ask
    buf: bytearray = field(default_factory=bytearray)

    def take_frame(self) -> bytes | None:
        """One complete frame from the receive buffer, if there is one."""
        if len(self.buf) < 4:
            return None
        (size,) = _HEADER.unpack_from(self.buf)
        head = 4
        if size == -1:  # Connection's escape for frames over 2 GiB
            if len(self.buf) < 12:
                return None
            (size,) = struct.unpack_from("!Q", self.buf, 4)
            head = 12
        if len(self.buf) < head + size:
            return None
        frame = bytes(self.buf[head : head + size])
        del self.buf[: head + size]
        return frame


def _frame(payload: bytes) -> bytes:
    if len(payload) > 0x7FFFFFFF:
        return _HEADER.pack(-1) + struct.pack("!Q", len(payload)) + payload
    return _HEADER.pack(len(payload)) + payload


class WorkerPool:
    """`workers` processes behind a queue of at most `queue_max` waiting tasks.

    Start with :meth:`start` and stop with :meth:`close` on the loop that uses it. `warmup`
    ("module:function") runs in each new worker before it takes tasks.
    """

    def __init__(
        self,
        workers: int,
        queue_max: int = 256,
        *,
        grace_s: float = 1.0,
        warmup: str | None = DEFAULT_WARMUP,
        context: str = "spawn",
        max_per_owner: int | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        if queue_max < 0:
            raise ValueError("queue_max must be >= 0")
        self._size = workers
        self._queue_max = queue_max
        self._max_per_owner = max_per_owner
        self._in_flight: dict[str, int] = {}  # owner -> tasks queued or running
        self._grace = grace_s
        self._warmup = warmup
        self._ctx = multiprocessing.get_context(context)
        self._queue: deque[_Task] = deque()
        self._idle: deque[asyncio.Future[_Task]] = deque()  # drivers waiting for work
        self._workers: list[_Worker | None] = [None] * workers
        self._drivers: list[asyncio.Task[None]] = []
        self._ready: asyncio.Event | None = None
        self._tried: set[int] = set()
        self._running = False
        self._lazy = False  # start on the first task (see `start_on_demand`)
        self._ids = itertools.count(1)
        self._busy = 0
        self._processed = 0
        self._failed = 0
        self._timeouts = 0
        self._crashes = 0
        self._spawned = 0
        self._rejected = 0
        self._cancelled = 0

    # -- lifecycle -------------------------------------------------------------------------------

    def start_on_demand(self) -> None:
        """Start no process until the first task arrives (tests of everything else)."""
        self._lazy = True

    async def start(self, wait_ready: bool = True) -> None:
        """Start the workers; by default return once every one of them is ready."""
        if self._running:
            return
        self._running = True
        self._ready = asyncio.Event()
        self._drivers = [
            asyncio.create_task(self._drive(slot), name=f"worker-pool-{slot}")
            for slot in range(self._size)
        ]
        if wait_ready:
            await self._ready.wait()

    async def close(self) -> None:
        """Stop taking tasks, fail the queued and running ones, stop every worker."""
        if not self._running:
            return
        self._running = False
        while self._queue:
            task = self._queue.popleft()
            if not task.future.done():
                task.future.set_exception(PoolClosed("the worker pool is shutting down"))
        for driver in self._drivers:
            driver.cancel()
        await asyncio.gather(*self._drivers, return_exceptions=True)
        self._drivers = []

    # -- tasks -----------------------------------------------------------------------------------

    async def submit(
        self, fn: TaskFn, arg: Any, *, timeout_s: float, owner: str | None = None
    ) -> Any:
        """Run ``fn(arg, budget_s)`` in a worker and return its result.

        Raises PoolBusy (queue full, at once), OwnerBusy (the owner's limit, at once),
        PoolClosed, TaskTimeout (`timeout_s` counts from now, queueing included), WorkerCrashed
        or TaskFailed; CancelledError if the task was dropped by :meth:`cancel_owner`.
        """
        limit = self._max_per_owner
        if owner is None or limit is None:
            return await self._submit(fn, arg, timeout_s, owner)
        held = self._in_flight.get(owner, 0)
        if held >= limit:
            self._rejected += 1
            raise OwnerBusy(f"{held} requests of this client are in flight already (limit {limit})")
        self._in_flight[owner] = held + 1
        try:
            return await self._submit(fn, arg, timeout_s, owner)
        finally:
            left = self._in_flight[owner] - 1
            if left:
                self._in_flight[owner] = left
            else:
                del self._in_flight[owner]

    async def _submit(self, fn: TaskFn, arg: Any, timeout_s: float, owner: str | None) -> Any:
        if not self._running and self._lazy:
            self._lazy = False
            await self.start(wait_ready=False)
        if not self._running:
            raise PoolClosed("the worker pool is not running")
        loop = asyncio.get_running_loop()
        task = _Task(fn, arg, owner, loop.time() + timeout_s, timeout_s, loop.create_future())
        task.id = next(self._ids)
        while self._idle:
            waiter = self._idle.popleft()
            if not waiter.done():
                waiter.set_result(task)  # an idle worker takes it directly
                break
        else:
            if len(self._queue) >= self._queue_max:
                self._rejected += 1
                raise PoolBusy(f"the worker pool queue is full ({self._queue_max} waiting)")
            self._queue.append(task)
        try:
            try:
                async with asyncio.timeout_at(task.deadline):
                    return await asyncio.shield(task.future)
            except TimeoutError:
                if task.started:  # running: the worker stops itself at its budget, or is killed
                    return await task.future
                self._timeouts += 1
                self._fail(task, TaskTimeout(f"timed out after {timeout_s:g} s in the queue"))
                with contextlib.suppress(ValueError):
                    self._queue.remove(task)
                return task.future.result()  # raises the TaskTimeout
        except asyncio.CancelledError:
            task.future.cancel()  # a driver skips it, or ignores its answer
            with contextlib.suppress(ValueError):
                self._queue.remove(task)
            raise

    def cancel_owner(self, owner: str) -> int:
        """Drop `owner`'s queued tasks (running ones finish; their answers are dropped)."""
        kept: deque[_Task] = deque()
        dropped = 0
        for task in self._queue:
            if task.owner == owner:
                task.future.cancel()
                dropped += 1
            else:
                kept.append(task)
        self._queue = kept
        self._cancelled += dropped
        return dropped

    def stats(self) -> dict[str, Any]:
        """Live figures for /api/performance `workerPool`."""
        return {
            "totalWorkers": self._size,
            "liveWorkers": sum(1 for w in self._workers if w is not None),
            "busyWorkers": self._busy,
            "queuedTasks": len(self._queue),
            "queueMax": self._queue_max,
            "totalTasksProcessed": self._processed,
            "tasksFailed": self._failed,
            "tasksTimedOut": self._timeouts,
            "tasksRejected": self._rejected,
            "tasksCancelled": self._cancelled,
            "workersCrashed": self._crashes,
            "workersStarted": self._spawned,
        }

    def worker_pids(self) -> list[int]:
        """Process ids of the live workers (for operators and tests)."""
        return [w.pid for w in self._workers if w is not None]

    def busy_pids(self) -> list[int]:
        """Process ids of the workers running a task now."""
        return [w.pid for w in self._workers if w is not None and w.task is not None]

    # -- drivers ---------------------------------------------------------------------------------

    async def _drive(self, slot: int) -> None:
        failures = 0
        while self._running:
            worker = None
            try:
                worker = await self._spawn()
                failures = 0
                self._workers[slot] = worker
                self._tried.add(slot)
                self._mark_ready()
                while await self._serve_one(worker):
                    pass
            except Exception as exc:
                failures += 1
                self._tried.add(slot)
                self._mark_ready()
                log.error("worker slot %d failed to start (%r); retrying", slot, exc)
                # Back off so a worker that cannot start does not spin the machine.
                await asyncio.sleep(min(0.1 * 2**failures, 5.0))
            finally:
                self._workers[slot] = None
                if worker is not None:
                    await asyncio.shield(self._stop(worker))

    def _mark_ready(self) -> None:
        # start() returns once every slot has tried once: a slot that cannot start a worker
        # keeps retrying in the background instead of hanging the gateway's start-up.
        if self._ready is not None and len(self._tried) == self._size:
            self._ready.set()

    async def _spawn(self) -> _Worker:
        parent_sock, child_sock = socket.socketpair()
        child = Connection(child_sock.detach())
        proc = self._ctx.Process(
            target=_worker_main, args=(child, self._warmup), name="gateway-worker", daemon=True
        )
        try:
            # spawn = vfork+exec and a small pipe write: about a millisecond, so done inline.
            proc.start()
        except BaseException:
            parent_sock.close()
            raise
        finally:
            child.close()
        self._spawned += 1
        parent_sock.setblocking(False)
        worker = _Worker(proc, parent_sock, pid=proc.pid or 0)
        try:
            async with asyncio.timeout(STARTUP_S):
                hello = await self._recv(worker)
        except BaseException:
            await asyncio.shield(self._stop(worker))
            raise
        if not (isinstance(hello, tuple) and hello[0] == "ready"):
            await self._stop(worker)
            raise EOFError(f"worker said {hello!r} instead of ready")
        return worker

    async def _next_task(self) -> _Task:
        while self._queue:
            task = self._queue.popleft()
            if not task.future.done():
                return task
        waiter: asyncio.Future[_Task] = asyncio.get_running_loop().create_future()
        self._idle.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._queue.appendleft(waiter.result())  # handed over as we were cancelled
            else:
                waiter.cancel()
            raise

    async def _serve_one(self, worker: _Worker) -> bool:
        """Run one task on `worker`; False when the worker is gone and must be replaced."""
        task = await self._next_task()
        if task.future.done():  # timed out or cancelled while being handed over
            return True
        task.started = True
        loop = asyncio.get_running_loop()
        budget = task.deadline - loop.time()
        if budget <= 0:
            self._fail(task, TaskTimeout(f"timed out after {task.timeout_s:g} s in the queue"))
            self._timeouts += 1
            return True
        try:
            payload = pickle.dumps((task.id, task.fn, task.arg, budget))
        except (pickle.PickleError, TypeError, AttributeError) as exc:
            self._fail(task, TaskFailed(f"task cannot be sent to a worker: {exc}"))
            self._failed += 1
            return True
        worker.task = task
        self._busy += 1
        try:
            try:
                await loop.sock_sendall(worker.sock, _frame(payload))
                async with asyncio.timeout(budget + self._grace):
                    reply = await self._recv(worker)
            except TimeoutError:
                worker.dead = True
                self._timeouts += 1
                self._fail(task, TaskTimeout(f"timed out after {task.timeout_s:g} s"))
                log.warning("worker %d overran a task's deadline; killing it", worker.pid)
                return False
            except (OSError, EOFError):
                worker.dead = True
                self._crashes += 1
                self._fail(task, WorkerCrashed(f"worker {worker.pid} died running the task"))
                log.warning("worker %d died mid-task; replacing it", worker.pid)
                return False
            except asyncio.CancelledError:
                worker.dead = True  # closing: don't wait for the task to finish
                self._fail(task, PoolClosed("the worker pool is shutting down"))
                raise
        finally:
            worker.task = None
            self._busy -= 1
        _task_id, status, value = reply
        self._processed += 1
        if status == "ok":
            if not task.future.done():
                task.future.set_result(value)
        else:
            self._failed += 1
            self._fail(task, TaskFailed(value))
        return True

    @staticmethod
    def _fail(task: _Task, exc: Exception) -> None:
        if not task.future.done():
            task.future.set_exception(exc)

    async def _recv(self, worker: _Worker) -> Any:
        loop = asyncio.get_running_loop()
        while True:
            frame = worker.take_frame()
            if frame is not None:
                return pickle.loads(frame)
            data = await loop.sock_recv(worker.sock, 1 << 16)
            if not data:
                raise EOFError("worker closed its end")
            worker.buf += data

    async def _stop(self, worker: _Worker) -> None:
        """Ask an idle worker to exit, kill it otherwise, and reap it."""
        proc = worker.proc
        if not worker.dead and proc.exitcode is None:
            with contextlib.suppress(OSError):
                worker.sock.send(_frame(pickle.dumps(None)))  # tiny: fits the socket buffer
        worker.sock.close()
        if worker.dead and proc.exitcode is None:
            proc.kill()
        if not await _wait_exit(proc, STOP_S):
            proc.kill()
            await _wait_exit(proc, STOP_S)
        if proc.exitcode is not None:
            proc.close()


async def _wait_exit(proc: BaseProcess, timeout_s: float) -> bool:
    """Wait until `proc` has exited, without blocking the loop (its sentinel fd turns readable)."""
    if proc.exitcode is not None:
        return True
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def on_exit() -> None:
        if not done.done():
            done.set_result(None)

    loop.add_reader(proc.sentinel, on_exit)
    try:
        async with asyncio.timeout(timeout_s):
            await done
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(proc.sentinel)
    # The sentinel closes a moment before the exit status can be collected: reap off the loop.
    await asyncio.to_thread(proc.join, timeout_s)
    return proc.exitcode is not None
