"""Persistent cache entries (diskcache over SQLite: each write is one transaction, never half-written).

An entry carries its embedding, so a restart rebuilds the vector index without re-embedding. The most
recently used entries are also kept in memory: an exact hit is a read, and SQLite plus unpickling is a
fifth of its cost. Writes and deletes through this Store update that memo at once; another process's
(`edge-ai warm`, `cache purge`) are seen when the owner calls `forget()` on a generation change.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import diskcache
import numpy as np

from edge_ai.recent import Recent


@dataclass
class Entry:
    id: str  # exact key: scope + query
    scope_key: str
    scope: dict[str, Any]
    query: str
    answer: str
    finish_reason: str
    completion_tokens: int
    max_tokens: int | None  # what the answer was asked with (a "length" answer only serves the same)
    source: str  # "local" | "cloud" | "import"
    vector: bytes = b""
    created: float = field(default_factory=time.time)

    def vec(self) -> np.ndarray:
        return np.frombuffer(self.vector, dtype=np.float32)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_GENERATION = "__generation__"  # bumped by every writer, so other processes know to re-index
HOT_ENTRIES = 4096  # entries memoised in memory (most recently used)


class Store:
    def __init__(self, directory: str | Path, ttl: float | None = None) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.ttl = ttl
        # size_limit: the cache is the product's memory of good answers; never evict silently
        self._db = diskcache.Cache(str(self.directory / "entries"), size_limit=2**62, eviction_policy="none")
        self._hot = Recent(HOT_ENTRIES)  # id -> Entry
        self._hot_lock = threading.Lock()  # writes and index loads run on worker threads

    def get(self, id_: str) -> Entry | None:
        with self._hot_lock:
            entry = self._hot.recall(id_)
            if entry is not None:
                if self.ttl is None or time.time() < entry.created + self.ttl:
                    return entry
                del self._hot[id_]  # expired: diskcache decides (and will say it is gone)
        entry = self.read(id_)
        if entry is not None:
            self._remember(entry)
        return entry

    def read(self, id_: str) -> Entry | None:
        """From disk, bypassing the memo: for scans over the whole store."""
        raw = self._db.get(id_)
        return Entry(**raw) if raw is not None else None

    def put(self, entry: Entry) -> None:
        with self._db.transact():
            self._db.set(entry.id, entry.to_dict(), expire=self.ttl)
            self._db.incr(_GENERATION)
        self._remember(entry)  # only once it is on disk

    def delete(self, id_: str) -> bool:
        with self._hot_lock:
            self._hot.pop(id_, None)
        with self._db.transact():
            gone = bool(self._db.delete(id_))
            self._db.incr(_GENERATION)
        return gone

    def forget(self) -> None:
        """Drop the in-memory copies (another process changed the store)."""
        with self._hot_lock:
            self._hot.clear()

    def _remember(self, entry: Entry) -> None:
        with self._hot_lock:
            self._hot.remember(entry.id, entry)

    def generation(self) -> int:
        return int(self._db.get(_GENERATION, 0))

    def ids(self) -> Iterator[str]:
        return (k for k in self._db.iterkeys() if k != _GENERATION)

    def __len__(self) -> int:
        return len(self._db) - (_GENERATION in self._db)

    def __iter__(self) -> Iterator[Entry]:
        for key in self.ids():
            entry = self.read(key)  # an entry may expire between listing and reading
            if entry is not None:
                yield entry

    def expire(self) -> int:
        return int(self._db.expire())

    def close(self) -> None:
        self._db.close()
