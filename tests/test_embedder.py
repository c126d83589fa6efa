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


@pytest.mark.parametrize("kind", ["follow_up", "first"])
def test_urgent_texts_run_before_queued_work_even_between_a_batchs_passes(kind):
    """A lookup's differing stretch (a follow-up: queued behind a batch, it would double an admitted
    request's wait) and a likely cache hit (`first`, engines/lexicon.py) run before texts queued earlier,
    also when they arrive while a batch already taken is being embedded."""
    emb = Embedder(resolve_embedder(""), backend="torch", max_queue=8, pass_size=2)
    passes: list[list[str]] = []
    forward = emb._forward
    loops: list[asyncio.AbstractEventLoop] = []
    urgent = {kind: True}

    def watched(texts: list[str]):
        passes.append(list(texts))
        if texts[0] == "queued a":  # an urgent text arrives while the first pass of a 4-text batch runs
            asyncio.run_coroutine_threadsafe(emb.embed(["late"], **urgent), loops[0])
            deadline = time.monotonic() + 10
            while not (emb._follow_ups or emb._first) and time.monotonic() < deadline:
                time.sleep(0.01)
        return forward(texts)

    emb._forward = watched

    async def go():
        loops.append(asyncio.get_running_loop())
        with emb._cond:  # hold the worker back (an RLock: our own calls still enter) while the queue fills
            batch = asyncio.ensure_future(emb.embed(["queued a", "queued b", "queued c", "queued d"]))
            await asyncio.sleep(0)
            early = asyncio.ensure_future(emb.embed(["early"], **urgent))
            await asyncio.sleep(0)
        return await early, await batch

    try:
        early, batch = asyncio.run(go())
        assert passes == [["early"], ["queued a", "queued b"], ["late"], ["queued c", "queued d"]]
        assert float(early[0] @ emb.encode(["early"])[0]) > 0.9999 and batch.shape == (4, emb.dim)
    finally:
        emb.close()


def test_a_follow_up_passes_a_full_queue_and_a_likely_hit_does_not():
    """Refusing a follow-up would fail a request already admitted; a likely hit is a new request like any."""
    emb = Embedder(resolve_embedder(""), backend="torch", max_queue=2)

    async def go():
        with emb._cond:  # hold the worker back while the queue fills
            queued = asyncio.ensure_future(emb.embed(["one", "two"]))
            await asyncio.sleep(0)
            with pytest.raises(Overloaded):
                await emb.embed(["likely"], first=True)
            follow_up = asyncio.ensure_future(emb.embed(["stretch"], follow_up=True))
            await asyncio.sleep(0)
        return await queued, await follow_up

    try:
        queued, follow_up = asyncio.run(go())
        assert queued.shape == (2, emb.dim) and follow_up.shape == (1, emb.dim)
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
