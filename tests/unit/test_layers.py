"""The replica's core knows no sockets: gateway.core imports neither aiohttp nor websockets.

Checked in a fresh interpreter with both made unimportable, so a new import anywhere below a
core module (a hub that reached for the viewer's socket class, say) fails here."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import gateway.core

CORE_MODULES = sorted(f"gateway.core.{m.name}" for m in pkgutil.iter_modules(gateway.core.__path__))

PROBE = """
import importlib, sys
for name in ("aiohttp", "websockets"):
    sys.modules[name] = None  # any import of it raises ImportError
for module in sys.argv[1:]:
    importlib.import_module(module)
print("ok")
"""


def test_the_core_imports_without_the_web_libraries() -> None:
    assert "gateway.core.node" in CORE_MODULES and "gateway.core.hub" in CORE_MODULES
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *CORE_MODULES], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
