"""Vector lookup at 10k / 100k / 1M entries (384-d): exact numpy search vs the HNSW graph edge-ai uses
past ANN_MIN entries. Reports build time, memory, p50/p99 single-query latency (k=4, as the cache asks),
batched queries/s, and recall@1 against exact search two ways: the graph's own top 1, and what the cache
gets (the graph's top 4 re-scored exactly from the stored vectors).

Vectors: unit-normalised clustered Gaussians (queries are perturbed copies of stored vectors, as a
paraphrase is of its origin), which is harder for a graph than real sentence embeddings' neighbourhoods.

    .venv/bin/python scripts/bench/lookup.py [--sizes 10000 100000 1000000] [--queries 1000]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from edge_ai.engines.index import _Exact, _Graph  # noqa: E402

DIM = 384


def data(n: int, q: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    centers = rng.standard_normal((max(n // 100, 1), DIM)).astype(np.float32)
    x = centers[rng.integers(0, len(centers), n)] + 0.7 * rng.standard_normal((n, DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    src = rng.integers(0, n, q)
    qs = x[src] + 0.03 * rng.standard_normal((q, DIM)).astype(np.float32)
    qs /= np.linalg.norm(qs, axis=1, keepdims=True)
    return x, qs, src


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return 0.0


def lat(fn, qs: np.ndarray) -> tuple[float, float]:
    ts = []
    for q in qs:
        t = time.perf_counter()
        fn(q)
        ts.append((time.perf_counter() - t) * 1000)
    ts.sort()
    return ts[len(ts) // 2], ts[int(0.99 * (len(ts) - 1))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--recall-queries", type=int, default=500, help="queries whose exact answer is computed for recall")
    ap.add_argument("--ef", type=int, nargs="*", default=[], help="also measure the graph with these expansion_search values")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    print(f"{os.cpu_count()} CPUs, dim {DIM}, {args.queries} queries")
    print(f"{'n':>9} {'index':<6} {'build s':>8} {'MB':>7} {'p50 ms':>8} {'p99 ms':>8} {'batch q/s':>10} {'recall@1':>9} {'re-ranked':>9}")
    for n in args.sizes:
        x, qs, _ = data(n, args.queries, rng)
        ids = [str(i) for i in range(n)]
        base = rss_mb()
        t = time.perf_counter()
        ex = _Exact(DIM)
        ex.vecs = np.empty((n, DIM), np.float32)
        ex.vecs[:] = x
        ex.ids, ex.pos = ids, {i: k for k, i in enumerate(ids)}
        ex_build, ex_mb = time.perf_counter() - t, rss_mb() - base
        rq = qs[: args.recall_queries]
        truth = [ex.search(q, 1)[0][0] for q in rq]
        p50, p99 = lat(lambda q: ex.search(q, 4), qs[:200])
        t = time.perf_counter()
        _ = ex.vecs @ qs.T  # batched: one matrix product for all queries
        ex_qps = len(qs) / (time.perf_counter() - t)
        print(f"{n:>9} {'exact':<6} {ex_build:>8.2f} {ex_mb:>7.0f} {p50:>8.3f} {p99:>8.3f} {ex_qps:>10.0f} {1.0:>9.3f} {1.0:>9.3f}", flush=True)
        base = rss_mb()
        t = time.perf_counter()
        g = _Graph(DIM, ex)
        g_build, g_mb = time.perf_counter() - t, rss_mb() - base
        for ef in [g.index.expansion_search, *args.ef]:  # one build, several search widths
            g.index.expansion_search = ef
            p50, p99 = lat(lambda q: g.search(q, 4), qs)
            t = time.perf_counter()
            g.index.search(qs, 4)
            g_qps = len(qs) / (time.perf_counter() - t)
            recall = np.mean([g.search(q, 1)[0][0] == tr for q, tr in zip(rq, truth)])
            reranked = np.mean([rerank(ex, g.search(q, 4), q) == tr for q, tr in zip(rq, truth)])
            name = f"hnsw{ef}"
            print(f"{n:>9} {name:<6} {g_build:>8.2f} {g_mb:>7.0f} {p50:>8.3f} {p99:>8.3f} {g_qps:>10.0f} {recall:>9.3f} {reranked:>9.3f}", flush=True)


def rerank(ex: _Exact, found: list[tuple[str, float]], q: np.ndarray) -> str:
    """What the cache does with the graph's candidates: exact cosine from the stored vector decides."""
    return max(found, key=lambda f: float(ex.vecs[ex.pos[f[0]]] @ q))[0]


if __name__ == "__main__":
    main()
