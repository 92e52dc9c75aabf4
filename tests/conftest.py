"""Shared fixtures. The real-server fixtures (throwaway PostgreSQL and Redis) are a plugin of
their own: tests/servers.py."""

import os
from pathlib import Path

pytest_plugins = ["tests.servers"]

# The Node 22 that scripts/install-system-deps.sh puts in .tools/ on machines whose node is older
# (the Makefile does the same): tests run the node the Mineflayer packages were installed for.
_TOOLS = Path(__file__).resolve().parents[1] / ".tools" / "bin"
if _TOOLS.is_dir():
    os.environ["PATH"] = f"{_TOOLS}{os.pathsep}{os.environ.get('PATH', '')}"
