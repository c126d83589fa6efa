"""Vector lookup at 10k / 100k / 1M entries (384-d): exact numpy search vs the inverted lists (faiss IVF,
half floats) edge-ai uses past ANN_MIN entries, and optionally an HNSW graph (usearch, the structure
edge-ai used before) as a second anchor. Reports build time, memory, p50/p99 single-query latency (k=4, as
the cache asks), batched queries/s, and recall@1 against exact search two ways: the index's own top 1, and
what the cache gets (its top 4 re-scored exactly from the stored vectors).

Vectors: unit-normalised clustered Gaussians (queries are perturbed copies of stored vectors, as a
paraphrase is of its origin), which is harder for a graph than real sentence embeddings' neighbourhoods.
A query's nearest is at cosine ~0.86, under the cache's default threshold: the `miss` row searches as the
cache does with that threshold as the floor, so the lists scan WIDE cells after the first NPROBE found
nothing close enough to be a hit (the cost of the cache's miss path; its queries/s are one at a time).

    .venv/bin/python scripts/bench/lookup.py [--sizes 10000 100000 1000000] [--queries 1000]
        [--nprobe 8 32] [--hnsw]
    .venv/bin/python scripts/bench/lookup.py --real qqp_vecs.npz [--nprobe 32 64] [--hnsw]

--real takes QQP's sentence embeddings as `scripts/fit_hit_model.py --vectors FILE` saves them: 75,596
stored (every text_a, and text_b from pair 5,000 on), the first 2,000 text_b asked. Recall is by
similarity (QQP repeats questions, so the nearest is often a tie), overall and for the queries whose
nearest neighbour is close enough to be a hit.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from edge_ai.engines.index import NPROBE, WIDE, _Exact, _Lists  # noqa: E402
from edge_ai.hit import HitModel  # noqa: E402

FLOOR = HitModel.load().threshold  # the cache's default least similarity for a hit

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
    ap.add_argument("--nprobe", type=int, nargs="*", default=[], help="also measure the lists scanning this many cells")
    ap.add_argument("--hnsw", action="store_true", help="also build a usearch HNSW graph (f16, M=16, ef 96/192; pip install usearch): minutes at 1M")
    ap.add_argument("--real", type=Path, metavar="NPZ", help="real sentence embeddings instead (see above)")
    args = ap.parse_args()
    if args.real:
        return real(args)
    rng = np.random.default_rng(0)
    print(f"{os.cpu_count()} CPUs, dim {DIM}, {args.queries} queries")
    print(f"{'n':>9} {'index':<8} {'build s':>8} {'MB':>7} {'p50 ms':>8} {'p99 ms':>8} {'batch q/s':>10} {'recall@1':>9} {'re-ranked':>9}")
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
        print(f"{n:>9} {'exact':<8} {ex_build:>8.2f} {ex_mb:>7.0f} {p50:>8.3f} {p99:>8.3f} {ex_qps:>10.0f} {1.0:>9.3f} {1.0:>9.3f}", flush=True)
        base = rss_mb()
        t = time.perf_counter()
        lists = _Lists(DIM, ids, x)
        l_build, l_mb = time.perf_counter() - t, rss_mb() - base
        for nprobe in [NPROBE, *args.nprobe]:  # one build, several scan widths
            lists.index.nprobe = nprobe
            measure(f"ivf{nprobe}", lists.search, lambda q: lists.index.search(q, 4), l_build, l_mb, ex, qs, rq, truth, n)
        lists.index.nprobe = NPROBE
        # the cache's miss path: the queries' nearest (~0.86) is below the default threshold, so the cache
        # would find nothing in the first scan and scan WIDE cells again before calling it a miss
        measure(f"miss{WIDE}", lambda q, k: lists.search(q, k, FLOOR), None, l_build, l_mb, ex, qs, rq, truth, n)
        if args.hnsw:
            base = rss_mb()
            t = time.perf_counter()
            g, g_search = hnsw_graph(x, ids)
            g_build, g_mb = time.perf_counter() - t, rss_mb() - base
            for ef in (96, 192):
                g.expansion_search = ef
                measure(f"hnsw{ef}", g_search, lambda q: g.search(q, 4), g_build, g_mb, ex, qs, rq, truth, n)


def measure(name, search, batched, build_s, mb, ex, qs, rq, truth, n) -> None:
    p50, p99 = lat(lambda q: search(q, 4), qs)
    t = time.perf_counter()
    batched(qs) if batched else [search(q, 4) for q in qs]
    qps = len(qs) / (time.perf_counter() - t)
    recall = np.mean([search(q, 1)[0][0] == tr for q, tr in zip(rq, truth)])
    reranked = np.mean([rerank(ex, search(q, 4), q) == tr for q, tr in zip(rq, truth)])
    print(f"{n:>9} {name:<8} {build_s:>8.2f} {mb:>7.0f} {p50:>8.3f} {p99:>8.3f} {qps:>10.0f} {recall:>9.3f} {reranked:>9.3f}", flush=True)


def hnsw_graph(x: np.ndarray, ids: list[str]):
    """The anchor: the HNSW graph edge-ai used before (usearch, f16, M=16, ef_add=128), and a search that
    answers as edge-ai's partitions do ((id, similarity), best first)."""
    from usearch.index import Index

    g = Index(ndim=DIM, metric="ip", dtype="f16", connectivity=16, expansion_add=128)
    g.add(np.arange(len(x), dtype=np.uint64), x)

    def search(q: np.ndarray, k: int) -> list[tuple[str, float]]:
        found = g.search(q, k)
        return [(ids[int(key)], 1.0 - float(d)) for key, d in zip(found.keys, found.distances)]

    return g, search


