"""A small bounded cache with a time to live, for directory look-ups (thread-safe).

Directory data changes slowly (RPPS and FINESS are updated daily at most), and the same practitioner
comes back in many messages: a few minutes to hours of caching spare the national API and our
latency. Bounded in entries (least recently used goes first) so that a long sync cannot grow it
without limit.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

V = TypeVar("V")


class TTLCache(Generic[V]):
    def __init__(self, ttl: float, size: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.size = size
        self._clock = clock
        self._items: OrderedDict[tuple[str, str], tuple[float, V]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> tuple[bool, V | None]:
        """(found, value): a cached None (a known "not in the directory") is found too."""
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return False, None
            expires, value = item
            if expires <= self._clock():
                del self._items[key]
                return False, None
            self._items.move_to_end(key)
            return True, value

    def put(self, key: tuple[str, str], value: V) -> None:
        if self.ttl <= 0 or self.size <= 0:
            return
        with self._lock:
            self._items[key] = (self._clock() + self.ttl, value)
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)
