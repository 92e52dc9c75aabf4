"""Finding migrations: an empty or missing schema directory is an error, never "none pending"."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.store.migrations import MigrationsMissing, discover


@pytest.mark.parametrize("dialect", ["postgres", "sqlite"])
def test_no_migration_files_is_an_error(tmp_path: Path, dialect: str) -> None:
    (tmp_path / "notes.txt").write_text("not a migration")
    with pytest.raises(MigrationsMissing, match="no migrations"):
        discover(dialect, tmp_path)  # type: ignore[arg-type]
    with pytest.raises(MigrationsMissing):
        discover(dialect, tmp_path / "absent")  # type: ignore[arg-type]


def test_the_sqlite_file_replaces_the_postgres_one(tmp_path: Path) -> None:
    (tmp_path / "sqlite").mkdir()
    (tmp_path / "001_init.sql").write_text("-- pg")
    (tmp_path / "sqlite" / "001_init.sql").write_text("-- sqlite")
    (tmp_path / "002_more.sql").write_text("-- both")
    assert [(m.name, m.sql) for m in discover("sqlite", tmp_path)] == [
        ("001_init", "-- sqlite"),
        ("002_more", "-- both"),
    ]
    assert [m.sql for m in discover("postgres", tmp_path)] == ["-- pg", "-- both"]
