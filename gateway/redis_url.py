"""Redis URLs, parsed without the Redis client (configuration reads them before any import of
the server's packages: an SDK-only install must still get a clear error).

`redis+cluster://[user:password@]host:port[,host:port...]` names a Redis Cluster by its seeds.
"""

from __future__ import annotations

CLUSTER_SCHEME = "redis+cluster"


def is_cluster_url(url: str) -> bool:
    return url.startswith(CLUSTER_SCHEME + "://")


def cluster_seeds(url: str) -> list[tuple[str, int]]:
    """The (host, port) seed nodes of a `redis+cluster://` URL; ValueError if it has none."""
    _, hosts = cluster_parts(url)
    seeds = []
    for item in hosts.split(","):
        host, sep, port = item.strip().rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"{item.strip()!r} is not host:port")
        seeds.append((host.strip("[]"), int(port)))
    return seeds


def node_url(cluster_url: str, host: str, port: int) -> str:
    """A `redis://` URL for one node of the cluster, with the cluster URL's credentials."""
    userinfo, _ = cluster_parts(cluster_url)
    return f"redis://{userinfo}{host}:{port}/0"


def cluster_parts(url: str) -> tuple[str, str]:
    """(`user:password@` or "", "host:port,...") of a `redis+cluster://` URL."""
    rest = url.split("://", 1)[1].split("/", 1)[0].split("?", 1)[0]
    userinfo, sep, hosts = rest.rpartition("@")
    return (userinfo + sep, hosts)
