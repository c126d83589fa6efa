"""The embedding engine: backends agree, and micro-batching never changes a vector."""

from __future__ import annotations

import asyncio

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
        return await asyncio.gather(*(onnx_embedder.embed_one(t) for t in TEXTS * 8))

    got = asyncio.run(go())
    for i, v in enumerate(got):
        assert float(v @ alone[i % len(TEXTS)]) > 0.9999


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
