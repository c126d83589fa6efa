"""The scope-partitioned vector index: exact partitions, HNSW partitions past ann_min, persistence."""

from __future__ import annotations

import numpy as np

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


def test_large_partition_moves_to_a_graph_with_high_recall():
    rng = np.random.default_rng(1)
    idx = VectorIndex(32, ann_min=500)
    v = unit(rng, 2000)
    for i in range(2000):
        idx.add("S", f"id{i}", v[i])
    assert idx.kind("S") == "graph"
    queries = v[:300] + 0.05 * unit(rng, 300)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    truth = np.argmax(queries @ v.T, axis=1)
    found = [idx.search("S", q, k=1)[0][0] for q in queries]
    recall = np.mean([f == f"id{t}" for f, t in zip(found, truth)])
    assert recall >= 0.99
    idx.remove("id0")
    assert all(i != "id0" for i, _ in idx.search("S", v[0], k=3))


def test_graphs_persist_only_for_an_unchanged_store(tmp_path):
    rng = np.random.default_rng(2)
    idx = VectorIndex(32, ann_min=100)
    v = unit(rng, 300)
    for i in range(300):
        idx.add("S", f"id{i}", v[i])
    idx.add("small", "x", v[0])
    assert idx.save_graphs(tmp_path, generation=7) == 1
    again = VectorIndex(32, ann_min=100)
    assert again.load_graphs(tmp_path, generation=7) == 300
    assert again.search("S", v[42], k=1)[0][0] == "id42" and "x" not in again  # exact partitions are rebuilt by the cache
    stale = VectorIndex(32, ann_min=100)
    assert stale.load_graphs(tmp_path, generation=8) == 0 and len(stale) == 0
