"""Read cache in three tiers: the :class:`Cache` interface and its backends."""

from gateway.cache.base import COLD_TTL_S, HOT_TTL_S, WARM_TTL_S, Cache
from gateway.cache.memory import MemoryCache

__all__ = ["COLD_TTL_S", "HOT_TTL_S", "WARM_TTL_S", "Cache", "MemoryCache"]
