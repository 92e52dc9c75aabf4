"""Shared fixtures. Real-server fixtures live in their own plugins:
tests/servers.py (throwaway PostgreSQL) and tests/redis_server.py (throwaway Redis)."""

import os
from pathlib import Path

pytest_plugins = ["tests.servers", "tests.redis_server"]

# The Node 22 that scripts/install-system-deps.sh puts in .tools/ on machines whose node is older
# (the Makefile does the same): tests run the node the Mineflayer packages were installed for.
_TOOLS = Path(__file__).resolve().parents[1] / ".tools" / "bin"
if _TOOLS.is_dir():
    os.environ["PATH"] = f"{_TOOLS}{os.pathsep}{os.environ.get('PATH', '')}"
