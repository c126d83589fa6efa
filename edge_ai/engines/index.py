"""Vector index partitioned by scope.

A hit needs an exact scope match, so vectors are kept per scope and a query only ever searches
its own partition: one matrix-vector product (BLAS) over unit vectors gives cosine similarities.
"""

from __future__ import annotations

import threading

import numpy as np


class _Partition:
    def __init__(self, dim: int) -> None:
        self.ids: list[str] = []
        self.pos: dict[str, int] = {}
        self.vecs = np.zeros((8, dim), np.float32)

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


class VectorIndex:
    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._parts: dict[str, _Partition] = {}
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
            self._parts.setdefault(scope, _Partition(self.dim)).add(id_, vec)
            self._scope_of[id_] = scope

    def remove(self, id_: str) -> None:
        with self._lock:
            scope = self._scope_of.pop(id_, None)
            if scope is not None:
                part = self._parts[scope]
                part.remove(id_)
                if not part.ids:
                    del self._parts[scope]

    def search(self, scope: str, vec: np.ndarray, k: int = 1) -> list[tuple[str, float]]:
        """The k nearest entries of `scope`, best first, as (id, cosine similarity)."""
        with self._lock:
            part = self._parts.get(scope)
            return part.search(vec, k) if part else []
