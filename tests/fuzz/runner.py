"""Drive a real replica (`python -m gateway serve`) with generated frames on both WebSocket
endpoints in both encodings, and check after every batch that it still works.

A *crash* is anything a hostile client must never cause: the replica exiting, an ERROR line
or a traceback in its log, a 5xx, a fuzzed connection dropped without a contract close code
(1008 flooding, 1009 frame too big), the control bot's positions no longer reaching the
control viewer, or stored state other than the fuzzing NPCs' own changing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from typing import Any

import msgpack
import orjson
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.fuzz.frames import frame
from tests.harness import GatewayProcess, token

CONTRACT_CLOSES = {1008, 1009}  # flooding, frame over 64 KiB
FRAMES_PER_EXAMPLE = (10, 40)  # the frames of one Hypothesis example go on one connection
EXAMPLES_PER_CHECK = 10  # a check (health, control bot → viewer, stored state) per ~250 frames
FUZZ_NPCS = ("fuzz-json", "fuzz-msgpack")


@dataclasses.dataclass(frozen=True)
class Lane:
    path: str
    msgpack: bool
    sub: str

    @property
    def bot(self) -> bool:
        return self.path == "/ws/npc"


LANES = (
    Lane("/ws/npc", False, "fuzz-json"),
    Lane("/ws/npc", True, "fuzz-msgpack"),
    Lane("/ws/viewer", False, "fuzz-viewer-json"),
    Lane("/ws/viewer", True, "fuzz-viewer-msgpack"),
)


@dataclasses.dataclass
class Report:
    frames: int = 0
    seconds: float = 0.0
    checks: int = 0
    crashes: list[str] = dataclasses.field(default_factory=list)
    errors: Counter[str] = dataclasses.field(default_factory=Counter)
    closes: Counter[int] = dataclasses.field(default_factory=Counter)

    def lines(self) -> list[str]:
        rate = self.frames / self.seconds if self.seconds else 0.0
        out = [
            f"frames: {self.frames} in {self.seconds:.1f} s ({rate:,.0f} frames/s), "
            f"{self.checks} checks",
            f"crashes: {len(self.crashes)}",
        ]
        out += [f"  crash: {c}" for c in self.crashes[:10]]
        out.append("errors by code: " + ", ".join(f"{k} {v}" for k, v in self.errors.most_common()))
        out.append("closes by code: " + ", ".join(f"{k} {v}" for k, v in self.closes.most_common()))
        return out


class Fuzzer:
    def __init__(self, gateway: GatewayProcess, report: Report) -> None:
        self.gw = gateway
        self.report = report
        self.conns: dict[Lane, ClientConnection] = {}
        self.refs = itertools.count()
        self.log_offset = 0
        self.admin = token("admin", "fuzz-admin")
        self.stack = contextlib.ExitStack()  # every connection, closed at the end

    # -- connections -----------------------------------------------------------------------

    def _connect(self, path: str, role: str, sub: str, as_msgpack: bool) -> ClientConnection:
        ws = self.stack.enter_context(
            connect(
                self.gw.ws + path,
                additional_headers={"Authorization": f"Bearer {token(role, sub)}"},
                subprotocols=["aicraft.v1.msgpack" if as_msgpack else "aicraft.v1.json"],  # type: ignore[list-item]
                max_size=None,
                max_queue=None,
                open_timeout=10,
                # No keepalive pings: they draw from `random` in a background thread, which
                # Hypothesis takes for a strategy using global randomness (the server pings us).
                ping_interval=None,
            )
        )
        ws.recv(timeout=10)  # welcome
        return ws

    def lane(self, lane: Lane) -> ClientConnection:
        ws = self.conns.get(lane)
        if ws is None:
            role = "npc" if lane.bot else "viewer"
            ws = self.conns[lane] = self._connect(lane.path, role, lane.sub, lane.msgpack)
        return ws

    @staticmethod
    def _decode(data: bytes | str, as_msgpack: bool) -> Any:
        return msgpack.unpackb(data) if as_msgpack else orjson.loads(data)

    # -- one batch -------------------------------------------------------------------------

    def send(self, lane: Lane, frames: list[bytes | str]) -> None:
        ws = self.lane(lane)
        ref = f"sync-{next(self.refs)}"
        ping = {"type": "ping", "ref": ref}
        try:
            for data in frames:
                ws.send(data)
                self.report.frames += 1
            ws.send(msgpack.packb(ping) if lane.msgpack else orjson.dumps(ping).decode())
            deadline = time.monotonic() + 30
            while True:
                msg = self._decode(
                    ws.recv(timeout=max(0.01, deadline - time.monotonic())), lane.msgpack
                )
                if msg.get("type") == "error":
                    self.report.errors[str(msg.get("code"))] += 1
                elif msg.get("type") == "pong" and msg.get("ref") == ref:
                    return
        except ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd is not None else 1006
            self.report.closes[code] += 1
            if code not in CONTRACT_CLOSES:
                sizes = [len(f) for f in frames]
                self.report.crashes.append(
                    f"{lane.sub}: connection dropped with {code} ({closed!r}; frames {sizes})"
                )
            self.conns.pop(lane, None)
        except TimeoutError:
            self.report.crashes.append(f"{lane.sub}: no pong within 30 s")
            self.conns.pop(lane, None)
            ws.close()

    # -- checks ----------------------------------------------------------------------------

    def rest(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else orjson.dumps(body)
        req = urllib.request.Request(self.gw.http + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.admin}")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                raw = resp.read()
                return resp.status, orjson.loads(raw) if raw else None
        except urllib.error.HTTPError as err:
            return err.code, None

    def setup(self) -> None:
        self.rest("POST", "/api/npcs", {"id": "anchor", "role": "keeper", "status": "idle"})
        self.rest("PUT", "/api/npcs/anchor/profile", {"level": 7, "notes": ["kept"]})
        self.control_bot = self._connect("/ws/npc", "npc", "control", False)
        self.control_viewer = self._connect("/ws/viewer", "viewer", "control-viewer", False)
        self.control_viewer.recv(timeout=10)  # snapshot
        self.anchor = self.rest("GET", "/api/npcs/anchor")[1]
        self.anchor_profile = self.rest("GET", "/api/npcs/anchor/profile")[1]
        self.known = {"anchor", "control", *FUZZ_NPCS}

    def check(self) -> None:
        report = self.report
        report.checks += 1
        if self.gw.proc is None or self.gw.proc.poll() is not None:
            report.crashes.append("the replica exited")
            raise SystemExit(1)
        status, _ = self.rest("GET", "/api/health")
        if status != 200:
            report.crashes.append(f"health answered {status}")
        # The control bot's position reaches the control viewer.
        x = float(report.checks)
        self.control_bot.send(orjson.dumps({"type": "pos", "x": x, "y": 64, "z": 0}).decode())
        deadline = time.monotonic() + 10
        try:
            while True:
                msg = orjson.loads(
                    self.control_viewer.recv(timeout=max(0.01, deadline - time.monotonic()))
                )
                if msg.get("type") == "positions" and any(
                    u["id"] == "control" and u["x"] == x for u in msg["updates"]
                ):
                    break
        except (TimeoutError, ConnectionClosed) as exc:
            report.crashes.append(f"control position {x} never reached the viewer ({exc!r})")
        # Stored state: only the fuzzing NPCs' own records may change.
        if self.rest("GET", "/api/npcs/anchor")[1] != self.anchor:
            report.crashes.append("the anchor NPC changed")
        if self.rest("GET", "/api/npcs/anchor/profile")[1] != self.anchor_profile:
            report.crashes.append("the anchor's profile changed")
        ids = {n["id"] for n in self.rest("GET", "/api/npcs?limit=500")[1]["npcs"]}
        if not ids <= self.known:
            report.crashes.append(f"unexpected NPCs were registered: {sorted(ids - self.known)}")
        self.scan_log()

    def scan_log(self) -> None:
        text = self.gw.output()
        new, self.log_offset = text[self.log_offset :], len(text)
        for line in new.splitlines():
            if '"level":"error"' in line or '"level":"critical"' in line or "Traceback" in line:
                self.report.crashes.append(f"log: {line[:300]}")

    def close(self) -> None:
        self.stack.close()


def run(total_frames: int, base_seed: int = 0, verbose: bool = False) -> Report:
    """Send at least `total_frames` generated frames; the report of what happened."""
    report = Report()
    with tempfile.TemporaryDirectory(prefix="fuzz-") as data_dir:
        gateway = GatewayProcess(
            {
                "GATEWAY_DATA_DIR": data_dir,
                "GATEWAY_TICK_MS": "50",
                "GATEWAY_WORKERS": "1",
                # Flood control is tested elsewhere: here every frame must reach the parser.
                "GATEWAY_RATE_PER_S": "1000000",
                "GATEWAY_RATE_BURST": "1000000",
                "GATEWAY_VIEWER_RATE_PER_S": "1000000",
                "GATEWAY_VIEWER_RATE_BURST": "1000000",
            }
        )
        gateway.start()
        fuzzer = Fuzzer(gateway, report)
        try:
            fuzzer.setup()
            started = time.monotonic()
            # Hypothesis only generates; the frames go out afterwards, so socket I/O (and the
            # randomness of WebSocket masking) never runs inside its examples.
            drawn: list[tuple[Lane, list[bytes | str]]] = []
            for round_no in itertools.count():
                if report.frames >= total_frames or len(report.crashes) > 20:
                    break

                @seed(base_seed * 1_000_003 + round_no)
                @settings(
                    max_examples=EXAMPLES_PER_CHECK,
                    database=None,
                    deadline=None,
                    phases=[Phase.generate],
                    suppress_health_check=list(HealthCheck),
                )
                @given(data=st.data())
                def batch(data: st.DataObject) -> None:
                    lane = data.draw(st.sampled_from(LANES))
                    frames = data.draw(
                        st.lists(
                            frame(bot=lane.bot, as_msgpack=lane.msgpack),
                            min_size=FRAMES_PER_EXAMPLE[0],
                            max_size=FRAMES_PER_EXAMPLE[1],
                        )
                    )
                    drawn.append((lane, frames))

                drawn.clear()
                batch()
                for lane, frames in drawn:
                    fuzzer.send(lane, frames)
                fuzzer.check()
                if verbose and round_no % 50 == 0:
                    print(f"  {report.frames} frames, {len(report.crashes)} crashes", flush=True)
            report.seconds = time.monotonic() - started
        finally:
            fuzzer.close()
            gateway.terminate()
            fuzzer.scan_log()
    return report
