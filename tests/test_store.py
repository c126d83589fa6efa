"""The entry store: what is read is what was written, also through the in-memory memo of hot entries."""

from __future__ import annotations

import time

import numpy as np

from edge_ai.engines import store as store_mod
from edge_ai.engines.store import DiskStore as Store, Entry


def entry(id_: str, answer: str = "an answer", created: float | None = None) -> Entry:
    e = Entry(id=id_, scope_key="s", scope={}, query="q " + id_, answer=answer, finish_reason="stop",
              completion_tokens=3, max_tokens=None, source="local", vector=np.ones(4, np.float32).tobytes())
    if created is not None:
        e.created = created
    return e


def test_round_trip_and_memo_follow_writes(tmp_path):
    s = Store(tmp_path)
    s.put(entry("a", "first"))
    assert s.get("a").answer == "first"
    s.put(entry("a", "second"))  # a replacement is seen at once, not the memoised copy
    assert s.get("a").answer == "second"
    assert s.delete("a") and s.get("a") is None
    assert s.get("missing") is None


def test_another_process_change_is_seen_after_forget(tmp_path):
    mine, theirs = Store(tmp_path), Store(tmp_path)  # two handles on one directory: two processes
    mine.put(entry("a", "old"))
    assert mine.get("a").answer == "old"
    theirs.put(entry("a", "new"))
    theirs.put(entry("b", "other"))
    gen = mine.generation()
    assert theirs.delete("b") and mine.generation() > gen  # how the cache notices: the generation moved
    mine.forget()
    assert mine.get("a").answer == "new"
    assert mine.get("b") is None


def test_memo_is_bounded_and_keeps_the_most_recent(tmp_path, monkeypatch):
    monkeypatch.setattr(store_mod, "HOT_ENTRIES", 3)
    s = Store(tmp_path)
    for i in range(5):
        s.put(entry(str(i)))
    s.get("2")  # used: stays
    s.put(entry("5"))
    assert list(s._hot) == ["4", "2", "5"]
    assert all(s.get(str(i)) is not None for i in range(6))  # evicted from memory, still on disk


def test_expired_entries_are_not_served_from_memory(tmp_path):
    s = Store(tmp_path, ttl=1.0)  # long enough that a loaded box's stall does not expire it before the get
    s.put(entry("a", created=time.time()))
    assert s.get("a") is not None
    time.sleep(1.1)
    assert s.get("a") is None


def test_scans_do_not_fill_the_memo(tmp_path):
    s = Store(tmp_path)
    s.put(entry("a"))
    s.forget()
    assert [e.id for e in s] == ["a"] and s.read("a") is not None
    assert not s._hot
