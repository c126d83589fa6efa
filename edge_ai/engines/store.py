"""Where cache entries live: one interface, two backends.

`DiskStore` (the embedded default) is diskcache over SQLite: each write is one transaction, never
half-written. `RedisStore` (engines/redis_store.py) puts the entries of several replicas in one Redis.
An entry carries its embedding, so an index is rebuilt from the store without re-embedding.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from abc import ABC, abstractmethod
from typing import Any, Iterator, Protocol

import diskcache
import numpy as np

from edge_ai.errors import EdgeError
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
    backend: str = ""  # the pool's inference server that wrote a local answer ("" = in-process)

    def vec(self) -> np.ndarray:
        return np.frombuffer(self.vector, dtype=np.float32)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Follower(Protocol):
    """What a store that publishes its changes (`Store.follows`) tells the cache holding its index."""

    def added(self, entry: Entry) -> None: ...  # written or replaced (by any replica)
    def removed(self, id_: str) -> None: ...  # deleted or purged
    def reset(self, entries: Iterator[Entry]) -> None: ...  # everything there is now: rebuild from it


class StoreUnavailable(EdgeError):
    """The store cannot be reached: lookups miss, writes fail (loudly), answers keep flowing; an admin
    change that cannot be made is a 503."""

    status = 503
    kind = "store_unavailable"


class Store(ABC):
    ttl: float | None
    # A store that publishes its changes calls a Follower from a thread of its own (follow()); one that
    # does not is polled: the cache compares generation() and indexes what is new.
    follows = False

    @property
    @abstractmethod
    def where(self) -> str: """Where the entries are, for logs and `cache stats` (never a password)."""

    @property
    def directory(self) -> Path | None:
        """A local directory for files beside the entries (the index's saved lists), if there is one."""
        return None

    @abstractmethod
    def get(self, id_: str) -> Entry | None: """The entry, confirmed in the store: what a request may serve."""

    async def fetch(self, id_: str) -> Entry | None:
        """`get` for the request path: a store behind a network round trip does not block the event loop."""
        return self.get(id_)

    async def fetch_many(self, ids: list[str]) -> list[Entry | None]:
        return [self.get(i) for i in ids]

    @abstractmethod
    def read(self, id_: str) -> Entry | None: """The entry, for scans over the whole store."""

    @abstractmethod
    def put(self, entry: Entry) -> None: """Write (or replace) one entry, whole or not at all."""

    @abstractmethod
    def delete(self, id_: str) -> bool: ...

    @abstractmethod
    def ids(self) -> Iterator[str]: ...

    @abstractmethod
    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[Entry]:
        for key in self.ids():
            entry = self.read(key)  # an entry may expire between listing and reading
            if entry is not None:
                yield entry

    def generation(self) -> int:
        return 0

    def forget(self) -> None:
        """Drop in-memory copies (another process changed the store)."""

    def follow(self, follower: Follower, wait: float = 30.0) -> bool:
        raise NotImplementedError

    def stats(self) -> dict[str, object]:
        return {"backend": "disk"}

    def expire(self) -> int:
        return 0

    def close(self) -> None:
        pass


_GENERATION = "__generation__"  # bumped by every writer, so other processes know to re-index
HOT_ENTRIES = 4096  # entries memoised in memory (most recently used)


class DiskStore(Store):
    """The most recently used entries are also kept in memory: an exact hit is a read, and SQLite plus
    unpickling is a fifth of its cost. Writes and deletes through this store update that memo at once;
    another process's (`edge-ai warm`, `cache purge`) are seen when the owner calls `forget()` on a
    generation change."""

    def __init__(self, directory: str | Path, ttl: float | None = None) -> None:
        self._directory = Path(directory)
        self._directory.mkdir(parents=True, exist_ok=True)
        self.ttl = ttl
        # size_limit: the cache is the product's memory of good answers; never evict silently
        self._db = diskcache.Cache(str(self._directory / "entries"), size_limit=2**62, eviction_policy="none")
        self._hot = Recent(HOT_ENTRIES)  # id -> Entry
        self._hot_lock = threading.Lock()  # writes and index loads run on worker threads

    @property
    def where(self) -> str:
        return str(self._directory)

    @property
    def directory(self) -> Path:
        return self._directory

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

    def expire(self) -> int:
        return int(self._db.expire())

    def close(self) -> None:
        self._db.close()


def open_store(settings: Any) -> Store:
    """The store the settings name: `cache_backend` disk (cache_dir) or redis (redis_url)."""
    if settings.cache_backend == "redis":
        from edge_ai.engines.redis_store import RedisStore

        return RedisStore(settings.redis_url, settings.cache_ttl, settings.redis_prefix, settings.redis_stream_len)
    return DiskStore(settings.cache_dir, settings.cache_ttl)
