"""The metrics journal: what a process held unwritten survives its death, and only then."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from gateway.core.journal import Journal

CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from gateway.core.journal import Journal

    journal = Journal(Path(sys.argv[1]), "metrics")
    for i in range(int(sys.argv[2])):
        journal.append(["npc", "m", float(i), i])
    journal.release(int(sys.argv[3]))
    print("ready", flush=True)
    sys.stdin.read()  # until killed
    """
)


def _journaling_child(directory: Path, rows: int, released: int) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(directory), str(rows), str(released)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stdout.readline() == "ready\n"
    return child


def _adopt_all(journal: Journal) -> list[list[object]]:
    records: list[list[object]] = []
    for orphan in journal.adopt_orphans():
        records.extend(orphan.records)
        journal.discard(orphan)
    return records


def test_rows_of_a_killed_process_are_adopted_once(tmp_path: Path) -> None:
    child = _journaling_child(tmp_path, rows=5, released=2)
    survivor = Journal(tmp_path, "metrics")
    try:
        assert _adopt_all(survivor) == []  # its owner is alive: not an orphan
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert _adopt_all(survivor) == [["npc", "m", float(i), i] for i in (2, 3, 4)]
        assert _adopt_all(Journal(tmp_path, "metrics")) == []  # gone once adopted
    finally:
        survivor.close()
        child.kill()
        child.wait()
        assert child.stdin is not None and child.stdout is not None
        child.stdin.close()
        child.stdout.close()


def test_released_rows_leave_nothing_behind(tmp_path: Path) -> None:
    journal = Journal(tmp_path, "metrics", segment_max_bytes=64)
    for i in range(100):
        journal.append(["npc", "m", float(i), i])
    assert journal.segments > 1 and journal.held == 100
    journal.release(60)
    assert journal.held == 40
    journal.release(40)
    assert journal.held == 0 and journal.segments == 1
    assert [p.stat().st_size for p in tmp_path.iterdir()] == [0]  # emptied, not re-created
    journal.close()
    assert list(tmp_path.iterdir()) == []


def test_a_clean_close_with_unwritten_rows_leaves_them_for_the_next_start(tmp_path: Path) -> None:
    journal = Journal(tmp_path, "metrics")
    journal.append(["npc", "m", 1.0, 1])
    journal.close()  # e.g. shutdown while the database was down
    assert _adopt_all(Journal(tmp_path, "metrics")) == [["npc", "m", 1.0, 1]]


def test_a_record_torn_by_the_kill_is_skipped(tmp_path: Path) -> None:
    journal = Journal(tmp_path, "metrics")
    journal.append(["npc", "m", 1.0, 1])
    segment = next(tmp_path.iterdir())
    with segment.open("ab") as f:
        f.write(b"\x94\xa3np")  # the first bytes of a second record
    journal.close()
    assert _adopt_all(Journal(tmp_path, "metrics")) == [["npc", "m", 1.0, 1]]


def test_other_prefixes_and_files_being_born_are_left_alone(tmp_path: Path) -> None:
    (tmp_path / "events-1-1-0.seg").write_bytes(b"\x90")
    (tmp_path / ".new-metrics-1-1-0.seg").write_bytes(b"")  # fresh: its creator may be alive
    assert _adopt_all(Journal(tmp_path, "metrics")) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".new-metrics-1-1-0.seg",
        "events-1-1-0.seg",
    ]
    old = tmp_path / ".new-metrics-1-1-0.seg"
    os.utime(old, (0, 0))  # left by a process killed between create and rename
    assert _adopt_all(Journal(tmp_path, "metrics")) == []
    assert not old.exists()
