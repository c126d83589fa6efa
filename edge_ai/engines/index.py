"""Vector index partitioned by scope.

A hit needs an exact scope match, so vectors are kept per scope and a query only searches its own
partition. A small partition is a matrix of unit vectors searched exactly (one BLAS matrix-vector
product). Past `ann_min` vectors a partition moves to inverted lists (faiss IVF): k-means cells of
half-float vectors, of which a query scans the few whose centroids are nearest, so its cost grows with
sqrt(n) instead of n; one that finds nothing close enough to be a hit there scans 8x as many cells before
it is called a miss. The caller re-scores candidates exactly from the stored vectors, so approximate
distances only rank them: they never decide a hit, or a miss, on their own.

Lists are trained for the size a partition has when they are built; a partition that doubles is retrained.
Building takes seconds at 100k entries and ~2 minutes at 1M, so it runs on a thread from a snapshot while
the old partition keeps answering; what changed meanwhile is replayed before the swap.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import threading
from pathlib import Path

import numpy as np

log = logging.getLogger("edge_ai.index")

ANN_MIN = 10_000  # at 10k the lists are already 4x faster than exact search, at recall 1.000 (BENCHMARKS.md)
REGROW = 2.0  # retrain a partition's lists once it has this many times the entries they were trained for
NPROBE = 16  # cells scanned per query: recall@1 1.000 at 1M on synthetic data (BENCHMARKS.md), p50 ~0.6 ms
WIDE = 128  # cells scanned again when the first scan found nothing close enough to be a hit (see search)


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

    def search(self, vec: np.ndarray, k: int, floor: float | None = None) -> list[tuple[str, float]]:
        n = len(self.ids)
        if n == 0:
            return []
        sims = self.vecs[:n] @ vec
        k = min(k, n)
        top = np.argpartition(-sims, k - 1)[:k] if k < n else np.arange(n)
        top = top[np.argsort(-sims[top])]
        return [(self.ids[i], float(sims[i])) for i in top]

    def snapshot(self) -> tuple[list[str], np.ndarray]:
        return list(self.ids), self.vecs[: len(self.ids)].copy()

    def outgrown(self, ann_min: int) -> bool:
        return len(self) >= ann_min


def _faiss():
    """faiss, imported when a partition first needs lists. Its loader reports at info level that it found
    no AVX2-specific module; the wheel's one module picks its kernels for the CPU at run time, so that line
    only alarms: it is kept to warnings."""
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    import faiss

    return faiss


def cells_for(n: int) -> int:
    """~4 sqrt(n) cells: a cell then holds ~sqrt(n)/4 entries, and 16 of them are a small scan at any n.
    k-means wants >= 39 training points a cell, which caps it for small n."""
    return max(1, min(int(4 * math.sqrt(n)), n // 39))


class _Lists:
    """Inverted lists (faiss IVF) over unit vectors stored as half floats, searched by inner product."""

    def __init__(self, dim: int, ids: list[str] | None = None, vecs: np.ndarray | None = None) -> None:
        self.dim = dim
        self.key: dict[str, int] = {}
        self.id_of: dict[int, str] = {}
        self._next = 0
        self.trained_for = 0
        self.index = None
        if ids:
            self._train(vecs)
            self.trained_for = len(ids)
            keys = np.arange(len(ids), dtype=np.int64)
            self.index.add_with_ids(np.ascontiguousarray(vecs, np.float32), keys)
            self.key = {id_: i for i, id_ in enumerate(ids)}
            self.id_of = dict(enumerate(ids))
            self._next = len(ids)

    def _train(self, vecs: np.ndarray) -> None:
        faiss = _faiss()

        nlist = cells_for(len(vecs))
        # a sample of 64 per cell trains k-means as well as all of them (faiss wants >= 39) in a fraction of the time
        sample = vecs if len(vecs) <= 64 * nlist else vecs[np.random.default_rng(0).choice(len(vecs), 64 * nlist, replace=False)]
        # half floats, not 8-bit codes: those clip components outside the ranges seen in training (a
        # partition grows long after it was trained) and every retrain would re-quantise them; fp16
        # costs 2x the memory (768 MB at 1M) and ~15% in latency (BENCHMARKS.md)
        index = faiss.IndexIVFScalarQuantizer(faiss.IndexFlatIP(self.dim), self.dim, nlist,
                                              faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
        index.by_residual = False  # codes are the vectors themselves: a retrain reads them back
        index.train(np.ascontiguousarray(sample, np.float32))
        index.set_direct_map_type(faiss.DirectMap.Hashtable)  # O(1) remove and read-back by key
        index.nprobe = NPROBE
        self.index = index

    @classmethod
    def restore(cls, dim: int, path: Path, ids: list[str | None], trained_for: int) -> "_Lists":
        faiss = _faiss()

        lists = cls(dim)
        lists.index = faiss.read_index(str(path))
        lists.index.nprobe = NPROBE
        lists.id_of = {k: id_ for k, id_ in enumerate(ids) if id_ is not None}
        lists.key = {id_: k for k, id_ in lists.id_of.items()}
        lists._next = len(ids)
        lists.trained_for = trained_for
        return lists

    def id_of_list(self) -> list[str | None]:
        return [self.id_of.get(k) for k in range(self._next)]

    def __len__(self) -> int:
        return len(self.key)

    def add(self, id_: str, vec: np.ndarray) -> None:
        self.remove(id_)
        k = self._next
        self._next += 1
        self.index.add_with_ids(np.asarray(vec, np.float32).reshape(1, -1), np.array([k], np.int64))
        self.key[id_], self.id_of[k] = k, id_

    def remove(self, id_: str) -> None:
        faiss = _faiss()

        k = self.key.pop(id_, None)
        if k is not None:
            self.index.remove_ids(faiss.IDSelectorArray(np.array([k], np.int64)))
            del self.id_of[k]

    def search(self, vec: np.ndarray, k: int, floor: float | None = None) -> list[tuple[str, float]]:
        q = np.asarray(vec, np.float32).reshape(1, -1)
        sims, keys = self.index.search(q, k)
        if floor is not None and (keys[0][0] < 0 or sims[0][0] < floor):
            sims, keys = self.index.search(q, k, params=_faiss().SearchParametersIVF(nprobe=WIDE))
        return [(self.id_of[int(key)], float(s)) for key, s in zip(keys[0], sims[0]) if int(key) in self.id_of]

    def snapshot(self) -> tuple[list[str], np.ndarray]:
        keys = sorted(self.id_of)
        vecs = self.index.reconstruct_batch(np.array(keys, np.int64)) if keys else np.zeros((0, self.dim), np.float32)
        return [self.id_of[k] for k in keys], vecs

    def outgrown(self, ann_min: int) -> bool:
        return len(self) >= REGROW * max(self.trained_for, ann_min)


class VectorIndex:
    """Scope partitions, each exact or inverted lists; rebuilds on a thread unless `background=False`."""

    def __init__(self, dim: int, ann_min: int = ANN_MIN, background: bool = True) -> None:
        self.dim = dim
        self.ann_min = ann_min
        self.background = background
        self._parts: dict[str, _Exact | _Lists] = {}
        self._scope_of: dict[str, str] = {}
        self._journal: dict[str, list[tuple[str, np.ndarray | None]]] = {}  # per scope being rebuilt: changes since its snapshot
        self._changes: dict[str, int] = {}  # per scope: adds and removes so far (see changes())
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)

    def __len__(self) -> int:
        return len(self._scope_of)

    def __contains__(self, id_: str) -> bool:
        return id_ in self._scope_of

    def add(self, scope: str, id_: str, vec: np.ndarray) -> None:
        with self._lock:
            old = self._scope_of.get(id_)
            if old is not None and old != scope:
                self._remove(old, id_)
            part = self._parts.setdefault(scope, _Exact(self.dim))
            part.add(id_, vec)
            self._scope_of[id_] = scope
            self._changes[scope] = self._changes.get(scope, 0) + 1
            if scope in self._journal:
                self._journal[scope].append((id_, np.array(vec, np.float32)))
                return
            if not part.outgrown(self.ann_min):
                return
            self._journal[scope] = []
            ids, vecs = part.snapshot()
        if self.background:
            threading.Thread(target=self._rebuild, args=(scope, ids, vecs), name="edge-ai-index", daemon=True).start()
        else:
            self._rebuild(scope, ids, vecs)

    def _rebuild(self, scope: str, ids: list[str], vecs: np.ndarray) -> None:
        try:
            new = _Lists(self.dim, ids, vecs)
        except Exception:  # the old partition keeps serving; the next add tries again
            log.exception("index: building lists for %d entries failed", len(ids))
            new = None
        with self._lock:
            changes = self._journal.pop(scope)
            if new is not None:
                for id_, vec in changes:
                    if vec is None:
                        new.remove(id_)
                    else:
                        new.add(id_, vec)
                if len(new):
                    self._parts[scope] = new
                    self._changes[scope] = self._changes.get(scope, 0) + 1  # approximate now: may rank otherwise
            self._idle.notify_all()
        if new is not None:
            log.info("index: %d entries of a scope moved to %d cells", len(new), new.index.nlist)

    def wait_rebuilt(self, timeout: float | None = None) -> bool:
        """Block until no partition is being rebuilt (tests, benchmarks, a clean shutdown)."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._journal, timeout)

    def _remove(self, scope: str, id_: str) -> None:
        part = self._parts[scope]
        part.remove(id_)
        self._changes[scope] = self._changes.get(scope, 0) + 1
        if scope in self._journal:
            self._journal[scope].append((id_, None))
        if not len(part):
            del self._parts[scope]

    def remove(self, id_: str) -> None:
        with self._lock:
            scope = self._scope_of.pop(id_, None)
            if scope is not None:
                self._remove(scope, id_)

    def search(self, scope: str, vec: np.ndarray, k: int = 1, floor: float | None = None) -> list[tuple[str, float]]:
        """The k nearest entries of `scope`, best first, as (id, cosine similarity).

        `floor` is the least similarity a hit can have. Lists that find nothing above it scan 8x as many
        cells before answering: that query is about to cost a model call (hundreds of ms), so a wider scan
        (~4 ms at 1M) is cheap insurance that a hit is not missed; a query with a close neighbour, the
        common case, stays on the narrow scan. Real sentence embeddings lie across cell borders more
        than synthetic clusters do, and need it (BENCHMARKS.md)."""
        with self._lock:
            part = self._parts.get(scope)
            return part.search(vec, k, floor) if part else []

    def sizes(self) -> dict[str, int]:
        """Entries per scope."""
        with self._lock:
            return {scope: len(part) for scope, part in self._parts.items()}

    def changes(self, scope: str) -> int:
        """How many adds and removes `scope` has seen: while it is the same, so is every search of it."""
        return self._changes.get(scope, 0)

    def kind(self, scope: str) -> str:
        return type(self._parts.get(scope)).__name__.strip("_").lower()

    # Lists take ~2 minutes to build at a million entries: they are saved at shutdown and reloaded when the
    # store has not changed since (same generation). Anything else is rebuilt from the stored vectors.

    def save_lists(self, directory: Path, generation: int) -> int:
        faiss = _faiss()

        directory.mkdir(parents=True, exist_ok=True)
        manifest: dict = {"generation": generation, "lists": {}}
        with self._lock:
            for scope, part in self._parts.items():
                if isinstance(part, _Lists):
                    name = hashlib.sha256(scope.encode()).hexdigest()[:16]
                    faiss.write_index(part.index, str(directory / f"{name}.faiss"))
                    (directory / f"{name}.ids.json").write_text(json.dumps(part.id_of_list()))
                    manifest["lists"][scope] = {"name": name, "trained_for": part.trained_for}
        tmp = directory / "manifest.json.tmp"
        tmp.write_text(json.dumps(manifest))
        os.replace(tmp, directory / "manifest.json")  # the manifest lands last, whole, or not at all
        return len(manifest["lists"])

    def load_lists(self, directory: Path, generation: int) -> int:
        try:
            manifest = json.loads((directory / "manifest.json").read_text())
        except (OSError, ValueError):
            return 0
        if manifest.get("generation") != generation:
            return 0  # the store changed after the save: rebuild
        n = 0
        for scope, saved in manifest.get("lists", {}).items():
            try:
                name = saved["name"]
                ids = json.loads((directory / f"{name}.ids.json").read_text())
                lists = _Lists.restore(self.dim, directory / f"{name}.faiss", ids, int(saved["trained_for"]))
            except (OSError, ValueError, KeyError, TypeError, RuntimeError):
                continue
            with self._lock:
                self._parts[scope] = lists
                self._changes[scope] = self._changes.get(scope, 0) + 1
                for id_ in lists.key:
                    self._scope_of[id_] = scope
            n += len(lists)
        return n
