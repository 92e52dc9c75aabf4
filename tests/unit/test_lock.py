"""requirements.lock pins every dependency pyproject.toml names, within its range, and aiohttp
has an upper bound (gateway/direct_ws.py reads its internals)."""

from __future__ import annotations

import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.harness import REPO


def _requirements() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    names = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        names.extend(extra)
    return [Requirement(r) for r in names]


def _lock() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (REPO / "requirements.lock").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep, f"requirements.lock: {line!r} is not an exact pin"
        pins[canonicalize_name(name)] = version
    return pins


def test_every_dependency_is_locked_within_its_range() -> None:
    pins = _lock()
    for req in _requirements():
        if req.marker is not None and not req.marker.evaluate():
            continue
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is in pyproject.toml but not locked: run `make lock`"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock has {req.name}=={pins[name]}, outside {req.specifier}: "
            "run `make lock`"
        )


def test_aiohttp_has_an_upper_bound() -> None:
    (aiohttp,) = [r for r in _requirements() if canonicalize_name(r.name) == "aiohttp"]
    assert any(spec.operator in ("<", "<=", "~=", "==") for spec in aiohttp.specifier), (
        "aiohttp needs an upper bound: gateway/direct_ws.py relies on its internals"
    )


def test_the_makefile_installs_from_the_lock() -> None:
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    assert "-c requirements.lock" in makefile
