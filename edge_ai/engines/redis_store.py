"""Cache entries in Redis, shared by every replica: Redis is the source of truth, each replica keeps its own
vector index and follows every change through a Redis Stream.

Key layout (`{prefix}` is a Redis Cluster hash tag, so one cache's keys share a slot, as a Lua script
touching several keys needs):

    {prefix}:e:<entry id>   string: 4-byte big-endian length of the entry's JSON (all but the vector),
                                  the JSON, then the float32 vector bytes; its Redis expiry is the cache TTL.
                                  One string, not a hash: a batch of reads is one MGET.
    {prefix}:log            stream of changes, one record per write: op = put | del, id = <entry id>;
                                  trimmed (approximately) to redis_stream_len records
    {prefix}:epoch          random token, set when the cache's data begins; a replica that finds another
                                  (FLUSHALL, a Redis restarted without persistence) rebuilds its index

A write is one Lua script: entry and stream record together, or neither. A replica rebuilds from Redis
(records the stream's last id first, scans the entries, then replays from that id) when it starts,
reconnects, finds the epoch changed, or finds records it never read trimmed away.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import threading
import time
from typing import Any, Iterator
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio

from edge_ai.engines.store import HOT_ENTRIES, Entry, Follower, Store, StoreUnavailable
from edge_ai.recent import Recent

log = logging.getLogger("edge_ai.redis")

_DOWN = (redis.ConnectionError, redis.TimeoutError, OSError, asyncio.TimeoutError)

# KEYS: entry, log, epoch. ARGV: fresh epoch, ttl ms (0 = none), stream length, id, the entry's bytes.
# Returns the epoch the write went into: a writer that finds another than it knew has missed a flush.
_PUT = """
local epoch = redis.call('GET', KEYS[3])
if not epoch then redis.call('SET', KEYS[3], ARGV[1]); epoch = ARGV[1] end
if tonumber(ARGV[2]) > 0 then redis.call('SET', KEYS[1], ARGV[5], 'PX', ARGV[2])
else redis.call('SET', KEYS[1], ARGV[5]) end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'op', 'put', 'id', ARGV[4])
return epoch
"""

# KEYS: entry, log. ARGV: stream length, id. Returns 1 if the entry was there.
_DELETE = """
local gone = redis.call('DEL', KEYS[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', 'op', 'del', 'id', ARGV[2])
return gone
"""


def redact(url: str) -> str:
    """The URL without its password: what logs and `cache stats` show."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _sid(raw: bytes | str) -> tuple[int, int]:
    ms, _, seq = (raw.decode() if isinstance(raw, bytes) else raw).partition("-")
    return int(ms), int(seq or 0)


def _encode(entry: Entry) -> bytes:
    meta = entry.to_dict()
    vector = meta.pop("vector")
    text = json.dumps(meta, ensure_ascii=False).encode()
    return len(text).to_bytes(4, "big") + text + vector


def _decode(blob: bytes | None) -> Entry | None:
    if not blob:
        return None
    n = int.from_bytes(blob[:4], "big")
    return Entry(**json.loads(blob[4 : 4 + n]), vector=blob[4 + n :])


class _Confirmer:
    """Request-path reads, pipelined: every read asked while one round trip is out goes in the next, so
    a round trip (~0.15 ms here) is paid per batch, not per hit, and the event loop never waits on it."""

    def __init__(self, store: "RedisStore") -> None:
        self.store = store
        self._client: redis.asyncio.Redis | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._asked: list[tuple[str, asyncio.Future[Entry | None]]] = []
        self._sending = False
        self._decoded = Recent(HOT_ENTRIES)  # key -> (bytes, Entry): the same bytes read again are not decoded again

    async def read(self, keys: list[str]) -> list[Entry | None]:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a client and its connections belong to one loop (a server has one)
            self._loop, self._client, self._asked, self._sending = loop, None, [], False
        futures = [loop.create_future() for _ in keys]
        self._asked += zip(keys, futures)
        if not self._sending:
            self._sending = True
            loop.create_task(self._send())
        return list(await asyncio.gather(*futures))

    async def _send(self) -> None:
        try:
            while self._asked:
                batch, self._asked = self._asked, []
                try:
                    if self._client is None:  # made on first use: a client belongs to the loop that runs it
                        self._client = redis.asyncio.Redis.from_url(
                            self.store.url, socket_timeout=self.store.timeout, socket_connect_timeout=self.store.timeout)
                    found = [self._decode_once(key, b) for (key, _), b in zip(batch, await self._client.mget([k for k, _ in batch]))]
                except _DOWN as exc:
                    self.store._failed(exc)
                    found = [None] * len(batch)
                for (_, fut), entry in zip(batch, found):
                    if not fut.done():
                        fut.set_result(entry)
        finally:
            self._sending = False

    def _decode_once(self, key: str, blob: bytes | None) -> Entry | None:
        known = self._decoded.recall(key)
        if known is not None and known[0] == blob:
            return known[1]
        entry = _decode(blob)
        if entry is not None:
            self._decoded.remember(key, (blob, entry))
        return entry


class RedisStore(Store):
    follows = True

    def __init__(self, url: str, ttl: float | None = None, prefix: str = "edge-ai", stream_len: int = 100_000,
                 timeout: float = 0.5) -> None:
        self.url = url
        self.ttl = ttl
        self.timeout = timeout
        self.stream_len = stream_len
        tag = "{" + prefix + "}"
        self._entry, self._log, self._epoch_key = f"{tag}:e:", f"{tag}:log", f"{tag}:epoch"
        # Request-path reads wait at most `timeout`: Redis being slow must not stall the answers.
        self._r = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self._put = self._r.register_script(_PUT)
        self._delete = self._r.register_script(_DELETE)
        self.epoch: bytes | None = None  # the data this replica's index was built from
        self.available = True  # False from a failed call until the follower has reconnected and rebuilt
        self.resyncs = 0
        self.lag_s = 0.0  # how old the last change applied was when it was applied
        self._count: tuple[float, int] = (0.0, 0)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.synced = threading.Event()  # the first rebuild is done
        self._confirmer = _Confirmer(self)

    @property
    def where(self) -> str:
        return f"{redact(self.url)} ({self._entry[:-3]})"

    def _failed(self, exc: Exception) -> None:
        if self.available:
            log.error("redis: %s unreachable (%s); lookups miss and writes fail until it is back", redact(self.url), exc)
        self.available = False

    # -- entries

    def get(self, id_: str) -> Entry | None:
        """Read from Redis every time: a hit is confirmed there (never an expired or purged entry served
        from a replica's stale index). While Redis is down, nothing is confirmed: a miss."""
        if not self.available:
            return None
        try:
            return _decode(self._r.get(self._entry + id_))
        except _DOWN as exc:
            self._failed(exc)
            return None

    read = get

    async def fetch(self, id_: str) -> Entry | None:
        return (await self.fetch_many([id_]))[0]

    async def fetch_many(self, ids: list[str]) -> list[Entry | None]:
        if not self.available:
            return [None] * len(ids)
        return await self._confirmer.read([self._entry + i for i in ids])

    def put(self, entry: Entry) -> None:
        if not self.available:
            raise StoreUnavailable(f"redis {redact(self.url)} is unreachable: entry not written")
        ttl_ms = int(self.ttl * 1000) if self.ttl else 0
        try:
            epoch = self._put(keys=[self._entry + entry.id, self._log, self._epoch_key],
                              args=[secrets.token_hex(8), ttl_ms, self.stream_len, entry.id, _encode(entry)])
        except _DOWN as exc:
            self._failed(exc)
            raise StoreUnavailable(f"redis {redact(self.url)} is unreachable: entry not written") from exc
        if self.epoch is not None and epoch != self.epoch:
            log.warning("redis: the cache's data was lost (epoch changed); this replica rebuilds its index")

    def delete(self, id_: str) -> bool:
        try:
            return bool(self._delete(keys=[self._entry + id_, self._log], args=[self.stream_len, id_]))
        except _DOWN as exc:
            self._failed(exc)
            raise StoreUnavailable(f"redis {redact(self.url)} is unreachable: nothing deleted") from exc

    def ids(self) -> Iterator[str]:
        n = len(self._entry)
        for key in self._r.scan_iter(match=self._entry + "*", count=1000):
            yield key[n:].decode()

    def __iter__(self) -> Iterator[Entry]:
        yield from self._scan(self._r)

    def _scan(self, r: redis.Redis) -> Iterator[Entry]:
        """Every entry, read a thousand at a time in one round trip (MGET) each."""
        batch: list[bytes] = []
        for key in r.scan_iter(match=self._entry + "*", count=1000):
            batch.append(key)
            if len(batch) == 1000:
                yield from self._read_many(r, batch)
                batch = []
        yield from self._read_many(r, batch)

    @staticmethod
    def _read_many(r: redis.Redis, keys: list[bytes]) -> Iterator[Entry]:
        if not keys:
            return
        for blob in r.mget(keys):
            entry = _decode(blob)
            if entry is not None:  # expired between the scan and the read
                yield entry

    def __len__(self) -> int:
        """Entries in Redis, counted by a scan at most every 10 s (a scan is O(entries))."""
        at, n = self._count
        if time.monotonic() - at > 10.0:
            try:
                n = sum(1 for _ in self._r.scan_iter(match=self._entry + "*", count=1000))
            except _DOWN as exc:
                self._failed(exc)
            self._count = (time.monotonic(), n)
        return n

    # -- following the changes of every replica

    def follow(self, follower: Follower, wait: float = 30.0) -> bool:
        """Rebuild the follower from Redis, then keep it current, on a thread; True once the first rebuild
        is done within `wait` seconds (with Redis down it is not: the replica starts and catches up later)."""
        self._thread = threading.Thread(target=self._follow, args=(follower,), name="edge-ai-redis", daemon=True)
        self._thread.start()
        return self.synced.wait(wait)

    def _follow(self, follower: Follower) -> None:
        # Its own connection: XREAD blocks for a second, longer than a request-path read may wait.
        r = redis.Redis.from_url(self.url, socket_timeout=5.0, socket_connect_timeout=2.0)
        backoff = 0.1
        while not self._stop.is_set():
            try:
                last = self._rebuild(r, follower)
                self.available, backoff = True, 0.1
                self.synced.set()
                while not self._stop.is_set():
                    last = self._apply(r, follower, last)
                    # a request-path call failed (available went False): changes may have been missed
                    if not self.available or self._must_rebuild(r, last):
                        break
            except _DOWN as exc:
                self._failed(exc)
                self._stop.wait(backoff)  # reconnect with backoff
                backoff = min(backoff * 2, 5.0)
            except Exception:  # a bug or a foreign key: log, wait, rebuild; never a dead follower
                log.exception("redis: following the cache failed; rebuilding")
                self._stop.wait(1.0)
        r.close()

    def _rebuild(self, r: redis.Redis, follower: Follower) -> bytes:
        """Record where the stream is first, then read everything: a change made during the scan is
        replayed after it (replays are idempotent), so none is missed."""
        r.set(self._epoch_key, secrets.token_hex(8), nx=True)
        self.epoch = r.get(self._epoch_key)
        last = self._last_id(r)
        follower.reset(self._scan(r))
        self.resyncs += 1
        log.info("redis: index rebuilt from %s, following from %s", self.where, last.decode())
        return last

    def _last_id(self, r: redis.Redis) -> bytes:
        try:
            return r.xinfo_stream(self._log)["last-generated-id"]
        except redis.ResponseError:  # no stream yet: nothing was ever written
            return b"0-0"

    def _apply(self, r: redis.Redis, follower: Follower, last: bytes) -> bytes:
        got = r.xread({self._log: last}, count=1000, block=1000)
        if not got:
            return last
        records = got[0][1]
        latest: dict[str, bytes] = {}  # id -> last op: a burst of writes to one entry reads it once
        for sid, fields in records:
            latest[fields[b"id"].decode()] = fields[b"op"]
        puts = [id_ for id_, op in latest.items() if op == b"put"]
        found = dict(zip(puts, r.mget([self._entry + i for i in puts]))) if puts else {}
        for id_, op in latest.items():
            entry = _decode(found[id_]) if op == b"put" else None
            if entry is None:  # deleted, or gone (replaced, expired) since its record was written
                follower.removed(id_)
            else:
                follower.added(entry)
        last = records[-1][0]
        self.lag_s = max(0.0, time.time() - _sid(last)[0] / 1000)
        return last

    def _must_rebuild(self, r: redis.Redis, last: bytes) -> bool:
        """The data was replaced (epoch), or records after `last` were trimmed before this replica read them."""
        if r.get(self._epoch_key) != self.epoch:
            log.warning("redis: the cache's data changed under this replica (flush or restart); rebuilding")
            return True
        if last == b"0-0":
            return False
        try:
            info: dict[str, Any] = r.xinfo_stream(self._log)
        except redis.ResponseError:  # the stream is gone while this replica had read from it
            return True
        deleted = info.get("max-deleted-entry-id")  # Redis 7: the newest record trimmed
        if deleted is not None:
            gap = _sid(deleted) > _sid(last)
        else:  # Redis 5-6: the oldest record kept is past ours (conservative)
            first = info.get("first-entry")
            gap = first is not None and _sid(first[0]) > _sid(last)
        if gap:
            log.warning("redis: this replica fell behind the trimmed change stream; rebuilding")
        return gap

    def stats(self) -> dict[str, object]:
        return {"backend": "redis", "available": self.available,
                "resyncs": self.resyncs, "lag_s": round(self.lag_s, 3)}

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._r.close()
