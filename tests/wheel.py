"""The package as people install it: a wheel built from a copy of the sources, and fresh venvs.

Built from a copy so that the build leaves nothing (build/, *.egg-info) in the checkout.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.harness import REPO

# What a wheel is built from: the files an sdist carries (MANIFEST.in), nothing of the checkout.
SOURCES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "gateway", "schema", "docs")


def run(*cmd: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run `cmd`; its stdout, or a failed assertion that shows both outputs."""
    done = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"{cmd} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def build_wheel(root: Path) -> Path:
    """Build the package's wheel under `root` (a scratch directory); its path."""
    src = root / "src"
    src.mkdir()
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "_data"))
        else:
            shutil.copy2(path, src / name)
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", root / "dist", src, cwd=root)
    (wheel,) = (root / "dist").glob("aicraft_gateway-*.whl")
    return wheel


def venv_with(root: Path, *requirements: str | Path) -> Path:
    """A fresh venv under `root` with `requirements` installed, pinned by requirements.lock;
    its bin/."""
    run(sys.executable, "-m", "venv", root / "venv", cwd=root)
    bin_dir = root / "venv" / "bin"
    run(bin_dir / "pip", "install", "-q", "-c", REPO / "requirements.lock", *requirements, cwd=root)
    return bin_dir
