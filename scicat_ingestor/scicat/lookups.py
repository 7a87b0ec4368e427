"""A short-lived cache of the SciCat answers schemas look up (``SC`` variables), per URL.

Every file of one proposal asks SciCat the same questions (the proposal, the instrument): two of
the six requests per file. Files of one run arrive seconds apart, so a cache of a few seconds
answers nearly all of them while an edit in SciCat (a PI corrected) reaches the next files within
``scicat.lookup_cache_seconds``. Only answers are cached: an error (404 included) is asked again
by the next file, so a proposal created just before its files are written is seen at once. Each
hit is a deep copy, so no caller can change what the next one gets.
"""

from __future__ import annotations

import copy
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

MAX_ENTRIES = 1024  # distinct URLs kept; the oldest go first


class LookupCache:
    """``get(url)``: ``fetch(url)``'s answer, reused for ``seconds`` (0 = no caching)."""

    def __init__(
        self,
        fetch: Callable[[str], Any],
        seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._seconds = max(float(seconds), 0.0)
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[float, Any]] = OrderedDict()

    def get(self, url: str) -> Any:
        if not self._seconds:
            return self._fetch(url)
        now = self._clock()
        with self._lock:
            hit = self._entries.get(url)
        if hit is not None and hit[0] > now:
            return copy.deepcopy(hit[1])
        answer = self._fetch(url)  # outside the lock: other URLs need not wait for this one
        with self._lock:
            self._entries[url] = (now + self._seconds, copy.deepcopy(answer))
            self._entries.move_to_end(url)
            while len(self._entries) > MAX_ENTRIES:
                self._entries.popitem(last=False)
        return answer
