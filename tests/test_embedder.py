"""The embedding engine: backends agree, and micro-batching never changes a vector."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from edge_ai.engines.embedder import Embedder
from edge_ai.errors import Overloaded
from edge_ai.model_files import resolve_embedder

TEXTS = [
    "How do I learn Python?",
    "What is the capital of France, and why did it become the capital rather than Lyon or Marseille?",
    "tv",
    "Why is the sky blue during the day but red at sunset?",
]


@pytest.fixture(scope="module")
def torch_embedder():
    emb = Embedder(resolve_embedder(""), backend="torch")
    yield emb
    emb.close()


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("export")


@pytest.fixture(scope="module")
def onnx_embedder(export_dir):
    emb = Embedder(resolve_embedder(""), backend="onnx", export_dir=export_dir)
    yield emb
    emb.close()


def test_onnx_backend_gives_torchs_vectors(torch_embedder, onnx_embedder):
    assert onnx_embedder.backend == "onnx"
    a, b = onnx_embedder.encode(TEXTS), torch_embedder.encode(TEXTS)
    assert a.shape == b.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert float((a * b).sum(1).min()) > 0.9999


def test_export_is_reused(onnx_embedder, export_dir):
    exports = list(export_dir.iterdir())
    assert len(exports) == 1 and exports[0].suffix == ".onnx"  # no temporary file left behind
    made = exports[0].stat().st_mtime_ns
    again = Embedder(resolve_embedder(""), backend="onnx", export_dir=export_dir)
    try:
        assert again.backend == "onnx"
        assert list(export_dir.iterdir()) == exports and exports[0].stat().st_mtime_ns == made
    finally:
        again.close()


def test_concurrent_callers_get_the_vectors_of_their_own_text(onnx_embedder):
    """Callers are coalesced into length-sorted passes; each must still get its own text's vector."""
    alone = onnx_embedder.encode(TEXTS)

    async def go() -> list[np.ndarray]:
        return [v[0] for v in await asyncio.gather(*(onnx_embedder.embed([t]) for t in TEXTS * 8))]

    busy = onnx_embedder.stats()["busy_s"]
    got = asyncio.run(go())
    for i, v in enumerate(got):
        assert float(v @ alone[i % len(TEXTS)]) > 0.9999
    assert onnx_embedder.stats()["busy_s"] > busy  # what /readyz reports of the embedder's load


def test_full_queue_is_refused_but_embed_all_takes_any_number(tmp_path):
    emb = Embedder(resolve_embedder(""), backend="torch", max_queue=2)
    try:
        with pytest.raises(Overloaded):
            asyncio.run(emb.embed(["one", "two", "three"]))
        texts = [f"sentence number {i}" for i in range(7)]
        got = asyncio.run(emb.embed_all(texts))  # parts the queue admits, in order
        assert got.shape == (7, emb.dim) and np.allclose(got, emb.encode(texts), atol=1e-5)
    finally:
        emb.close()


def test_follow_ups_pass_a_full_queue_and_run_before_queued_work():
    """A lookup's differing stretch is a follow-up: refusing it would fail an admitted request, and
    queueing it behind a batch would double that request's wait."""
    emb = Embedder(resolve_embedder(""), backend="torch", max_queue=4, pass_size=2)
    passes: list[list[str]] = []
    forward = emb._forward
    loops: list[asyncio.AbstractEventLoop] = []

    def watched(texts: list[str]):
        passes.append(list(texts))
        if texts[0] == "queued a":  # a follow-up arrives while the first pass of a 4-text batch runs
            asyncio.run_coroutine_threadsafe(emb.embed(["late follow-up"], follow_up=True), loops[0])
            deadline = time.monotonic() + 10
            while not emb._follow_ups and time.monotonic() < deadline:
                time.sleep(0.01)
        return forward(texts)

    emb._forward = watched

    async def go():
        loops.append(asyncio.get_running_loop())
        queued = ["queued a", "queued b", "queued c", "queued d"]
        with emb._cond:  # hold the worker back (an RLock: our own calls still enter) while the queue fills
            batch = asyncio.ensure_future(emb.embed(queued))
            await asyncio.sleep(0)
            with pytest.raises(Overloaded):
                await emb.embed(["refused"])
            first = asyncio.ensure_future(emb.embed(["early follow-up"], follow_up=True))
            await asyncio.sleep(0)
        return await first, await batch

    try:
        first, batch = asyncio.run(go())
        assert passes == [["early follow-up"], ["queued a", "queued b"], ["late follow-up"], ["queued c", "queued d"]]
        assert float(first[0] @ emb.encode(["early follow-up"])[0]) > 0.9999
        assert batch.shape == (4, emb.dim)
    finally:
        emb.close()


def test_texts_asked_first_run_before_the_queue_and_count_against_its_bound():
    """A likely cache hit (engines/lexicon.py) is embedded before new questions queued earlier, also between
    the passes of a batch already taken; it is refused like them when the queue is full."""
    emb = Embedder(resolve_embedder(""), backend="torch", max_queue=5, pass_size=2)
    passes: list[list[str]] = []
    forward = emb._forward
    loops: list[asyncio.AbstractEventLoop] = []

    def watched(texts: list[str]):
        passes.append(list(texts))
        if texts[0] == "queued a":  # a likely hit arrives while the first pass of a 4-text batch runs
            asyncio.run_coroutine_threadsafe(emb.embed(["late likely"], first=True), loops[0])
            deadline = time.monotonic() + 10
            while not emb._first and time.monotonic() < deadline:
                time.sleep(0.01)
        return forward(texts)

    emb._forward = watched

    async def go():
        loops.append(asyncio.get_running_loop())
        with emb._cond:  # hold the worker back while the queue fills
            batch = asyncio.ensure_future(emb.embed(["queued a", "queued b", "queued c", "queued d"]))
            await asyncio.sleep(0)
            likely = asyncio.ensure_future(emb.embed(["early likely"], first=True))
            await asyncio.sleep(0)
            with pytest.raises(Overloaded):
                await emb.embed(["one too many"], first=True)
        return await likely, await batch

    try:
        likely, batch = asyncio.run(go())
        assert passes == [["early likely"], ["queued a", "queued b"], ["late likely"], ["queued c", "queued d"]]
        assert float(likely[0] @ emb.encode(["early likely"])[0]) > 0.9999 and batch.shape == (4, emb.dim)
    finally:
        emb.close()


def test_a_pass_holds_the_cores_turn_and_gives_it_back(onnx_embedder):
    seen: list[bool] = []
    forward = onnx_embedder._forward

    def watched(texts):
        seen.append(onnx_embedder.turns.busy)
        return forward(texts)

    onnx_embedder._forward = watched
    try:
        asyncio.run(onnx_embedder.embed(["a paraphrase to look up"]))
    finally:
        onnx_embedder._forward = forward
    assert seen == [True]  # the caller's vector arrives inside the pass; the turn ends just after it
    deadline = time.monotonic() + 10
    while onnx_embedder.turns.busy and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not onnx_embedder.turns.busy
