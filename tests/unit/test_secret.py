"""The token secret (§2): at least 32 bytes, created atomically on first start."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from gateway.config import MIN_SECRET_BYTES, ConfigError, Settings, load_or_create_secret


def test_replicas_starting_at_once_end_with_one_full_secret(tmp_path: Path) -> None:
    """Before the fix one racer read the file between its creation and its write (empty)."""
    for round_no in range(60):
        data_dir = tmp_path / str(round_no)
        start = threading.Barrier(4)
        found: list[str | BaseException] = []

        def racer(
            data_dir: Path = data_dir,
            start: threading.Barrier = start,
            found: list[str | BaseException] = found,
        ) -> None:
            start.wait()
            try:
                found.append(load_or_create_secret(data_dir))
            except BaseException as exc:  # recorded and asserted below
                found.append(exc)

        threads = [threading.Thread(target=racer) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(set(map(str, found))) == 1, found
        assert isinstance(found[0], str) and len(found[0].encode()) >= MIN_SECRET_BYTES
        assert sorted(p.name for p in data_dir.iterdir()) == ["secret"]  # no temp file left
        assert (data_dir / "secret").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("length", [0, 1, MIN_SECRET_BYTES - 1])
def test_short_secret_in_the_environment_is_refused(tmp_path: Path, length: int) -> None:
    env = {"GATEWAY_DATA_DIR": str(tmp_path), "GATEWAY_SECRET": "s" * length}
    if length == 0:  # empty means unset: a secret file is generated instead
        assert len(Settings.from_env(env).secret) >= MIN_SECRET_BYTES
        return
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        Settings.from_env(env)


def test_secret_of_exactly_32_bytes_is_accepted(tmp_path: Path) -> None:
    env = {"GATEWAY_DATA_DIR": str(tmp_path), "GATEWAY_SECRET": "é" * 16}  # 32 bytes, 16 chars
    assert Settings.from_env(env).secret == "é" * 16
    with pytest.raises(ConfigError):
        Settings.from_env({**env, "GATEWAY_SECRET": "s" * 15 + "é" * 8})  # 31 bytes


@pytest.mark.parametrize("content", ["", "\n", "short-secret\n"])
def test_short_secret_file_is_refused(tmp_path: Path, content: str) -> None:
    (tmp_path / "secret").write_text(content)
    with pytest.raises(ConfigError, match="secret"):
        Settings.from_env({"GATEWAY_DATA_DIR": str(tmp_path)})
