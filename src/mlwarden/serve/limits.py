"""Per-key query limits: a token bucket for the rate and a fixed-window budget.

Both count *queries* (single inputs; a batch of 8 costs 8) because that is what an
attacker spends (ATLAS AML.M0004, Restrict Number of AI Model Queries). When a
request would go over either, :meth:`KeyLimiter.take` returns how many seconds to
wait, which the gateway sends back as ``Retry-After`` with HTTP 429.

Example::

    limiter = KeyLimiter(rate=10, burst=20, budget=1000, window_s=3600)
    limiter.take(5)          # (0.0, ""): allowed
    limiter.take(100)        # (2.5, "rate"): wait 2.5 s (or "budget": the window is spent;
                             # "throttled": the monitor slowed this key down)
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable

import orjson


class KeyLimiter:
    """Token bucket (``rate`` queries/s, ``burst`` capacity) plus a query budget.

    ``None`` for rate or budget disables that limit. A throttle factor (set by the
    attack monitor) scales the refill rate down. Thread-safe.
    """

    def __init__(
        self,
        *,
        rate: float | None,
        burst: int | None,
        budget: int | None,
        window_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = float(burst if burst is not None else max(1.0, math.ceil(rate or 1.0)))
        self.budget = budget
        self.window_s = window_s
        self.factor = 1.0
        self._clock = clock
        now = clock()
        self._tokens = self.burst
        self._stamp = now
        self._window_start = now
        self._used = 0
        self._lock = threading.Lock()

    def throttle(self, factor: float) -> None:
        """Scale the refill rate by ``factor`` (0 < factor <= 1) from now on."""
        with self._lock:
            self.factor = min(self.factor, factor)

    def check(self) -> tuple[float, str]:
        """Whether one more query could pass now, spending nothing (checked on headers).

        Returns ``(0.0, "")`` or ``(seconds to wait, "rate" or "budget")``, so a caller
        that is out of tokens or budget is refused before its body is read.
        """
        with self._lock:
            now = self._clock()
            if self.budget is not None:
                fresh = now - self._window_start >= self.window_s
                if not fresh and self._used >= self.budget:
                    return max(self._window_start + self.window_s - now, 0.001), "budget"
            if self.rate is not None:
                rate = self.rate * self.factor
                tokens = self._refilled(now, rate)
                if tokens < 1.0:
                    return (1.0 - tokens) / rate, self._rate_reason()
            return 0.0, ""

    def take(self, n: int) -> tuple[float, str]:
        """Spend ``n`` queries.

        Returns ``(0.0, "")`` when allowed, else ``(seconds to wait, "rate" or "budget")``
        and nothing is spent.
        """
        with self._lock:
            now = self._clock()
            if self.budget is not None:
                if now - self._window_start >= self.window_s:
                    elapsed = now - self._window_start
                    self._window_start += self.window_s * math.floor(elapsed / self.window_s)
                    self._used = 0
                if self._used + n > self.budget:
                    return max(self._window_start + self.window_s - now, 0.001), "budget"
            if self.rate is not None:
                rate = self.rate * self.factor
                self._tokens = self._refilled(now, rate)
                self._stamp = now
                if n > self.burst:
                    # Can never fit: say when a full bucket would be back, the caller must split.
                    return max((self.burst - self._tokens) / rate, 1.0), self._rate_reason()
                if self._tokens < n:
                    return (n - self._tokens) / rate, self._rate_reason()
                self._tokens -= n
            self._used += n
            return 0.0, ""

    def refused(self) -> None:
        """Spend one token for a request whose body was read and then refused (408, 413,
        422), and none of the budget (no query reached the model).

        :meth:`check` lets a request read its body only while a token is left, but a
        refused body spent none: a key at 1 query/s could make the gateway receive and
        parse a megabyte of bad JSON as fast as it sent it (328 in 14 s, every one 422,
        other clients slowed from 586 to 32 requests/s). The debt is bounded by one
        bucket, so concurrent refusals wait at most ``2 * burst / rate`` seconds.
        """
        if self.rate is None:
            return
        with self._lock:
            now = self._clock()
            tokens = self._refilled(now, self.rate * self.factor)
            self._tokens = max(tokens - 1.0, -self.burst)
            self._stamp = now

    def _refilled(self, now: float, rate: float) -> float:
        """The bucket's tokens at ``now``: refilled at ``rate`` since the last stamp, at
        most ``burst`` (the caller holds the lock and decides whether to store them)."""
        return min(self.burst, self._tokens + (now - self._stamp) * rate)

    def _rate_reason(self) -> str:
        # A key slowed down by the attack monitor is told so, not that it sent too fast.
        return "throttled" if self.factor < 1.0 else "rate"

    @property
    def effective_rate(self) -> float | None:
        """Queries per second the bucket refills at now (after any throttle)."""
        return None if self.rate is None else self.rate * self.factor

    def snapshot(self) -> bytes:
        """Budget use, its window and the throttle factor, to outlive a restart (JSON).

        The window start is stored as wall-clock time; the token bucket is not stored (it
        refills within ``burst / rate`` seconds anyway).
        """
        with self._lock:
            start = time.time() - (self._clock() - self._window_start)
            data = {"window_start": start, "used": self._used, "factor": self.factor}
        # written with every request of a key with a budget: orjson, 1.1 us against 6.8
        return orjson.dumps(data)

    def restore(self, blob: bytes) -> None:
        """Take budget use, window and throttle back from :meth:`snapshot` (bad data: ignored)."""
        try:
            data = json.loads(blob)
            start, used, factor = (
                float(data["window_start"]),
                int(data["used"]),
                float(data["factor"]),
            )
        except (ValueError, KeyError, TypeError):
            return
        with self._lock:
            self._window_start = self._clock() - (time.time() - start)
            self._used = max(used, 0)
            self.factor = min(max(factor, 1e-6), 1.0)

    def remaining_budget(self) -> int | None:
        with self._lock:
            return None if self.budget is None else self.budget - self._used
