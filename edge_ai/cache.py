"""The semantic cache: exact-match path, then the best-scoring of the nearest prompts within the request's scope."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from edge_ai.engines.embedder import Embedder
from edge_ai.engines.index import VectorIndex
from edge_ai.engines.lexicon import LexicalIndex
from edge_ai.engines.store import DiskStore, Entry, Store
from edge_ai.hit import HitJudge, differing
from edge_ai.recent import Recent
from edge_ai.request import Final, Request

log = logging.getLogger("edge_ai.cache")

# A question asked again (a client retrying through an outage, a program's fixed prompt) misses the exact
# path unless its own answer was stored, and would be embedded and decided again: the embedder is what
# bounds semantic hits. So the cache keeps the last RECENT vectors (a vector is a function of the text
# alone: 8,192 of them are 12 MB) and the last RECENT hit decisions, each valid while its scope's part of
# the index is unchanged (VectorIndex.changes): the same request against the same entries is the same hit.
RECENT = 8192


@dataclass(frozen=True)
class _Decided:
    id: str
    similarity: float
    changes: int  # the scope's VectorIndex.changes when it was decided


@dataclass
class Hit:
    entry: Entry
    similarity: float
    exact: bool


@dataclass
class Lookup:
    hit: Hit | None
    # the query's embedding, so storing the answer to a miss needs no second pass (none for an exact or a
    # remembered hit: nothing is stored after a hit)
    vector: np.ndarray | None


def serves(entry: Entry, req: Request) -> bool:
    """A cached answer serves a request only if it is an answer the request could have got."""
    if entry.finish_reason == "length":  # cut at its max_tokens: right only for the same limit
        return entry.max_tokens == req.max_tokens
    return req.max_tokens is None or entry.completion_tokens <= req.max_tokens


class SemanticCache:
    """Also the Follower of a store that publishes its changes (Redis): its index follows every replica's."""

    def __init__(self, store: Store, embedder: Embedder, judge: HitJudge, threshold: float | None = None,
                 lexical_first: bool = True) -> None:
        self.store = store
        self.embedder = embedder
        self.judge = judge
        self.threshold = judge.model.threshold if threshold is None else threshold
        self.index = VectorIndex(embedder.dim)
        self.lexicon = LexicalIndex()  # which questions to embed first in a surge (engines/lexicon.py)
        self.lexical_first = lexical_first  # Settings.lexical_first
        self.hits = {"exact": 0, "semantic": 0, "miss": 0}
        self.write_failures = 0
        self._tenant_of: dict[str, str] = {}  # scope key -> tenant, for entries by tenant
        self._generation = -1
        self._checked = 0.0
        self._syncing: asyncio.Future[int] | None = None
        self._vectors = Recent(RECENT)  # query text -> vector
        self._decided = Recent(RECENT)  # (exact key, max_tokens, least score) -> _Decided

    @classmethod
    def open(cls, store: Store | str | Path, embedder: Embedder, judge: HitJudge, threshold: float | None = None,
             ttl: float | None = None, lexical_first: bool = True) -> "SemanticCache":
        """A cache over `store` (a directory: the embedded DiskStore), its index loaded."""
        cache = cls(store if isinstance(store, Store) else DiskStore(store, ttl), embedder, judge, threshold, lexical_first)
        cache.load()
        return cache

    def load(self) -> int:
        """Index the stored vectors not indexed yet (no re-embedding); at start-up that is all of them,
        less what saved lists of an unchanged store already hold. A store that publishes its changes is
        followed instead, from its own thread."""
        if self.store.follows:
            if not self.store.follow(self):
                log.warning("cache: %s not reached yet; answering without it until it is", self.store.where)
            log.info("cache: %d entries indexed from %s", len(self.index), self.store.where)
            return len(self.index)
        self._generation = self.store.generation()
        lists = self._lists_dir
        n = self.index.load_lists(lists, self._generation) if lists and not len(self.index) else 0
        for id_ in self.store.ids():
            if id_ in self.index:
                continue
            entry = self.store.read(id_)
            if entry is not None and entry.vec().shape == (self.index.dim,):
                self.index.add(entry.scope_key, entry.id, entry.vec())
                self.lexicon.add(entry.scope_key, entry.id, entry.query)
                self._tenant_of[entry.scope_key] = str(entry.scope.get("tenant", ""))
                n += 1
        log.info("cache: %d entries indexed from %s", n, self.store.where)
        if len(self.lexicon) < len(self.index):  # vectors from saved lists: their words are read meanwhile
            threading.Thread(target=self._read_words, name="lexicon", daemon=True).start()
        return n

    def _read_words(self) -> None:
        """The lexical index of entries whose vectors came from saved lists, without reading them at start."""
        for id_ in list(self.store.ids()):
            if id_ in self.index and id_ not in self.lexicon:
                entry = self.store.read(id_)
                if entry is not None:
                    self.lexicon.add(entry.scope_key, entry.id, entry.query)

    # Follower: called from the store's thread. VectorIndex takes its own lock; a rebuilt index replaces
    # the old one whole, so a lookup sees one or the other.

    def added(self, entry: Entry) -> None:
        if entry.vec().shape == (self.index.dim,):
            self.index.add(entry.scope_key, entry.id, entry.vec())
            self.lexicon.add(entry.scope_key, entry.id, entry.query)
            self._tenant_of[entry.scope_key] = str(entry.scope.get("tenant", ""))

    def removed(self, id_: str) -> None:
        self.index.remove(id_)
        self.lexicon.remove(id_)

    def reset(self, entries: Iterator[Entry]) -> None:
        index, lexicon, tenants = VectorIndex(self.index.dim, self.index.ann_min), LexicalIndex(), {}
        for entry in entries:
            if entry.vec().shape == (index.dim,):
                index.add(entry.scope_key, entry.id, entry.vec())
                lexicon.add(entry.scope_key, entry.id, entry.query)
                tenants[entry.scope_key] = str(entry.scope.get("tenant", ""))
        # remembered decisions were made against the old index; its change counts mean nothing to the new one
        self.index, self.lexicon, self._tenant_of, self._decided = index, lexicon, tenants, Recent(RECENT)

    def _maybe_sync(self) -> None:
        """Another process (`edge-ai warm`, `cache import`) may have written entries: at most once a
        second, compare the store's generation and index what is new, off the request path."""
        now = time.monotonic()
        if self.store.follows or now - self._checked < 1.0 or self._syncing is not None:
            return
        self._checked = now
        if self.store.generation() != self._generation:
            self.store.forget()  # an entry may have been replaced or purged there
            self._syncing = asyncio.ensure_future(asyncio.to_thread(self.load))
            self._syncing.add_done_callback(lambda _: setattr(self, "_syncing", None))

    async def lookup(self, req: Request, threshold: float | None = None) -> Lookup:
        self._maybe_sync()
        limit = next(t for t in (threshold, req.cache.threshold, self.threshold) if t is not None)
        scope, exact_key = req.scope_key(), req.exact_key()
        decision = (exact_key, req.max_tokens, limit)
        # A remembered hit first: it was decided for this very request (so the exact path had nothing for
        # it then), and any write to its scope since, its own exact entry included, voids it.
        known: _Decided | None = self._decided.recall(decision)
        if known is not None and known.changes == self.index.changes(scope):
            entry = await self.store.fetch(known.id)
            if entry is not None and serves(entry, req):  # not expired, nor replaced by another process
                self.hits["semantic"] += 1
                return Lookup(Hit(entry, known.similarity, False), None)
        exact = await self.store.fetch(exact_key)
        if exact is not None and serves(exact, req):
            self.hits["exact"] += 1
            return Lookup(Hit(exact, 1.0, True), None)
        if req.messages and req.messages[-1].role == "tool":
            # an agent's turn answering a tool's output: output that reads alike (a file with one line
            # changed, another code word) needs another answer, so only the same output is a hit
            return Lookup(None, None)
        # a question sharing its rare words with a prompt of its scope is embedded first (engines/lexicon.py)
        first = self.lexical_first and self.lexicon.near(scope, req.query)
        vec = (await self.embed_many([req.query], first=first))[0]
        changes = self.index.changes(scope)
        # The index ranks by approximate (half-float) similarity; the candidates are re-scored exactly from
        # the stored vectors, so approximation never decides a hit, or a miss, on its own. The first search
        # runs inline: under a millisecond at any size (BENCHMARKS.md), less than a hop to a thread costs
        # here. Lists that find nothing close enough rescan wider, ~4 ms at a million entries: off the loop.
        found = self.index.search(scope, vec, 4)
        if (not found or found[0][1] < limit) and self.index.kind(scope) == "lists":
            found = await asyncio.to_thread(self.index.search, scope, vec, 4, limit)
        # The best *score* is served, not the nearest: a nearer prompt naming something the question does
        # not ("`remove_column`" asked as '"remove_column"') loses to one a little further that doesn't.
        # A cloud (or imported) answer outranks a local model's whatever their scores: both passed.
        best: tuple[tuple[bool, float], float, Entry] | None = None
        for (id_, _), entry in zip(found, await self.store.fetch_many([i for i, _ in found])):
            if entry is None:  # expired since it was indexed (or, with Redis, purged elsewhere or unreachable)
                self.index.remove(id_)
                self.lexicon.remove(id_)
                continue
            sim = float(entry.vec() @ vec)
            if sim < limit or not serves(entry, req):  # a score never exceeds its similarity
                continue
            score = await self.score(sim, entry.query, req.query, limit)
            rank = (entry.source != "local", score)
            if score >= limit and (best is None or rank > best[0]):
                best = (rank, sim, entry)
        if best is None:
            self.hits["miss"] += 1
            return Lookup(None, vec)
        _, sim, entry = best
        self._decided.remember(decision, _Decided(entry.id, sim, changes))
        self.hits["semantic"] += 1
        return Lookup(Hit(entry, sim, False), vec)

    async def put(self, req: Request, final: Final, source: str, vector: np.ndarray | None = None,
                  backend: str = "") -> Entry | None:
        """Store a complete answer. Empty answers are not worth serving again, and a local model's answer
        never replaces the cloud's (or an imported one) for the same prompt; the other way round it does."""
        if not final.text.strip():
            return None
        if source == "local":
            held = await self.store.fetch(req.exact_key())
            if held is not None and held.source != "local":
                return held
        if vector is None:
            vector = await self.embed(req.query)
        entry = Entry(
            id=req.exact_key(),
            scope_key=req.scope_key(),
            scope=req.scope(),
            query=req.query,
            answer=final.text,
            finish_reason=final.finish_reason,
            completion_tokens=final.completion_tokens,
            max_tokens=req.max_tokens,
            source=source,
            vector=np.asarray(vector, np.float32).tobytes(),
            backend=backend,
        )
        try:
            held = await asyncio.to_thread(self._write, entry)
        except Exception:
            self.write_failures += 1  # the caller logs it; the answer is still served
            raise
        if held is not None:
            return held
        self.index.add(entry.scope_key, entry.id, vector)
        self.lexicon.add(entry.scope_key, entry.id, entry.query)
        self._tenant_of[entry.scope_key] = req.tenant
        self._generation += 1  # our own write: nothing to re-index
        return entry

    def _write(self, entry: Entry) -> Entry | None:
        """Put `entry`, unless it is a local answer and the store now holds another source's for its
        prompt (then that one). Read past any in-memory copy: `edge-ai warm` or `cache import` in another
        process may have written it since this process last looked."""
        if entry.source == "local":
            held = self.store.read(entry.id)
            if held is not None and held.source != "local":
                return held
        self.store.put(entry)
        return None

    async def score(self, similarity: float, cached: str, asked: str, limit: float) -> float:
        """The hit decision's score of `cached` for `asked`, the stretch where they differ included
        (hit.differing): that costs two short embeddings, so only for a pair whose whole prompts pass,
        vetoes included."""
        where = differing(cached, asked)
        if where is None or self.judge.bound(similarity, cached, asked) < limit:
            return self.judge.score(similarity, cached, asked)
        # a follow-up: this lookup was admitted, so its stretch runs next and is not refused (Embedder)
        a, b = await self.embed_many(list(where), follow_up=True)
        return self.judge.score(similarity, cached, asked, float(a @ b))

    async def embed(self, text: str) -> np.ndarray:
        return (await self.embed_many([text]))[0]

    async def embed_many(self, texts: list[str], follow_up: bool = False, first: bool = False) -> list[np.ndarray]:
        """The texts' vectors: recent ones for texts embedded lately, the rest from the embedder."""
        vecs = [self._vectors.recall(t) for t in texts]
        todo = [i for i, v in enumerate(vecs) if v is None]
        if todo:
            for i, vec in zip(todo, await self.embedder.embed([texts[i] for i in todo], follow_up, first)):
                vec.flags.writeable = False  # shared by every lookup of this text
                self._vectors.remember(texts[i], vec)
                vecs[i] = vec
        return vecs

    def delete(self, id_: str) -> bool:
        """Remove one entry from disk and index: it is never served again (any remembered decision on
        its scope is voided with the index change)."""
        gone = self.store.delete(id_)
        self.index.remove(id_)
        self.lexicon.remove(id_)
        self._generation += 1  # our own write: nothing to re-index
        return gone

    def entries_by_tenant(self) -> dict[str, int]:
        """Indexed entries per tenant (the key's tenant: a narrowed `tenant/sub` counts as `tenant`)."""
        out: dict[str, int] = {}
        for scope, n in self.index.sizes().items():
            tenant = self._tenant_of.get(scope, "").split("/", 1)[0]
            out[tenant] = out.get(tenant, 0) + n
        return out

    def stats(self) -> dict[str, object]:
        return {"entries": len(self.store), "indexed": len(self.index), "threshold": self.threshold, **self.hits,
                "write_failures": self.write_failures, "store": self.store.stats()}

    @property
    def _lists_dir(self) -> Path | None:
        return self.store.directory / "lists" if self.store.directory else None

    def close(self) -> None:
        if self._lists_dir and self._generation == self.store.generation():
            self.index.save_lists(self._lists_dir, self._generation)
        self.store.close()
