"""Sentence embeddings, with concurrent callers coalesced into micro-batches.

One worker thread owns the model. Callers enqueue texts and await futures; the worker takes what
is waiting (up to `max_batch` texts / `max_tokens` tokens), waits at most `max_wait_s` for more,
sorts by length and encodes them in forward passes of `pass_size` texts of similar length, so
padding stays small. With no wait (the
default) a lone request is never delayed, and under load whatever queued during one forward pass
becomes the next batch.

Follow-ups (texts a request already admitted needs in order to finish: a cache lookup's differing
stretch) skip the queue: they run before the next pass, even between the passes of a batch, and are
never refused, since refusing them would fail work already done.

Texts asked `first` (a question the lexical index finds likely to hit: engines/lexicon.py) come next:
before the queue's other texts, between a batch's passes too. They count against the queue's bound.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edge_ai.engines.priority import CpuTurns, lower_priority, started_at

from edge_ai.errors import Overloaded

log = logging.getLogger("edge_ai.embedder")


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
        pass_size: int = 16,
        max_tokens: int = 8192,
        max_wait_s: float = 0.0,
        max_queue: int = 1024,
        backend: Literal["onnx", "torch"] = "torch",
        export_dir: str | Path | None = None,
        nice: int = 0,
        turns: CpuTurns | None = None,
    ) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        self.dim = int(self.model.get_embedding_dimension())
        self.backend = "torch"
        self._onnx: _OnnxPipeline | None = None
        if backend == "onnx":
            try:
                # its thread pool starts with the session: made on a lower thread, the pool is lower too
                self._onnx = started_at(nice, lambda: _OnnxPipeline(self.model, Path(path), Path(export_dir or Path(path) / "onnx")))
                self.backend = "onnx"
            except Exception as exc:  # a model the exporter cannot trace still works, on torch
                log.warning("embedder: ONNX export/load failed (%s: %s); using torch", type(exc).__name__, exc)
        self.max_batch, self.max_tokens, self.max_wait_s, self.max_queue = max_batch, max_tokens, max_wait_s, max_queue
        self.pass_size = pass_size
        self.nice = nice
        self.turns = turns or CpuTurns()  # shared with the model's decode thread, which waits for passes
        self.batches = 0
        self.texts = 0
        self.busy_s = 0.0  # time spent in passes: against wall time, how loaded the embedder is
        self.pass_sizes: Counter[int] = Counter()  # texts per forward pass -> passes (bounded by pass_size)
        self.rejected = 0
        self._pending: deque[_Item] = deque()
        self._follow_ups: deque[_Item] = deque()
        self._first: deque[_Item] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="embedder", daemon=True)
        self._thread.start()

    def encode(self, texts: list[str]) -> np.ndarray:
        """Encode in length-sorted passes of `pass_size`; rows (in the given order) are L2-normalised
        float32. Call from one thread only (the tokenizer is not thread-safe): offline tools."""
        out = np.zeros((len(texts), self.dim), np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), self.pass_size):
            rows = order[start : start + self.pass_size]
            out[rows] = self._forward([texts[i] for i in rows])[0]
        return out

    def _forward(self, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        """One forward pass through the model's own modules (tokenizer, transformer, pooling), without
        `SentenceTransformer.encode`'s per-call machinery, which costs more than the model on one sentence."""
        import torch

        features = self.model.preprocess(texts) if hasattr(self.model, "preprocess") else self.model.tokenize(texts)
        counts = features["attention_mask"].sum(dim=1).tolist()
        if self._onnx is not None:
            emb = self._onnx(features)
            return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12), counts
        with torch.inference_mode():
            emb = self.model(features)["sentence_embedding"]
            emb = torch.nn.functional.normalize(emb, p=2, dim=1)
        return emb.float().numpy(), counts

    async def embed(self, texts: list[str], follow_up: bool = False, first: bool = False) -> np.ndarray:
        """Embed texts through the shared micro-batcher. Raises Overloaded when the queue is full, unless
        they are a `follow_up`; `first` puts them before the queue's others (see the module's doc)."""
        return (await self.embed_counted(texts, follow_up, first))[0]

    async def embed_counted(self, texts: list[str], follow_up: bool = False,
                            first: bool = False) -> tuple[np.ndarray, int]:
        """Vectors and the number of tokens the model saw (usage counts, taken in the worker thread)."""
        loop = asyncio.get_running_loop()
        items = [_Item(t, loop, loop.create_future()) for t in texts]
        with self._cond:
            if follow_up:
                self._follow_ups.extend(items)
            elif len(self._pending) + len(self._first) + len(items) > self.max_queue:
                self.rejected += 1
                raise Overloaded("the embedding queue is full", retry_after=1)
            else:
                (self._first if first else self._pending).extend(items)
            self._cond.notify()
        done = await asyncio.gather(*(i.future for i in items))
        if not done:
            return np.zeros((0, self.dim), np.float32), 0
        return np.stack([v for v, _ in done]), sum(n for _, n in done)

    async def embed_all(self, texts: list[str]) -> np.ndarray:
        """Any number of texts (warm-up, eval), handed to the queue in parts it admits: one call with more
        than `max_queue` texts would be refused whole."""
        step = max(1, self.max_queue // 4)
        parts = [await self.embed(texts[i : i + step]) for i in range(0, len(texts), step)]
        return np.concatenate(parts) if parts else np.zeros((0, self.dim), np.float32)

    def stats(self) -> dict[str, object]:
        return {"backend": self.backend, "batches": self.batches, "texts": self.texts, "busy_s": round(self.busy_s, 3),
                "queued": len(self._pending) + len(self._first) + len(self._follow_ups), "max_queue": self.max_queue,
                "rejected": self.rejected, "decode_yielded_s": round(self.turns.yielded_s, 3)}

    def close(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout=10)

    def _take(self) -> list[_Item]:
        with self._cond:
            while not self._pending and not self._first and not self._follow_ups and not self._stopping:
                self._cond.wait()
            if self._stopping:
                return []
            if self._follow_ups or self._first:
                return self._take_urgent()
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

    def _take_urgent(self) -> list[_Item]:
        """Up to one pass: follow-ups, then texts asked first; the caller holds the lock."""
        out: list[_Item] = []
        for queue in (self._follow_ups, self._first):
            while queue and len(out) < self.pass_size:
                out.append(queue.popleft())
        return out

    def _run(self) -> None:
        lower_priority(self.nice)
        while True:
            batch = self._take()
            if not batch:
                return
            batch.sort(key=lambda i: len(i.text))
            with self.turns.first():
                # run as passes of similar length: a pass is padded to its longest text, and on this CPU
                # 16 sorted texts a pass beat one pass of 64 mixed ones by 1.6x (BENCHMARKS.md)
                for start in range(0, len(batch), self.pass_size):
                    if self._follow_ups or self._first:  # unlocked peek: at worst one pass late
                        with self._cond:
                            urgent = self._take_urgent()
                        self._pass(sorted(urgent, key=lambda i: len(i.text)))
                    self._pass(batch[start : start + self.pass_size])

    def _pass(self, group: list[_Item]) -> None:
        if not group:
            return
        start = time.perf_counter()
        try:
            vecs, counts = self._forward([i.text for i in group])
            self.busy_s += time.perf_counter() - start
            self.batches += 1
            self.texts += len(group)
            self.pass_sizes[len(group)] += 1
            for item, vec, n in zip(group, vecs, counts):
                item.loop.call_soon_threadsafe(_resolve, item.future, (vec, int(n)))
        except Exception as exc:  # a failed pass fails its callers, not the worker
            for item in group:
                item.loop.call_soon_threadsafe(_fail, item.future, exc)


class _OnnxPipeline:
    """The model's whole sentence-transformers pipeline (transformer, pooling, normalisation) exported
    once to ONNX and run by ONNX Runtime. Same vectors as torch (cosine 0.9999999 on QQP), about 3x
    faster on one sentence and ~20% on a batch on this CPU (BENCHMARKS.md). The export is made from the
    local weights (nothing downloaded) and kept, keyed by the model files, in `export_dir`."""

    def __init__(self, model: Any, path: Path, export_dir: Path) -> None:
        import onnxruntime as ort

        sample = model.preprocess(["edge-ai exports this model once", "to run it faster"])
        self.inputs = sorted(k for k, v in sample.items() if hasattr(v, "dtype") and v.dim() == 2)
        target = export_dir / f"{path.name}-{_fingerprint(path, self.inputs)}.onnx"
        if not target.is_file():
            _export(model, sample, self.inputs, target)
        self.path = target
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = os.cpu_count() or 1
        # no busy-waiting between passes: the cores are shared with the language model and the server
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(target), opts, providers=["CPUExecutionProvider"])

    def __call__(self, features: dict[str, Any]) -> np.ndarray:
        feeds = {k: features[k].numpy().astype(np.int64) for k in self.inputs}
        return np.asarray(self.session.run(None, feeds)[0], np.float32)


