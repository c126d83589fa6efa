"""Vector index partitioned by scope.

A hit needs an exact scope match, so vectors are kept per scope and a query only searches its own
partition. A small partition is a matrix of unit vectors searched exactly (one BLAS matrix-vector
product). Past `ann_min` vectors a partition moves to an HNSW graph (usearch), whose search cost grows
with log(n) instead of n; the caller re-scores candidates exactly from the stored vectors, so the
approximate distances never decide a hit on their own.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

import numpy as np

ANN_MIN = 20_000  # below this, exact search is as fast as the graph and has perfect recall (BENCHMARKS.md)


class _Exact:
    def __init__(self, dim: int) -> None:
        self.ids: list[str] = []
        self.pos: dict[str, int] = {}
        self.vecs = np.zeros((8, dim), np.float32)

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, id_: str, vec: np.ndarray) -> None:
        if id_ in self.pos:
            self.vecs[self.pos[id_]] = vec
            return
        n = len(self.ids)
        if n == len(self.vecs):
            self.vecs = np.concatenate([self.vecs, np.zeros_like(self.vecs)])
        self.vecs[n] = vec
        self.pos[id_] = n
        self.ids.append(id_)

    def remove(self, id_: str) -> None:
        i = self.pos.pop(id_, None)
        if i is None:
            return
        last = len(self.ids) - 1
        if i != last:  # move the last row into the hole
            self.vecs[i] = self.vecs[last]
            self.ids[i] = self.ids[last]
            self.pos[self.ids[i]] = i
        self.ids.pop()

    def search(self, vec: np.ndarray, k: int) -> list[tuple[str, float]]:
        n = len(self.ids)
        if n == 0:
            return []
        sims = self.vecs[:n] @ vec
        k = min(k, n)
        top = np.argpartition(-sims, k - 1)[:k] if k < n else np.arange(n)
        top = top[np.argsort(-sims[top])]
        return [(self.ids[i], float(sims[i])) for i in top]


class _Graph:
    """HNSW over inner product of unit vectors (= cosine), stored as f16 to halve the memory."""

    def __init__(self, dim: int, exact: _Exact | None = None) -> None:
        from usearch.index import Index

        # ef_search 192: recall@1 1.000 at 1M entries (0.958 at 96) for p50 2.4 ms instead of 1.2 ms;
        # a semantic lookup already pays 8+ ms to embed, and a missed neighbour is a missed hit
        self.index = Index(ndim=dim, metric="ip", dtype="f16", connectivity=16, expansion_add=128, expansion_search=192)
        self.key: dict[str, int] = {}
        self.id_of: dict[int, str] = {}
        self._next = 0
        if exact is not None and len(exact):
            keys = np.arange(len(exact), dtype=np.uint64)
            self.index.add(keys, exact.vecs[: len(exact)])
            self.key = {id_: i for i, id_ in enumerate(exact.ids)}
            self.id_of = dict(enumerate(exact.ids))
            self._next = len(exact)

    @classmethod
    def restore(cls, dim: int, path: Path, ids: list[str | None]) -> "_Graph":
        g = cls(dim)
        g.index.load(str(path))
        g.id_of = {k: id_ for k, id_ in enumerate(ids) if id_ is not None}
        g.key = {id_: k for k, id_ in g.id_of.items()}
        g._next = len(ids)
        return g

    def id_of_list(self) -> list[str | None]:
        return [self.id_of.get(k) for k in range(self._next)]

    def __len__(self) -> int:
        return len(self.key)

    def add(self, id_: str, vec: np.ndarray) -> None:
        self.remove(id_)
        k = self._next
        self._next += 1
        self.index.add(k, vec)
        self.key[id_], self.id_of[k] = k, id_

    def remove(self, id_: str) -> None:
        k = self.key.pop(id_, None)
        if k is not None:
            self.index.remove(k)
            del self.id_of[k]

    def search(self, vec: np.ndarray, k: int) -> list[tuple[str, float]]:
        found = self.index.search(vec, k)
        return [(self.id_of[int(key)], 1.0 - float(d)) for key, d in zip(found.keys, found.distances) if int(key) in self.id_of]


class VectorIndex:
    def __init__(self, dim: int, ann_min: int = ANN_MIN) -> None:
        self.dim = dim
        self.ann_min = ann_min
        self._parts: dict[str, _Exact | _Graph] = {}
        self._scope_of: dict[str, str] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._scope_of)

    def __contains__(self, id_: str) -> bool:
        return id_ in self._scope_of

    def add(self, scope: str, id_: str, vec: np.ndarray) -> None:
        with self._lock:
            old = self._scope_of.get(id_)
            if old is not None and old != scope:
                self._parts[old].remove(id_)
            part = self._parts.setdefault(scope, _Exact(self.dim))
            part.add(id_, vec)
            if isinstance(part, _Exact) and len(part) >= self.ann_min:
                self._parts[scope] = _Graph(self.dim, part)  # the matrix is dropped: the graph replaces it
            self._scope_of[id_] = scope

    def remove(self, id_: str) -> None:
        with self._lock:
            scope = self._scope_of.pop(id_, None)
            if scope is not None:
                part = self._parts[scope]
                part.remove(id_)
                if not len(part):
                    del self._parts[scope]

    def search(self, scope: str, vec: np.ndarray, k: int = 1) -> list[tuple[str, float]]:
        """The k nearest entries of `scope`, best first, as (id, cosine similarity)."""
        with self._lock:
            part = self._parts.get(scope)
            return part.search(vec, k) if part else []

    def kind(self, scope: str) -> str:
        return type(self._parts.get(scope)).__name__.strip("_").lower()

    # Graphs take minutes to build at a million entries: they are saved at shutdown and reloaded when the
    # store has not changed since (same generation). Anything else is rebuilt from the stored vectors.

    def save_graphs(self, directory: Path, generation: int) -> int:
        directory.mkdir(parents=True, exist_ok=True)
        manifest = {"generation": generation, "graphs": {}}
        with self._lock:
            for scope, part in self._parts.items():
                if isinstance(part, _Graph):
                    name = hashlib.sha256(scope.encode()).hexdigest()[:16]
                    part.index.save(str(directory / f"{name}.usearch"))
                    (directory / f"{name}.ids.json").write_text(json.dumps(part.id_of_list()))
                    manifest["graphs"][scope] = name
        tmp = directory / "manifest.json.tmp"
        tmp.write_text(json.dumps(manifest))
        os.replace(tmp, directory / "manifest.json")  # the manifest lands last, whole, or not at all
        return len(manifest["graphs"])

    def load_graphs(self, directory: Path, generation: int) -> int:
        try:
            manifest = json.loads((directory / "manifest.json").read_text())
        except (OSError, ValueError):
            return 0
        if manifest.get("generation") != generation:
            return 0  # the store changed after the save: rebuild
        n = 0
        for scope, name in manifest.get("graphs", {}).items():
            try:
                g = _Graph.restore(self.dim, directory / f"{name}.usearch", json.loads((directory / f"{name}.ids.json").read_text()))
            except (OSError, ValueError, RuntimeError):
                continue
            with self._lock:
                self._parts[scope] = g
                for id_ in g.key:
                    self._scope_of[id_] = scope
            n += len(g)
        return n
