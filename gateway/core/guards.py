"""Circuit breakers around the database and Redis presence, as drop-in wrappers of the ports.

- `GuardedStore`: every store call goes through the `database` breaker. While it is OPEN calls
  fail at once with `StoreUnavailable` (callers already handle that: writers keep what they
  hold and retry, REST answers 503), so a dead database costs microseconds, not timeouts.
- `GuardedPresence`: presence calls go through the `redis` breaker; when Redis is unreachable
  presence degrades to what this replica knows (its own bots) instead of failing requests.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Collection
from typing import Any

from gateway.breaker import CircuitBreaker
from gateway.presence import Presence
from gateway.store import Store, StoreUnavailable

log = logging.getLogger(__name__)


class GuardedStore:
    """A Store whose async methods run through a breaker; other attributes pass through."""

    def __init__(self, store: Store, breaker: CircuitBreaker) -> None:
        self._store = store
        self._breaker = breaker
        self.backend = store.backend

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        # Maintenance runs long by design (batches) and must not trip the breaker's 5 s timeout.
        unguarded = ("open", "close", "migrate", "maintain_metrics")
        if not asyncio.iscoroutinefunction(attr) or name in unguarded:
            return attr

        @functools.wraps(attr)
        async def guarded(*args: Any, **kwargs: Any) -> Any:
            breaker = self._breaker
            if not breaker.allow():
                raise StoreUnavailable(
                    f"database circuit open (retry in {breaker.retry_after():.0f} s)"
                )
            try:
                async with asyncio.timeout(breaker.config.timeout):
                    result = await attr(*args, **kwargs)
            except (StoreUnavailable, TimeoutError) as exc:
                breaker.record_failure()
                raise StoreUnavailable(str(exc) or "database call timed out") from exc
            except Exception:
                breaker.record_success()  # the database answered; the input was bad
                raise
            except BaseException:
                breaker.release()  # cancelled: no outcome, but free a trial slot
                raise
            breaker.record_success()
            return result

        return guarded

    def stats(self) -> dict[str, Any]:
        return self._store.stats()


class GuardedPresence:
    """Presence through the `redis` breaker, degrading to local knowledge when it is down.

    `online` adds what this replica knows itself (`known_online`: its own bots and those the
    others announced) to what Redis says. Claims vanish from a Redis that restarted empty
    until their holders' next heartbeat; a snapshot built meanwhile would show those bots
    offline, and no `joined` would ever correct it, because `joined` / `left` are computed
    from this same local knowledge, which did not change (docs/reliability.md).
    """

    def __init__(
        self,
        presence: Presence,
        breaker: CircuitBreaker,
        replica: str,
        local_bots: Callable[[], Collection[str]],
        known_online: Callable[[], Collection[str]] | None = None,
    ) -> None:
        self._presence = presence
        self._breaker = breaker
        self._replica = replica
        self._local = local_bots
        self._known = known_online or local_bots

    async def _call(self, method: str, *args: Any, probe: bool = False) -> tuple[bool, Any]:
        """(ok, result). A `probe` goes through even while the breaker is open: the heartbeat
        keeps this replica's claims alive the moment Redis is back."""
        breaker = self._breaker
        if not probe and not breaker.allow():
            return False, None
        try:
            async with asyncio.timeout(breaker.config.timeout):
                result = await getattr(self._presence, method)(*args)
        except Exception as exc:
            breaker.record_failure()
            log.warning("presence %s failed: %s", method, exc)
            return False, None
        except BaseException:
            breaker.release()
            raise
        breaker.record_success()
        return True, result

    async def claim(self, npc_id: str, replica: str) -> str | None:
        ok, previous = await self._call("claim", npc_id, replica)
        return previous if ok else None

    async def release(self, npc_id: str, replica: str) -> None:
        await self._call("release", npc_id, replica)

    async def holder(self, npc_id: str) -> str | None:
        ok, holder = await self._call("holder", npc_id)
        if ok:
            return holder
        return self._replica if npc_id in self._local() else None

    async def online(self, npc_ids: Collection[str] | None = None) -> set[str]:
        ok, found = await self._call("online", npc_ids)
        known = set(self._known()) if npc_ids is None else set(npc_ids).intersection(self._known())
        return known | found if ok else known

    async def refresh(self, replica: str, npc_ids: Collection[str]) -> set[str]:
        """Heartbeat; returns the ids another replica has taken over (when the backend knows)."""
        method = "refresh_held" if hasattr(self._presence, "refresh_held") else "refresh"
        ok, lost = await self._call(method, replica, npc_ids, probe=True)
        return set(lost or ()) if ok else set()

    async def close(self) -> None:
        await self._presence.close()
