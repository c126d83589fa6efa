"""Embedding throughput: one-at-a-time vs offline batches vs 64 concurrent HTTP clients (micro-batched).

    .venv/bin/python scripts/bench/embeddings.py [--n 1024] [--clients 64]

Sentences are QQP questions from ../shared/data/qqp_dev.jsonl.gz. All three run in one process run, one
after another, on the same embedder. The HTTP load generator is aiohttp (a third of httpx's CPU per
request: on 2 cores the client's CPU is taken from the server).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from edge_ai.engines.embedder import Embedder  # noqa: E402
from edge_ai.model_files import resolve_embedder  # noqa: E402
from tests.conftest import Server  # noqa: E402


def sentences(n: int) -> list[str]:
    out = []
    with gzip.open(ROOT.parent / "shared" / "data" / "qqp_dev.jsonl.gz", "rt") as fh:
        for line in fh:
            out.append(json.loads(line)["text_a"])
            if len(out) >= n:
                break
    return out


async def http_rate(url: str, texts: list[str], clients: int) -> float:
    queue = list(texts)
    async with aiohttp.ClientSession(url, connector=aiohttp.TCPConnector(limit=clients), raise_for_status=True) as c:
        async def worker() -> None:
            while queue:
                t = queue.pop()
                async with c.post("/v1/embeddings", json={"model": "m", "input": t}) as r:
                    await r.read()

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        return len(texts) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--backend", choices=["onnx", "torch"], default="onnx", help="the embedder backend measured (server and offline)")
    args = ap.parse_args()
    texts = sentences(args.n)
    emb = Embedder(resolve_embedder(""), backend=args.backend, export_dir=ROOT / "models" / "embedders")
    emb.encode(texts[:64])
    rates: dict[str, float] = {}

    def rate(name: str, n: int, work) -> None:
        t = time.perf_counter()
        work()
        rates[name] = n / (time.perf_counter() - t)

    rate("one at a time, sentence-transformers encode (torch)", 256, lambda: [emb.model.encode([s]) for s in texts[:256]])
    rate(f"one at a time, {emb.backend}", 256, lambda: [emb._forward([s]) for s in texts[:256]])
    rate(f"batched bs=64 in order, {emb.backend}", len(texts), lambda: [emb._forward(texts[i : i + 64]) for i in range(0, len(texts), 64)])
    rate(f"length-sorted passes of {emb.pass_size}, {emb.backend}", len(texts), lambda: emb.encode(texts))
    emb.close()
    srv = Server(Path(tempfile.mkdtemp()) / "cache", "--log-level", "warning", "--embedder-backend", args.backend).start()
    try:
        asyncio.run(http_rate(srv.url, texts[:128], args.clients))  # warm
        http = asyncio.run(http_rate(srv.url, texts, args.clients))
    finally:
        srv.stop()
    print(f"embeddings, {len(texts)} QQP sentences, {os.cpu_count()} CPUs, all-MiniLM-L6-v2")
    print(f"{'mode':<66}{'sentences/s':>12}{'HTTP is':>10}")
    for name, r in rates.items():
        print(f"{name + ' (offline)':<66}{r:>12.1f}{http / r:>9.2f}x")
    print(f"{f'HTTP /v1/embeddings, {args.clients} concurrent clients, {args.backend}':<66}{http:>12.1f}")


if __name__ == "__main__":
    main()
