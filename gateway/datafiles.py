"""Where the data files the gateway reads at run time live: the migrations and the OpenAPI
document.

Their sources stay at the top of the repository (`schema/`, `docs/openapi.yaml`). A wheel carries
copies in `gateway/_data/` (setup.py puts them there), so an installed gateway runs from any
directory; a checkout or an editable install has no copies and reads the sources.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGED = Path(__file__).resolve().parent / "_data"
_CHECKOUT = Path(__file__).resolve().parents[1]


def schema_dir() -> Path:
    """The directory of numbered SQL migrations (`NNN_name.sql`, dialect files in `sqlite/`)."""
    packaged = _PACKAGED / "schema"
    return packaged if packaged.is_dir() else _CHECKOUT / "schema"


def openapi_path() -> Path:
    """The OpenAPI document served at `/api/openapi.yaml`."""
    packaged = _PACKAGED / "openapi.yaml"
    return packaged if packaged.is_file() else _CHECKOUT / "docs" / "openapi.yaml"
