"""One object per owner: what replicas in one process (tests) share with the in-process bus
broker they share, made on first use and gone with the broker."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class PerOwner(Generic[T]):
    """Call with an owner to get its one T, made by `make` the first time."""

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._of: weakref.WeakKeyDictionary[Any, T] = weakref.WeakKeyDictionary()

    def __call__(self, owner: Any) -> T:
        made = self._of.get(owner)
        if made is None:
            made = self._of[owner] = self._make()
        return made
