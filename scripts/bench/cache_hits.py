"""End-to-end cache hits over HTTP under concurrency.

Imports GPTCache's 999 `origin` sentences with recorded answers (edge-ai warm, no model call), starts
the server on that cache, then 50 concurrent clients ask (a) the origins again: exact-match hits, and
(b) the `similar` paraphrases: semantic hits (embedding + vector search). Latency is per request,
client side; only requests answered from the cache are counted.

    .venv/bin/python scripts/bench/cache_hits.py [--clients 50] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.conftest import Server  # noqa: E402


async def run(url: str, questions: list[str], clients: int) -> tuple[list[float], int]:
    queue = list(questions)
    lat: list[float] = []
    misses = 0
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=httpx.Limits(max_connections=clients)) as c:
        async def worker() -> None:
            nonlocal misses
            while queue:
                q = queue.pop()
                # max_tokens 1: a miss (paraphrase under the threshold) costs one token, not a whole answer
                body = {"model": "gpt-4o", "max_tokens": 1, "messages": [{"role": "user", "content": q}]}
                t = time.perf_counter()
                r = await c.post("/v1/chat/completions", json=body, headers={"x-edge-cache": "no-write"})
                ms = (time.perf_counter() - t) * 1000
                if r.headers.get("x-edge-source") == "cache":
                    lat.append(ms)
                else:
                    misses += 1

        await asyncio.gather(*(worker() for _ in range(clients)))
    return sorted(lat), misses


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    pairs = json.loads((ROOT.parent / "shared" / "data" / "gptcache_mock_data.json").read_text())
    d = Path(tempfile.mkdtemp(prefix="edge-hits-"))
    with open(d / "log.jsonl", "w") as fh:
        for p in pairs:
            fh.write(json.dumps({"request": {"model": "gpt-4o", "messages": [{"role": "user", "content": p["origin"]}]},
                                 "response": {"choices": [{"message": {"role": "assistant", "content": "Answer: " + p["origin"]}, "finish_reason": "stop"}]}}) + "\n")
    subprocess.run([sys.executable, "-m", "edge_ai", "warm", str(d / "log.jsonl"), "--cache-dir", str(d / "cache")], cwd=ROOT, check=False,
                   capture_output=True)
    srv = Server(d / "cache", "--log-level", "warning", "--n-slots", "4").start()
    try:
        asyncio.run(run(srv.url, [p["origin"] for p in pairs[:100]], args.clients))  # warm up
        print(f"cache hits over HTTP, {args.clients} concurrent clients, {os.cpu_count()} CPUs")
        for name, qs in (("exact", [p["origin"] for p in pairs]), ("semantic", [p["similar"] for p in pairs])):
            lat, misses = asyncio.run(run(srv.url, qs * args.rounds, args.clients))
            print(f"{name:<9} hits {len(lat):5d}  misses {misses:4d}  p50 {lat[len(lat) // 2]:6.1f} ms  p99 {lat[int(0.99 * (len(lat) - 1))]:6.1f} ms")
    finally:
        srv.stop()


if __name__ == "__main__":
    main()