def real(args: argparse.Namespace) -> None:
    z = np.load(args.real)
    x = np.concatenate([z["a"], z["b"][5000:]]).astype(np.float32)
    qs = z["b"][:2000].astype(np.float32)
    sims = qs @ x.T
    best = sims.max(axis=1)
    ids = [str(i) for i in range(len(x))]
    print(f"{os.cpu_count()} CPUs, {len(x)} QQP embeddings stored, {len(qs)} asked; recall@1 after re-scoring the top 4")
    print(f"{'index':<10} {'build s':>8} {'p50 ms':>7} {'p99 ms':>7} {'all':>6} {'>=0.80':>7} {'>=0.89':>7}")

    def report(name: str, build_s: float, search) -> None:
        p50, p99 = lat(lambda q: search(q, 4), qs)
        found = np.array([max((int(i) for i, _ in search(q, 4)), key=lambda i: float(x[i] @ q)) for q in qs])
        ok = np.einsum("ij,ij->i", x[found], qs) >= best - 1e-5
        print(f"{name:<10} {build_s:>8.1f} {p50:>7.3f} {p99:>7.3f} {ok.mean():>6.3f} {ok[best >= 0.8].mean():>7.3f} {ok[best >= 0.89].mean():>7.3f}", flush=True)

    t = time.perf_counter()
    lists = _Lists(DIM, ids, x)
    build = time.perf_counter() - t
    for nprobe in [NPROBE, *args.nprobe]:
        lists.index.nprobe = nprobe
        report(f"ivf{nprobe}", build, lists.search)
    lists.index.nprobe = NPROBE
    for floor in (FLOOR, 0.80):  # as the cache searches: scanned again, wider, when nothing reaches the floor
        report(f"cache{floor:.2f}", build, lambda q, k: lists.search(q, k, floor))
        print(f"{'':<10} ({np.mean(best < floor):.0%} of the queries have no neighbour above {floor:.2f}: scanned {WIDE} cells)")
    if args.hnsw:
        t = time.perf_counter()
        g, g_search = hnsw_graph(x, ids)
        build = time.perf_counter() - t
        for ef in (96, 192):
            g.expansion_search = ef
            report(f"hnsw{ef}", build, g_search)


def rerank(ex: _Exact, found: list[tuple[str, float]], q: np.ndarray) -> str:
    """What the cache does with the graph's candidates: exact cosine from the stored vector decides."""
    return max(found, key=lambda f: float(ex.vecs[ex.pos[f[0]]] @ q))[0]


if __name__ == "__main__":
    main()
