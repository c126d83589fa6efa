"""Sentence embeddings, with concurrent callers coalesced into micro-batches.

One worker thread owns the model. Callers enqueue texts and await futures; the worker takes what
is waiting (up to `max_batch` texts / `max_tokens` tokens), waits at most `max_wait_s` for more,
sorts by length so padding stays small, and encodes them in one forward pass. With no wait (the
default) a lone request is never delayed, and under load whatever queued during one forward pass
becomes the next batch.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_ai.errors import Overloaded


@dataclass
class _Item:
    text: str
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[tuple[np.ndarray, int]]  # (unit vector, tokens the model saw)


class Embedder:
    def __init__(
        self,
        path: str | Path,
        *,
        max_batch: int = 64,
        max_tokens: int = 8192,
        max_wait_s: float = 0.0,
        max_queue: int = 1024,
    ) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        self.dim = int(self.model.get_embedding_dimension())
        self.max_batch, self.max_tokens, self.max_wait_s, self.max_queue = max_batch, max_tokens, max_wait_s, max_queue
        self.batches = 0
        self.texts = 0
        self._pending: deque[_Item] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="embedder", daemon=True)
        self._thread.start()

    def encode(self, texts: list[str]) -> np.ndarray:
        """Encode in batches of `max_batch`; rows are L2-normalised float32. Call from one thread only
        (the tokenizer is not thread-safe): offline tools, or the worker."""
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return np.concatenate([self._forward(texts[i : i + self.max_batch])[0] for i in range(0, len(texts), self.max_batch)])

    def _forward(self, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        """One forward pass through the model's own modules (tokenizer, transformer, pooling), without
        `SentenceTransformer.encode`'s per-call machinery, which costs more than the model on one sentence."""
        import torch

        features = self.model.preprocess(texts) if hasattr(self.model, "preprocess") else self.model.tokenize(texts)
        counts = features["attention_mask"].sum(dim=1).tolist()
        with torch.inference_mode():
            emb = self.model(features)["sentence_embedding"]
            emb = torch.nn.functional.normalize(emb, p=2, dim=1)
        return emb.float().numpy(), counts

    async def embed(self, texts: list[str]) -> np.ndarray:
        """Embed texts through the shared micro-batcher. Raises Overloaded when the queue is full."""
        return (await self.embed_counted(texts))[0]

    async def embed_counted(self, texts: list[str]) -> tuple[np.ndarray, int]:
        """Vectors and the number of tokens the model saw (usage counts, taken in the worker thread)."""
        loop = asyncio.get_running_loop()
        items = [_Item(t, loop, loop.create_future()) for t in texts]
        with self._cond:
            if len(self._pending) + len(items) > self.max_queue:
                raise Overloaded("the embedding queue is full", retry_after=1)
            self._pending.extend(items)
            self._cond.notify()
        done = await asyncio.gather(*(i.future for i in items))
        if not done:
            return np.zeros((0, self.dim), np.float32), 0
        return np.stack([v for v, _ in done]), sum(n for _, n in done)

    async def embed_one(self, text: str) -> np.ndarray:
        return (await self.embed([text]))[0]

    def stats(self) -> dict[str, int]:
        return {"batches": self.batches, "texts": self.texts, "queued": len(self._pending), "max_queue": self.max_queue}

    def close(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout=10)

    def _take(self) -> list[_Item]:
        with self._cond:
            while not self._pending and not self._stopping:
                self._cond.wait()
            if self._stopping:
                return []
            deadline = time.perf_counter() + self.max_wait_s
            while len(self._pending) < self.max_batch:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                self._cond.wait(left)
            batch: list[_Item] = []
            budget = self.max_tokens
            while self._pending and len(batch) < self.max_batch:
                cost = len(self._pending[0].text) // 4 + 2  # rough token count: cheap and safe
                if batch and cost > budget:
                    break
                budget -= cost
                batch.append(self._pending.popleft())
            return batch

    def _run(self) -> None:
        while True:
            batch = self._take()
            if not batch:
                return
            batch.sort(key=lambda i: len(i.text))
            try:
                vecs, counts = self._forward([i.text for i in batch])
                self.batches += 1
                self.texts += len(batch)
                for item, vec, n in zip(batch, vecs, counts):
                    item.loop.call_soon_threadsafe(_resolve, item.future, (vec, int(n)))
            except Exception as exc:  # a failed batch fails its callers, not the worker
                for item in batch:
                    item.loop.call_soon_threadsafe(_fail, item.future, exc)


def _resolve(future: asyncio.Future[tuple[np.ndarray, int]], value: tuple[np.ndarray, int]) -> None:
    if not future.done():
        future.set_result(value)


def _fail(future: asyncio.Future[tuple[np.ndarray, int]], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
