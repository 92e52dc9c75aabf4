"""Learning profiles that learn from `task:completed` / `task:failed` events. Pure.

A profile is a JSON map the store updates atomically with `apply_task`; operators may also
replace it with PUT. Only the keys below are maintained; anything else an operator put in
the profile is kept as it is.

    {"tasks": {"total", "succeeded", "failed", "successRate"},
     "experience": total xp, "level": from experience,
     "skills": {skill: {"experience", "level", "succeeded", "failed"}},
     "lastTask": {"task", "ok", "skill", "xp", "at"}}
"""

from __future__ import annotations

import math
from typing import Any

from gateway.protocol import MAX_NAME, ErrorCode, ProtocolError, clean_text

TASK_EVENTS = ("task:completed", "task:failed")
MAX_XP = 1_000_000.0


def level_for(experience: float) -> int:
    """Level 1 at 0 xp, then each level costs 100 xp more than the last (100, 200, 300…)."""
    # Solve 50·L·(L-1) <= xp for the largest whole L.
    return int((1 + math.sqrt(1 + experience / 12.5)) / 2)


def parse_task(name: str, data: dict[str, Any], ref: Any) -> tuple[bool, str, float, str | None]:
    """(ok, task, xp, skill) of a task event; `bad_message` if its data is malformed."""
    task, xp, skill = data.get("task"), data.get("xp", 0), data.get("skill")
    if not clean_text(task, MAX_NAME):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "task events need data.task (a string)", ref)
    if type(xp) not in (int, float) or not math.isfinite(xp) or not 0 <= xp <= MAX_XP:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "data.xp must be a number 0-1e6", ref)
    if skill is not None and not clean_text(skill, MAX_NAME):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "data.skill must be a string", ref)
    return name == "task:completed", task, float(xp), skill


def apply_task(
    profile: dict[str, Any], ok: bool, task: str, xp: float, skill: str | None, at_ms: int
) -> dict[str, Any]:
    """The profile after one task outcome (a new map; `profile` is not changed)."""
    out = dict(profile)
    tasks = dict(out.get("tasks") or {})
    total = int(tasks.get("total", 0)) + 1
    succeeded = int(tasks.get("succeeded", 0)) + (1 if ok else 0)
    failed = int(tasks.get("failed", 0)) + (0 if ok else 1)
    out["tasks"] = {
        "total": total,
        "succeeded": succeeded,
        "failed": failed,
        "successRate": round(succeeded / total, 4),
    }
    gained = xp if ok else 0.0  # a failed task teaches nothing measurable
    out["experience"] = float(out.get("experience", 0.0)) + gained
    out["level"] = level_for(out["experience"])
    if skill is not None:
        skills = dict(out.get("skills") or {})
        entry = dict(skills.get(skill) or {})
        entry["experience"] = float(entry.get("experience", 0.0)) + gained
        entry["level"] = level_for(entry["experience"])
        entry["succeeded"] = int(entry.get("succeeded", 0)) + (1 if ok else 0)
        entry["failed"] = int(entry.get("failed", 0)) + (0 if ok else 1)
        skills[skill] = entry
        out["skills"] = skills
    out["lastTask"] = {"task": task, "ok": ok, "skill": skill, "xp": gained, "at": at_ms}
    return out
