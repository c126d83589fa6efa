"""The last minutes of traffic in 5-second buckets, for the dashboard: answers by source, errors,
latency percentiles. Prometheus holds the long history; this is what an operator reads at a glance."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field

BUCKET_S = 5
BUCKETS = 120  # ten minutes
SAMPLES = 256  # latencies kept per bucket (a uniform sample past that)


@dataclass
class _Bucket:
    start: int
    sources: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    refused: int = 0
    seen: int = 0
    latencies: list[float] = field(default_factory=list)
    first_bytes: list[float] = field(default_factory=list)


class Timeline:
    def __init__(self) -> None:
        self._buckets: list[_Bucket] = []
        self._lock = threading.Lock()

    def add(self, source: str, status: int, seconds: float, first_byte_s: float | None) -> None:
        now = int(time.time()) // BUCKET_S * BUCKET_S
        with self._lock:
            if not self._buckets or self._buckets[-1].start != now:
                self._buckets.append(_Bucket(now))
                del self._buckets[:-BUCKETS]
            b = self._buckets[-1]
            if status in (401, 403, 429, 529):
                b.refused += 1
            elif status >= 400:
                b.errors += 1
            if not source:
                return
            b.sources[source] = b.sources.get(source, 0) + 1
            b.seen += 1
            _sample(b.latencies, seconds, b.seen)
            if first_byte_s is not None:
                _sample(b.first_bytes, first_byte_s, b.seen)

    def series(self, minutes: int = 10) -> dict[str, object]:
        """Per bucket over the last `minutes`: counts by source, hit ratio, p50/p99 latency (ms)."""
        now = int(time.time()) // BUCKET_S * BUCKET_S
        first = now - (minutes * 60 // BUCKET_S - 1) * BUCKET_S
        with self._lock:
            by_start = {b.start: b for b in self._buckets if b.start >= first}
            rows = []
            for start in range(first, now + 1, BUCKET_S):
                b = by_start.get(start) or _Bucket(start)
                answered = sum(b.sources.values())
                hits = b.sources.get("cache", 0)
                rows.append({
                    "t": start,
                    "cloud": b.sources.get("cloud", 0), "cache": hits, "local": b.sources.get("local", 0),
                    "errors": b.errors, "refused": b.refused,
                    "hit_ratio": hits / answered if answered else None,
                    "p50_ms": _pct(b.latencies, 0.50), "p99_ms": _pct(b.latencies, 0.99),
                    "ttft_p50_ms": _pct(b.first_bytes, 0.50),
                })
        return {"bucket_s": BUCKET_S, "rows": rows}


def _sample(values: list[float], x: float, seen: int) -> None:
    if len(values) < SAMPLES:
        values.append(x)
    else:  # reservoir sampling: every request of the bucket equally likely to be kept
        j = random.randrange(seen)
        if j < SAMPLES:
            values[j] = x


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)