def _fingerprint(path: Path, inputs: list[str]) -> str:
    import torch

    h = hashlib.sha256(f"{path.resolve()}|{torch.__version__}|{inputs}".encode())
    for f in sorted(p for p in path.rglob("*") if p.is_file() and p.suffix != ".onnx"):
        st = f.stat()
        h.update(f"{f.relative_to(path)}:{st.st_size}:{int(st.st_mtime)}".encode())
    return h.hexdigest()[:16]


def _export(model: Any, sample: dict[str, Any], inputs: list[str], target: Path) -> None:
    import torch

    class Pipeline(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *args: torch.Tensor) -> torch.Tensor:
            return self.model(dict(zip(inputs, args)))["sentence_embedding"]

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    axes = {k: {0: "batch", 1: "tokens"} for k in inputs}
    t = time.perf_counter()
    with torch.inference_mode(False), torch.no_grad():
        torch.onnx.export(
            Pipeline().eval(), tuple(sample[k] for k in inputs), str(tmp), input_names=inputs,
            output_names=["embedding"], dynamic_axes={**axes, "embedding": {0: "batch"}}, opset_version=17, dynamo=False,
        )
    os.replace(tmp, target)  # whole file or none: a concurrent start exports its own copy
    log.info("embedder: exported to %s in %.1f s", target, time.perf_counter() - t)


def _resolve(future: asyncio.Future[tuple[np.ndarray, int]], value: tuple[np.ndarray, int]) -> None:
    if not future.done():
        future.set_result(value)


def _fail(future: asyncio.Future[tuple[np.ndarray, int]], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
