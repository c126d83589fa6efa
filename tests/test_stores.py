"""One store interface, two backends (disk, Redis): the same suite for both; then what only the shared
store does: follow every replica's changes, rebuild when Redis lost its data or is back, never serve
what is gone."""

from __future__ import annotations

import time

import numpy as np
import pytest
import redis

from edge_ai.engines.redis_store import RedisStore, redact
from edge_ai.engines.store import Entry, StoreUnavailable


def entry(id_: str, answer: str = "an answer", scope_key: str = "s") -> Entry:
    return Entry(id=id_, scope_key=scope_key, scope={"tenant": "t"}, query="q " + id_, answer=answer,
                 finish_reason="stop", completion_tokens=3, max_tokens=None, source="local",
                 vector=np.arange(4, dtype=np.float32).tobytes())


def eventually(check, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.02)


# -- the shared suite


def test_round_trip_replace_delete(store_at):
    s = store_at()
    s.put(entry("a", "first"))
    got = s.get("a")
    assert got == entry("a", "first") or (got.answer == "first" and got.vector == entry("a").vector)
    assert got.vec().tolist() == [0.0, 1.0, 2.0, 3.0] and got.scope == {"tenant": "t"}
    s.put(entry("a", "second"))
    assert s.get("a").answer == "second"
    assert s.delete("a") and s.get("a") is None and not s.delete("a")
    assert s.get("missing") is None


def test_scans_and_counts(store_at):
    s = store_at()
    for i in range(25):
        s.put(entry(f"e{i}"))
    assert sorted(e.id for e in s) == sorted(f"e{i}" for i in range(25))
    assert sorted(s.ids()) == sorted(f"e{i}" for i in range(25))
    assert len(s) == 25


def test_expired_entries_are_gone(store_at):
    s = store_at(ttl=1.0)
    s.put(entry("a"))
    assert s.get("a") is not None
    time.sleep(1.2)
    s.expire()
    assert s.get("a") is None and [e.id for e in s] == []


def test_a_second_handle_sees_the_first_ones_writes(store_at):
    mine, theirs = store_at("one"), store_at("one")  # two processes, or two replicas
    mine.put(entry("a", "old"))
    assert mine.get("a").answer == "old"
    theirs.put(entry("a", "new"))
    theirs.delete("b")
    mine.forget()  # what the disk store's owner does on a generation change; nothing to do for Redis
    assert mine.get("a").answer == "new"


# -- the shared store


class Recorder:
    """A Follower that keeps what it was told, as the cache's index does."""

    def __init__(self) -> None:
        self.ids: set[str] = set()
        self.resets = 0

    def added(self, e: Entry) -> None:
        self.ids.add(e.id)

    def removed(self, id_: str) -> None:
        self.ids.discard(id_)

    def reset(self, entries) -> None:
        self.ids = {e.id for e in entries}
        self.resets += 1


@pytest.fixture
def pair(redis_server):
    prefix = f"pair-{time.monotonic_ns()}"
    a, b = RedisStore(redis_server.url, prefix=prefix), RedisStore(redis_server.url, prefix=prefix)
    yield a, b
    a.close()
    b.close()


def test_a_replica_follows_writes_and_deletes_of_another(pair):
    a, b = pair
    a.put(entry("before"))
    seen = Recorder()
    assert b.follow(seen)
    assert seen.ids == {"before"}  # rebuilt from Redis at start
    a.put(entry("x"))
    a.put(entry("y"))
    eventually(lambda: seen.ids == {"before", "x", "y"})
    a.delete("x")
    eventually(lambda: seen.ids == {"before", "y"})


def test_a_flush_is_noticed_and_nothing_gone_is_served(pair, redis_server):
    a, b = pair
    seen = Recorder()
    b.follow(seen)
    a.put(entry("x"))
    eventually(lambda: "x" in seen.ids)
    redis.Redis.from_url(redis_server.url).flushall()
    assert b.get("x") is None  # confirmed against Redis, whatever the index still holds
    eventually(lambda: seen.resets == 2 and seen.ids == set())  # the epoch is gone: rebuilt, empty
    a.put(entry("z"))  # writes go on into the new data
    eventually(lambda: seen.ids == {"z"})


def test_records_trimmed_before_a_replica_read_them_make_it_rebuild(redis_server):
    prefix = f"trim-{time.monotonic_ns()}"
    writer = RedisStore(redis_server.url, prefix=prefix, stream_len=1000)
    reader = RedisStore(redis_server.url, prefix=prefix)
    seen = Recorder()
    reader.follow(seen)
    writer.put(entry("first"))
    eventually(lambda: "first" in seen.ids)
    # trim away records this replica has not read: as if it stalled while others wrote on
    pipe = redis.Redis.from_url(redis_server.url).pipeline(transaction=True)  # one step: nobody reads between
    pipe.xadd(writer._log, {"op": "put", "id": "never-read"})
    pipe.xtrim(writer._log, maxlen=0, approximate=False)
    pipe.execute()
    writer.put(entry("after"))
    eventually(lambda: seen.resets >= 2 and {"first", "after"} <= seen.ids)
    writer.close()
    reader.close()


def test_redis_down_misses_and_refuses_writes_then_catches_up(redis_server):
    prefix = f"down-{time.monotonic_ns()}"
    a, b = RedisStore(redis_server.url, prefix=prefix), RedisStore(redis_server.url, prefix=prefix)
    seen = Recorder()
    b.follow(seen)
    a.put(entry("x"))
    eventually(lambda: "x" in seen.ids)
    redis_server.restart()  # without persistence: everything is gone
    t = time.monotonic()
    assert b.get("x") is None  # quickly: down (refused) or restarted (gone), never the stale entry
    assert time.monotonic() - t < 5.0  # the store's 0.5 s socket timeout, not redis-py's default of none
    eventually(lambda: b.available and seen.ids == set())  # reconnected, rebuilt
    a.put(entry("y"))  # a's own next call finds the new server
    eventually(lambda: seen.ids == {"y"})
    a.close()
    b.close()


def test_writes_while_redis_is_unreachable_fail_loudly_and_leave_nothing():
    from tests.conftest import free_port

    s = RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout=0.2)  # nothing listens there
    with pytest.raises(StoreUnavailable):
        s.put(entry("a"))
    assert not s.available and s.get("a") is None
    with pytest.raises(StoreUnavailable):
        s.put(entry("b"))  # refused at once while down
    s.close()


def test_the_password_never_shows():
    assert redact("redis://:hunter2@db.example:6380/1") == "redis://:***@db.example:6380/1"
    assert redact("redis://user:hunter2@db/0") == "redis://user:***@db/0"
    assert redact("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert "hunter2" not in RedisStore("redis://:hunter2@127.0.0.1:1/0").where
