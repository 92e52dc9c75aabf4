"""`make chaos`: a soak test under scheduled faults, with a ledger of everything accepted.

Two replicas run behind nginx on a throwaway PostgreSQL and Redis. A few hundred simulated
bots (the Python SDK, with a token provider whose tokens all expire together: a refresh wave
every `--token-ttl` seconds) and a few viewers talk to nginx, while a schedule injects faults
in turn: PostgreSQL stop, PostgreSQL freeze (SIGSTOP), Redis SIGKILL (longer than the 15 s
presence TTL), replica SIGKILL, replica SIGTERM. Every fault is undone after its duration and
the next waits until the cluster is healthy again (nothing pending, buses up, every bot back).

The ledger: a bot's message counts as *accepted* once a `ping` sent after it on the same
connection came back (the gateway processed everything before it). At the end every accepted
metric row must be in the database, each bot's last accepted position and status must be the
stored ones, and every viewer's view (position, status, online) must equal the database's.
Status changes, events and commands are counted accepted vs delivered (the bus is at most
once by contract, so their delivery is reported, not required). What a SIGKILLed replica held
unwritten (its metrics batch) is in its journal and written when it restarts: nothing accepted
may be missing, or the run exits 1.

    python scripts/chaos.py --minutes 10                 # make chaos
    python scripts/chaos.py --quick                      # ~1 minute, fewer bots (the tests)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import secrets
import sys
import tempfile
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import jwt

from gateway.client import BotClient, ViewerClient
from gateway.testing.gateway_process import GatewayProcess, start_replicas
from gateway.testing.net import free_port
from gateway.testing.nginx import Nginx
from gateway.testing.postgres_server import PostgresServer
from gateway.testing.redis_server import RedisServer

METRIC = "chaos"
FLUSH_MS = 500  # replicas' metrics flush


@dataclass
class Plan:
    minutes: float
    bots: int
    viewers: int
    period_s: float  # each bot sends a round (position, metric, …) this often
    token_ttl_s: int
    pg_stop_s: float
    pg_freeze_s: float
    redis_kill_s: float
    settle_s: float  # quiet time between faults
    recover_deadline_s: float
    breaker_reset_s: int  # GATEWAY_DB_BREAKER_RESET_S of the replicas


def plan_for(args: argparse.Namespace) -> Plan:
    if args.quick:  # one round of every fault, short ones
        return Plan(
            minutes=args.minutes or 0.0,
            bots=args.bots or 20,
            viewers=args.viewers or 3,
            period_s=0.5,
            token_ttl_s=10,
            pg_stop_s=3,
            pg_freeze_s=3,
            redis_kill_s=4,
            settle_s=0.5,
            recover_deadline_s=90,
            breaker_reset_s=2,
        )
    return Plan(
        minutes=args.minutes or 10.0,
        bots=args.bots or 200,
        viewers=args.viewers or 10,
        period_s=1.0,
        token_ttl_s=60,
        pg_stop_s=15,
        pg_freeze_s=10,
        redis_kill_s=20,  # over the 15 s presence TTL: replicas take each other for dead
        settle_s=5,
        recover_deadline_s=180,
        breaker_reset_s=10,
    )


# -- the ledger -----------------------------------------------------------------------------------
@dataclass
class FaultRecord:
    name: str
    started: float
    duration_s: float = 0.0
    recover_s: float | None = None  # from undoing the fault until the cluster was healthy
    max_pending: int = 0  # writes waiting (positions + metrics + statuses) at the worst moment
    bots_down: int = 0  # most bots disconnected at once


@dataclass
class Ledger:
    metrics: dict[str, dict[int, tuple[str, float]]] = field(
        default_factory=lambda: defaultdict(dict)
    )
    position: dict[str, float] = field(default_factory=dict)  # last accepted x
    status: dict[str, str] = field(default_factory=dict)
    statuses_accepted: int = 0
    events_accepted: set[tuple[str, int]] = field(default_factory=set)
    events_delivered: list[set[tuple[str, int]]] = field(default_factory=list)  # per viewer
    commands_accepted: set[str] = field(default_factory=set)
    commands_delivered: set[str] = field(default_factory=set)
    commands_refused: Counter[int] = field(default_factory=Counter)
    closes: Counter[int] = field(default_factory=Counter)  # close codes bots saw
    refreshes: int = 0
    # (replica, wall time, metric rows it held unwritten just before the SIGKILL)
    kills: list[tuple[str, float, int]] = field(default_factory=list)
    faults: list[FaultRecord] = field(default_factory=list)


# -- tokens ---------------------------------------------------------------------------------------
def wave_provider(secret: str, role: str, sub: str, ttl_s: int) -> Callable[[], str]:
    """Tokens that all expire at the same instants (multiples of `ttl_s`): a refresh wave."""

    def provide() -> str:
        now = time.time()
        exp = math.ceil(now / ttl_s) * ttl_s
        if exp - now < ttl_s / 3:
            exp += ttl_s
        claims = {"sub": sub, "role": role, "iat": int(now), "exp": int(exp)}
        return jwt.encode(claims, secret, algorithm="HS256")

    return provide


# -- bots and viewers -----------------------------------------------------------------------------
class Bot:
    def __init__(self, npc: str, url: str, secret: str, plan: Plan, ledger: Ledger) -> None:
        self.npc = npc
        self.plan = plan
        self.ledger = ledger
        self.seq = 0
        self.unconfirmed: list[int] = []
        self.last_close: int | None = None
        self.client = BotClient(
            url,
            wave_provider(secret, "npc", npc, plan.token_ttl_s),
            on_command=self._on_command,
            backoff_initial=0.2,
            backoff_max=3.0,
        )

    def _on_command(self, msg: dict[str, Any]) -> None:
        self.ledger.commands_delivered.add(str(msg.get("id")))

    async def run(self, stop: asyncio.Event) -> None:
        await self.client.start(timeout=None)
        rng = random.Random(self.npc)
        while not stop.is_set():
            await asyncio.sleep(self.plan.period_s * rng.uniform(0.7, 1.3))
            code = self.client.close_code
            if code is not None and code != self.last_close:
                self.ledger.closes[code] += 1  # seen while reconnecting
            self.last_close = code
            await self.round(event=rng.random() < 0.2, status=rng.random() < 0.2)

    async def round(self, *, event: bool = False, status: bool = False) -> bool:
        """Send one round and confirm it with a ping on the same connection."""
        client = self.client
        if not client.connected:
            return False
        connection = client.reconnects
        self.seq += 1
        seq = self.seq
        self.unconfirmed.append(seq)
        status_value = f"s{seq % 7}" if status else None
        sent = await client.send_position(float(seq), 64.0, float(hash(self.npc) % 500))
        for value in self.unconfirmed:
            sent = sent and await client.send({"type": "metric", "name": METRIC, "value": value})
        if status_value is not None:
            sent = sent and await client.send_status(status_value)
        if event:
            sent = sent and await client.send_event("chaos", {"seq": seq})
        if not sent:
            return False
        try:
            await client.ping(timeout=10.0)
        except Exception:
            return False
        if client.reconnects != connection or client.welcome is None:
            return False  # the ping went over a newer connection: the round is not confirmed
        replica = str(client.welcome.get("replica"))
        now = time.time()
        for value in self.unconfirmed:
            self.ledger.metrics[self.npc].setdefault(value, (replica, now))
        self.unconfirmed.clear()
        self.ledger.position[self.npc] = float(seq)
        if status_value is not None:
            self.ledger.status[self.npc] = status_value
            self.ledger.statuses_accepted += 1
        if event:
            self.ledger.events_accepted.add((self.npc, seq))
        return True


def make_viewer(url: str, secret: str, plan: Plan, ledger: Ledger, i: int) -> ViewerClient:
    delivered: set[tuple[str, int]] = set()
    ledger.events_delivered.append(delivered)

    def on_message(msg: dict[str, Any]) -> None:
        if msg.get("type") == "event" and msg.get("name") == "chaos":
            data = msg.get("data") or {}
            delivered.add((str(msg.get("npc")), int(data.get("seq", -1))))

    return ViewerClient(
        url,
        wave_provider(secret, "viewer", f"chaos-viewer-{i}", plan.token_ttl_s),
        on_message=on_message,
        backoff_initial=0.2,
        backoff_max=3.0,
    )


# -- the cluster ----------------------------------------------------------------------------------
def http_json(url: str, token: str | None = None, data: bytes | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except OSError:
        return 0, None


class Cluster:
    def __init__(self, work: Path, secret: str, plan: Plan) -> None:
        self.plan = plan
        self.work = work
        self.secret = secret
        self.pg = PostgresServer()
        self.redis = RedisServer()
        self.replicas: list[GatewayProcess] = []
        self.nginx: Nginx | None = None
        self.db_url = ""

    def start(self) -> None:
        self.pg.start()
        self.redis.start()
        self.db_url = self.pg.create_database(f"chaos_{secrets.token_hex(4)}")
        env = {
            "GATEWAY_TICK_MS": "200",
            "GATEWAY_METRICS_FLUSH_MS": str(FLUSH_MS),
            "GATEWAY_WORKERS": "1",
            "GATEWAY_DB_BREAKER_RESET_S": str(self.plan.breaker_reset_s),
            "GATEWAY_RATE_PER_S": "1000",
            "GATEWAY_RATE_BURST": "1000",
            "GATEWAY_REST_WRITES_PER_S": "1000",
            "GATEWAY_REST_WRITES_BURST": "1000",
            "GATEWAY_LOG_LEVEL": "WARNING",
        }
        self.replicas = start_replicas(
            [free_port(), free_port()],
            secret=self.secret,
            database_url=self.db_url,
            redis_url=self.redis.url,
            work_dir=self.work,
            names=["chaos-a", "chaos-b"],
            extra_env=env,
        )
        self.nginx = Nginx([r.port for r in self.replicas], free_port(), self.work / "nginx")
        self.nginx.start()

    def close(self) -> None:
        for replica in self.replicas:
            with contextlib.suppress(Exception):
                replica.terminate(10)
        if self.nginx is not None:
            self.nginx.stop()
        for server in (self.redis, self.pg):
            with contextlib.suppress(Exception):
                server.close()

    def perf(self) -> list[dict[str, Any] | None]:
        admin = self.admin_token()
        out = []
        for replica in self.replicas:
            status, body = http_json(replica.http + "/api/performance", admin)
            out.append(body if status == 200 else None)
        return out

    def admin_token(self) -> str:
        return wave_provider(self.secret, "admin", "chaos", 3600)()

    def pending(self) -> int | None:
        """Writes waiting on every replica; None while a replica does not answer."""
        total = 0
        for perf in self.perf():
            if perf is None:
                return None
            b = perf["batchProcessor"]
            total += b["positions"]["unwrittenItems"] + b["metrics"]["pendingItems"]
            total += b["statuses"]["pendingItems"] + b["registrations"]["pending"]
        return total

    def healthy(self, bots: list[Bot]) -> bool:
        perfs = self.perf()
        if any(p is None for p in perfs):
            return False
        for p in perfs:
            assert p is not None
            b = p["batchProcessor"]
            busy = b["positions"]["unwrittenItems"] + b["statuses"]["pendingItems"]
            busy += b["registrations"]["pending"]
            if busy or b["metrics"]["pendingItems"] > 200 or not p["bus"]["connected"]:
                return False
            if p["circuitBreakers"]["database"]["state"] != "CLOSED":
                return False
        return all(b.client.connected for b in bots)


# -- faults ---------------------------------------------------------------------------------------
@dataclass
class Fault:
    name: str
    inject: Callable[[], None]
    undo: Callable[[], None]
    duration_s: float


def faults_for(cluster: Cluster, plan: Plan, ledger: Ledger) -> list[Fault]:
    a, b = cluster.replicas

    def kill_b() -> None:
        # What the replica holds in memory is what a SIGKILL may take: read it just before.
        status, perf = http_json(b.http + "/api/performance", cluster.admin_token())
        held = perf["batchProcessor"]["metrics"]["pendingItems"] if status == 200 else 0
        ledger.kills.append((b.name, time.time(), held))
        b.kill()

    def restart(replica: GatewayProcess) -> Callable[[], None]:
        def go() -> None:
            replica.spawn()
            replica.wait_ready(60)

        return go

    # The replica faults are kept apart: nginx leaves a failed replica out for 5 s.
    return [
        Fault("PostgreSQL stop", cluster.pg.stop, cluster.pg.start, plan.pg_stop_s),
        Fault("replica SIGKILL", kill_b, restart(b), 2.0),
        Fault("PostgreSQL freeze (SIGSTOP)", cluster.pg.pause, cluster.pg.resume, plan.pg_freeze_s),
        Fault("replica SIGTERM (drain)", lambda: a.terminate(20), restart(a), 2.0),
        Fault(
            "Redis SIGKILL (restarts empty)",
            cluster.redis.kill,
            cluster.redis.start,
            plan.redis_kill_s,
        ),
    ]


async def wait_healthy(
    cluster: Cluster, bots: list[Bot], deadline_s: float, record: FaultRecord | None
) -> float | None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    while loop.time() - start < deadline_s:
        if await asyncio.to_thread(cluster.healthy, bots):
            return loop.time() - start
        if record is not None:
            pending = await asyncio.to_thread(cluster.pending)
            record.max_pending = max(record.max_pending, pending or 0)
            record.bots_down = max(record.bots_down, sum(not b.client.connected for b in bots))
        await asyncio.sleep(0.25)
    return None


async def run_faults(
    cluster: Cluster, bots: list[Bot], plan: Plan, ledger: Ledger, end_at: float
) -> None:
    faults = faults_for(cluster, plan, ledger)
    loop = asyncio.get_running_loop()
    i = 0
    while loop.time() < end_at or i < len(faults):  # at least one round of every fault
        fault = faults[i % len(faults)]
        i += 1
        record = FaultRecord(fault.name, time.time(), fault.duration_s)
        ledger.faults.append(record)
        print(
            f"  [{time.strftime('%H:%M:%S')}] {fault.name} for {fault.duration_s:.0f} s", flush=True
        )
        await asyncio.to_thread(fault.inject)
        until = loop.time() + fault.duration_s
        while loop.time() < until:
            pending = await asyncio.to_thread(cluster.pending)
            record.max_pending = max(record.max_pending, pending or 0)
            record.bots_down = max(record.bots_down, sum(not b.client.connected for b in bots))
            await asyncio.sleep(0.5)
        undone = loop.time()
        await asyncio.to_thread(fault.undo)  # a replica's restart counts toward recovery
        healthy_after = await wait_healthy(cluster, bots, plan.recover_deadline_s, record)
        if healthy_after is not None:
            record.recover_s = loop.time() - undone
        shown = "never" if record.recover_s is None else f"{record.recover_s:.1f} s"
        worst = f"worst pending {record.max_pending}, bots down {record.bots_down}"
        print(f"    recovered in {shown}; {worst}", flush=True)
        await asyncio.sleep(plan.settle_s)


async def run_commands(
    url: str, cluster: Cluster, bots: list[Bot], ledger: Ledger, stop: asyncio.Event
) -> None:
    admin = cluster.admin_token()
    rng = random.Random(7)
    while not stop.is_set():
        await asyncio.sleep(1.0)
        bot = rng.choice(bots)
        body = json.dumps({"action": "chaos", "args": {"n": rng.randrange(1000)}}).encode()
        status, answer = await asyncio.to_thread(
            http_json, f"{url}/api/npcs/{bot.npc}/commands", admin, body
        )
        if status == 202 and answer:
            ledger.commands_accepted.add(str(answer["id"]))
        else:
            ledger.commands_refused[status] += 1


# -- the verdict ----------------------------------------------------------------------------------
def view_differences(
    i: int, viewer: ViewerClient, bots: list[Bot], npcs: dict[str, Any]
) -> list[str]:
    """Where viewer `i` shows something else than the database (position, status, online)."""
    out = []
    for bot in bots:
        seen = viewer.npcs.get(bot.npc) or {}
        row = npcs.get(bot.npc)
        if row is None:
            continue
        shown = (seen.get("x"), seen.get("status"), seen.get("online"))
        if shown != (row["x"], row["status"], True):
            out.append(
                f"viewer {i}: {bot.npc} shows x, status, online = {shown}, "
                f"database x={row['x']} status={row['status']}"
            )
    return out


async def verify(
    cluster: Cluster, bots: list[Bot], viewers: list[ViewerClient], ledger: Ledger
) -> tuple[list[str], dict[str, int]]:
    problems: list[str] = []
    conn = await asyncpg.connect(cluster.db_url)
    try:
        rows = await conn.fetch("SELECT npc, value FROM metrics WHERE name = $1", METRIC)
        npcs = {r["id"]: r for r in await conn.fetch("SELECT id, x, status FROM npcs")}
    finally:
        await conn.close()
    stored: dict[str, set[int]] = defaultdict(set)
    for r in rows:
        stored[r["npc"]].add(int(r["value"]))
    counts = Counter()
    # A killed replica journals what it held (gateway/core/journal.py); its restart writes it.
    counts["metric rows held by SIGKILLed replicas"] = sum(k[2] for k in ledger.kills)
    for npc, accepted in ledger.metrics.items():
        for value, (replica, at) in accepted.items():
            counts["metrics accepted"] += 1
            if value in stored[npc]:
                counts["metrics written"] += 1
                continue
            counts["metrics LOST"] += 1
            if counts["metrics LOST"] <= 10:
                problems.append(
                    f"metric {npc}={value} accepted by {replica} at {at:.1f} is not stored"
                )
    counts["metric rows stored (with re-sends)"] = len(rows)
    for bot in bots:
        row = npcs.get(bot.npc)
        want_x, want_status = ledger.position.get(bot.npc), ledger.status.get(bot.npc)
        counts["positions accepted (final)"] += want_x is not None
        if row is None:
            problems.append(f"{bot.npc}: not registered")
            continue
        if want_x is not None and row["x"] != want_x:
            problems.append(f"{bot.npc}: stored x {row['x']} != last accepted {want_x}")
        else:
            counts["positions written (final)"] += 1
        if want_status is not None and row["status"] != want_status:
            problems.append(f"{bot.npc}: stored status {row['status']} != {want_status}")
    # Viewers: their view must equal the database (allow the last window to arrive).
    loop = asyncio.get_running_loop()
    for i, viewer in enumerate(viewers):
        end = loop.time() + 20
        diff = view_differences(i, viewer, bots, npcs)
        while diff and loop.time() < end:
            await asyncio.sleep(0.25)
            diff = view_differences(i, viewer, bots, npcs)
        problems.extend(diff[:20])
        counts["viewers matching the database"] += not diff
    counts["statuses accepted"] = ledger.statuses_accepted
    counts["events accepted"] = len(ledger.events_accepted)
    for i, delivered in enumerate(ledger.events_delivered):
        counts[f"events delivered to viewer {i}"] = len(ledger.events_accepted & delivered)
    counts["commands accepted (202)"] = len(ledger.commands_accepted)
    counts["commands delivered to the bot"] = len(
        ledger.commands_accepted & ledger.commands_delivered
    )
    for status, n in sorted(ledger.commands_refused.items()):
        counts[f"commands refused (HTTP {status or 'no answer'})"] = n
    counts["token refreshes in place"] = sum(b.client.refreshes for b in bots) + sum(
        v.refreshes for v in viewers
    )
    for code, n in sorted(ledger.closes.items()):
        counts[f"bot connections closed with {code}"] = n
    counts["bot closes with 4401 (token expired)"] = ledger.closes.get(4401, 0)
    return problems, counts


# -- main -----------------------------------------------------------------------------------------
async def soak(plan: Plan) -> int:
    work = Path(tempfile.mkdtemp(prefix="aicraft-chaos-"))
    secret = secrets.token_urlsafe(48)
    cluster = Cluster(work, secret, plan)
    ledger = Ledger()
    print(
        f"chaos: {plan.bots} bots, {plan.viewers} viewers, {plan.minutes:g} min; logs in {work}",
        flush=True,
    )
    await asyncio.to_thread(cluster.start)
    assert cluster.nginx is not None
    url = cluster.nginx.ws
    bots = [Bot(f"chaos-{i:04d}", url, secret, plan, ledger) for i in range(plan.bots)]
    viewers = [make_viewer(url, secret, plan, ledger, i) for i in range(plan.viewers)]
    stop = asyncio.Event()
    try:
        for viewer in viewers:
            await viewer.start(timeout=None)
        tasks = [asyncio.create_task(b.run(stop)) for b in bots]
        tasks.append(
            asyncio.create_task(run_commands(cluster.nginx.http, cluster, bots, ledger, stop))
        )
        loop = asyncio.get_running_loop()
        started = loop.time()
        if await wait_healthy(cluster, bots, plan.recover_deadline_s, None) is None:
            print("the cluster never became healthy", file=sys.stderr)
            return 2
        await run_faults(cluster, bots, plan, ledger, started + plan.minutes * 60)
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        # Quiesce: one last confirmed round per bot, then wait until everything is written.
        await wait_healthy(cluster, bots, plan.recover_deadline_s, None)
        for bot in bots:
            for _ in range(5):
                if await bot.round(status=True):
                    break
                await asyncio.sleep(0.5)
        end = loop.time() + 30
        while loop.time() < end and (await asyncio.to_thread(cluster.pending)) != 0:  # noqa: ASYNC110 - another process's state
            await asyncio.sleep(0.25)
        await asyncio.sleep(FLUSH_MS / 1000 * 3)  # the last partial metrics batch
        problems, counts = await verify(cluster, bots, viewers, ledger)
    finally:
        stop.set()
        for client in [*(b.client for b in bots), *viewers]:
            with contextlib.suppress(Exception):
                await client.close()
        await asyncio.to_thread(cluster.close)
    print_ledger(plan, ledger, counts, problems)
    lost = counts.get("metrics LOST", 0)
    return 1 if lost or problems else 0


def print_ledger(plan: Plan, ledger: Ledger, counts: Counter[str], problems: list[str]) -> None:
    print("\nfaults (time to recover = from undoing the fault until nothing is pending, buses are")
    print("up, the database breaker is closed and every bot is connected again):")
    print(
        f"  {'fault':34} {'lasted':>7} {'recover':>8} {'max pending writes':>19} {'bots down':>10}"
    )
    for f in ledger.faults:
        rec = "never" if f.recover_s is None else f"{f.recover_s:.1f} s"
        print(f"  {f.name:34} {f.duration_s:6.0f}s {rec:>8} {f.max_pending:>19} {f.bots_down:>10}")
    print("\nledger:")
    for key, value in counts.items():
        print(f"  {key:48} {value:>10}")
    if counts.get("metrics LOST"):
        print(f"\n{counts['metrics LOST']} accepted metric row(s) LOST")
    if problems:
        print(f"\n{len(problems)} problem(s):")
        for p in problems[:50]:
            print(f"  {p}")
    elif not counts.get("metrics LOST"):
        print("\nnothing accepted was lost; every viewer's final view equals the database")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=None)
    parser.add_argument("--bots", type=int, default=None)
    parser.add_argument("--viewers", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="a short run with few bots (tests)")
    args = parser.parse_args(argv)
    return asyncio.run(soak(plan_for(args)))


if __name__ == "__main__":
    sys.exit(main())
