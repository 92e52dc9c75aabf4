"""Loopback ports and URLs, for servers started on 127.0.0.1."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from pathlib import Path

POLL_S = 0.05  # readiness poll interval of external processes (bounded by a deadline)


def free_port() -> int:
    """A port nothing listens on right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def http_status(url: str, timeout: float = 1.0) -> int | None:
    """The status of a GET, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, ValueError):
        return None


def tail(path: Path, chars: int = 3000) -> str:
    """The end of a log file, or "" if it cannot be read."""
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


class Listener:
    """Something serving on `host:port`: its http:// and ws:// base URLs."""

    host: str = "127.0.0.1"
    port: int

    @property
    def http(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://{self.host}:{self.port}"
