"""The scope-partitioned vector index: exact partitions, inverted lists past ann_min, background builds, persistence."""

from __future__ import annotations

import threading

import numpy as np

from edge_ai.engines import index as index_module
from edge_ai.engines.index import VectorIndex


def unit(rng: np.random.Generator, n: int, dim: int = 32) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_exact_search_add_remove_and_scopes():
    rng = np.random.default_rng(0)
    idx = VectorIndex(32)
    v = unit(rng, 10)
    for i in range(10):
        idx.add("A" if i < 5 else "B", f"id{i}", v[i])
    assert idx.search("A", v[3], k=1)[0][0] == "id3"
    assert idx.search("A", v[7], k=5)[0][0] != "id7"  # other scopes are never searched
    assert abs(idx.search("B", v[7], k=1)[0][1] - 1.0) < 1e-5
    idx.remove("id3")
    assert "id3" not in idx and idx.search("A", v[3], k=1)[0][0] != "id3"
    idx.add("B", "id0", v[0])  # re-adding under another scope moves the entry
    assert idx.search("B", v[0], k=1)[0][0] == "id0" and all(i != "id0" for i, _ in idx.search("A", v[0], k=5))
    assert len(idx) == 9
    assert idx.search("nope", v[0]) == []


def test_changes_count_what_can_alter_a_scope_s_searches():
    rng = np.random.default_rng(5)
    idx = VectorIndex(32, ann_min=100, background=False)
    v = unit(rng, 120)
    for i in range(99):
        idx.add("A", f"id{i}", v[i])
    idx.add("B", "b0", v[0])
    assert (idx.changes("A"), idx.changes("B"), idx.changes("none")) == (99, 1, 0)
    idx.search("A", v[1], k=4)
    idx.remove("b0")
    assert (idx.changes("A"), idx.changes("B")) == (99, 2)  # searches change nothing; scopes are apart
    idx.add("A", "id99", v[99])  # the 100th entry: the partition moves to lists, which rank approximately
    assert idx.kind("A") == "lists" and idx.changes("A") == 101
    idx.add("B", "id5", v[5])  # moving an entry changes both scopes
    assert (idx.changes("A"), idx.changes("B")) == (102, 3)


def test_large_partition_moves_to_lists_with_high_recall():
    rng = np.random.default_rng(1)
    idx = VectorIndex(32, ann_min=500, background=False)
    v = unit(rng, 2000)
    for i in range(2000):
        idx.add("S", f"id{i}", v[i])
    assert idx.kind("S") == "lists"
    assert idx._parts["S"].trained_for == 2000  # retrained each time it doubled: 500, 1000, 2000
    queries = v[:300] + 0.05 * unit(rng, 300)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    truth = np.argmax(queries @ v.T, axis=1)
    found = [idx.search("S", q, k=1)[0][0] for q in queries]
    recall = np.mean([f == f"id{t}" for f, t in zip(found, truth)])
    assert recall >= 0.99
    idx.remove("id0")
    assert all(i != "id0" for i, _ in idx.search("S", v[0], k=3))
    idx.add("S", "id1", v[0])  # an id given a new vector is found by the new one only
    assert idx.search("S", v[0], k=1)[0][0] == "id1" and len(idx) == 1999


def test_a_query_with_no_close_neighbour_scans_wider():
    """Random queries have no close neighbour, so a narrow scan of the lists often misses the nearest; given
    a floor nothing reaches, the index scans WIDE cells (here: all of them) and finds it every time."""
    rng = np.random.default_rng(5)
    idx = VectorIndex(32, ann_min=500, background=False)
    v = unit(rng, 2000)
    for i in range(2000):
        idx.add("S", f"id{i}", v[i])
    lists = idx._parts["S"]
    assert lists.index.nlist <= index_module.WIDE and lists.index.nprobe < lists.index.nlist
    queries = unit(rng, 200)
    truth = [f"id{t}" for t in np.argmax(queries @ v.T, axis=1)]
    narrow = np.mean([idx.search("S", q, k=1)[0][0] == t for q, t in zip(queries, truth)])
    wide = np.mean([idx.search("S", q, k=1, floor=0.99)[0][0] == t for q, t in zip(queries, truth)])
    assert narrow < 0.97 and wide == 1.0  # the narrow scan does miss some (0.915 here)
    close = v[7] + 0.01 * unit(rng, 1)[0]  # a close neighbour above the floor: the narrow scan answers
    assert idx.search("S", close / np.linalg.norm(close), k=1, floor=0.9)[0][0] == "id7"


def test_changes_during_a_background_build_are_replayed(monkeypatch):
    """Lookups keep using the old partition while lists are built; what changed meanwhile is not lost."""
    rng = np.random.default_rng(3)
    v = unit(rng, 900)
    started, release = threading.Event(), threading.Event()
    train = index_module._Lists._train

    def slow_train(self, vecs):
        started.set()
        release.wait(10)
        train(self, vecs)

    monkeypatch.setattr(index_module._Lists, "_train", slow_train)
    idx = VectorIndex(32, ann_min=400)
    for i in range(400):
        idx.add("S", f"id{i}", v[i])
    assert started.wait(10)
    for i in range(400, 600):  # added while the build runs
        idx.add("S", f"id{i}", v[i])
    for i in range(0, 400, 4):  # removed while the build runs
        idx.remove(f"id{i}")
    idx.add("other", "id1", v[1])  # moved to another scope
    assert idx.kind("S") == "exact" and idx.search("S", v[500], k=1)[0][0] == "id500"  # still answering
    release.set()
    assert idx.wait_rebuilt(30)
    assert idx.kind("S") == "lists" and len(idx._parts["S"]) == 600 - 100 - 1 and len(idx) == 600 - 100
    assert idx.search("S", v[500], k=1)[0][0] == "id500"
    assert idx.search("S", v[8], k=1)[0][0] != "id8"
    assert idx.search("S", v[1], k=1)[0][0] != "id1" and idx.search("other", v[1], k=1)[0][0] == "id1"


def test_lists_persist_only_for_an_unchanged_store(tmp_path):
    rng = np.random.default_rng(2)
    idx = VectorIndex(32, ann_min=100, background=False)
    v = unit(rng, 300)
    for i in range(300):
        idx.add("S", f"id{i}", v[i])
    idx.remove("id7")
    idx.add("small", "x", v[0])
    assert idx.save_lists(tmp_path, generation=7) == 1
    again = VectorIndex(32, ann_min=100)
    assert again.load_lists(tmp_path, generation=7) == 299
    assert again.search("S", v[42], k=1)[0][0] == "id42" and "x" not in again  # exact partitions are rebuilt by the cache
    assert "id7" not in again and again._parts["S"].trained_for == 200
    again.remove("id42")  # a reloaded partition still takes removals and additions
    again.add("S", "new", v[42])
    assert again.search("S", v[42], k=1)[0][0] == "new"
    stale = VectorIndex(32, ann_min=100)
    assert stale.load_lists(tmp_path, generation=8) == 0 and len(stale) == 0
