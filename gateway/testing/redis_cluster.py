"""A throwaway Redis Cluster of three masters for tests (tests/servers.py has the fixture).

Each master is a `RedisServer` in cluster mode, in its own directory, so `kill()` and `start()`
of one brings it back on the same port with the same `nodes.conf`: it rejoins as the master of
the slots it had, empty (nothing is persisted). No replicas: the slots of a dead master are
unavailable until it returns. A short node timeout makes the others notice within a second.
"""

from __future__ import annotations

import shutil
import subprocess
import time

from redis.crc import key_slot

from gateway.testing.net import free_port
from gateway.testing.redis_server import RedisServer

REDIS_CLI_BIN = "/usr/bin/redis-cli"
NODE_TIMEOUT_MS = 1000


def _cluster_args() -> list[str]:
    # The cluster bus port is given, not derived (port + 10000 is past 65535 for most of the
    # ports the OS hands out), and kept: a restarted node must come back on the same one.
    return [
        "--cluster-enabled", "yes",
        "--cluster-port", str(free_port()),
        "--cluster-config-file", "nodes.conf",  # in the server's own directory
        "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
    ]  # fmt: skip


class RedisClusterServers:
    """Three cluster-mode `redis-server`s on 127.0.0.1, joined into one cluster by `start()`."""

    def __init__(self, masters: int = 3) -> None:
        self.nodes = [RedisServer(extra_args=_cluster_args()) for _ in range(masters)]
        self._created = False

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def start(self, timeout_s: float = 30.0) -> None:
        """Start every stopped node; the first time, create the cluster. Returns once every
        node says the cluster is ok."""
        for node in self.nodes:
            node.start()
        if not self._created:
            self._create()
            self._created = True
        self.wait_state("ok", timeout_s)

    def _create(self) -> None:
        cli = shutil.which(REDIS_CLI_BIN) or shutil.which("redis-cli")
        if cli is None:
            raise RuntimeError("redis-cli not found: install redis-tools")
        addresses = [f"127.0.0.1:{n.port}" for n in self.nodes]
        done = subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True,
            timeout=60,
        )
        if done.returncode != 0:
            output = (done.stdout + done.stderr).decode(errors="replace")
            raise RuntimeError(f"redis-cli --cluster create failed: {output}")

    def master_of(self, key: str) -> RedisServer:
        """The master whose slot ranges (its own line of CLUSTER NODES) hold `key`'s slot."""
        return self.master_of_slot(key_slot(key.encode()))

    def master_of_slot(self, slot: int) -> RedisServer:
        for node in self.nodes:
            lines = node.command("CLUSTER", "NODES").decode().splitlines()
            mine = next(line for line in lines if "myself" in line)
            for part in mine.split()[8:]:
                low, _, high = part.partition("-")
                if int(low) <= slot <= int(high or low):
                    return node
        raise RuntimeError(f"no master owns slot {slot}")

    def node_id(self, node: RedisServer) -> str:
        reply = node.command("CLUSTER", "MYID")  # a bulk string: $40, the id
        return reply.split(b"\r\n")[1].decode()

    def move_slot(self, slot: int, to: RedisServer) -> None:
        """Give `slot`, which holds no keys, to master `to` as a resharding would (nothing to
        migrate): importing, migrating, then the new owner told to every master."""
        source = self.master_of_slot(slot)
        if source is to:
            return
        source_id, to_id = self.node_id(source), self.node_id(to)
        steps = [
            (to, "IMPORTING", source_id),
            (source, "MIGRATING", to_id),
        ]
        # The new owner first, then the old, then the others.
        others = [n for n in self.nodes if n is not to and n is not source]
        steps += [(n, "NODE", to_id) for n in (to, source, *others)]
        for node, how, node_id in steps:
            reply = node.command("CLUSTER", "SETSLOT", str(slot), how, node_id)
            if not reply.startswith(b"+OK"):
                raise RuntimeError(f"CLUSTER SETSLOT {slot} {how} on {node.port}: {reply!r}")

    def state(self, node: RedisServer) -> str:
        """`cluster_state` as `node` sees it ("ok", "fail"), or "" if it does not answer."""
        try:
            info = node.command("CLUSTER", "INFO").decode()
        except OSError:
            return ""
        for line in info.splitlines():
            if line.startswith("cluster_state:"):
                return line.split(":", 1)[1].strip()
        return ""

    def wait_state(self, state: str, timeout_s: float = 30.0) -> None:
        """Until every running node reports `state`."""
        deadline = time.monotonic() + timeout_s
        while any(self.state(n) != state for n in self.nodes if n.running):
            if time.monotonic() > deadline:
                seen = {n.port: self.state(n) for n in self.nodes}
                raise RuntimeError(f"cluster not {state} after {timeout_s}s: {seen}")
            time.sleep(0.05)  # polling external processes, bounded by the deadline

    def flushall(self) -> None:
        for node in self.nodes:
            node.flushall()

    def close(self) -> None:
        for node in self.nodes:
            node.close()

    def __enter__(self) -> RedisClusterServers:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
