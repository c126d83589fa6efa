"""End-to-end cache hits over HTTP under concurrency.

Imports GPTCache's 999 `origin` sentences with recorded answers (edge-ai warm, no model call), starts
the server on that cache, then 50 concurrent clients ask (a) the origins again: exact-match hits, and
(b) the `similar` paraphrases: semantic hits (embedding + vector search). A first pass finds which
paraphrases hit (a miss costs a local-model prefill, which would load the CPU the hits are measured on);
the measured rounds ask only those. Latency is per request, client side. The load generator is aiohttp in its own
process: on 2 cores its CPU is taken from the server, and it costs a third of httpx's per request.

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

import aiohttp

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.conftest import Server  # noqa: E402


async def run(url: str, questions: list[str], clients: int, hit: set[str] | None = None) -> tuple[list[float], int, float]:
    queue = list(questions)
    lat: list[float] = []
    misses = 0
    hit = set() if hit is None else hit
    async with aiohttp.ClientSession(url, connector=aiohttp.TCPConnector(limit=clients)) as c:
        async def worker() -> None:
            nonlocal misses
            while queue:
                q = queue.pop()
                # max_tokens 1: a miss (paraphrase under the threshold) costs one token, not a whole answer
                body = {"model": "gpt-4o", "max_tokens": 1, "messages": [{"role": "user", "content": q}]}
                t = time.perf_counter()
                async with c.post("/v1/chat/completions", json=body, headers={"x-edge-cache": "no-write"}) as r:
                    await r.read()
                ms = (time.perf_counter() - t) * 1000
                if r.headers.get("x-edge-source") == "cache":
                    lat.append(ms)
                    hit.add(q)
                else:
                    misses += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
    return sorted(lat), misses, len(questions) / (time.perf_counter() - t0)


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
        hitting: set[str] = set()
        asyncio.run(run(srv.url, [p["similar"] for p in pairs], args.clients, hitting))
        similar = [p["similar"] for p in pairs if p["similar"] in hitting]
        print(f"{len(similar)} of {len(pairs)} paraphrases hit; the semantic rounds ask those")
        for name, qs in (("exact", [p["origin"] for p in pairs]), ("semantic", similar)):
            lat, misses, rps = asyncio.run(run(srv.url, qs * args.rounds, args.clients))
            print(f"{name:<9} hits {len(lat):5d}  misses {misses:4d}  p50 {lat[len(lat) // 2]:6.1f} ms  "
                  f"p99 {lat[int(0.99 * (len(lat) - 1))]:6.1f} ms  {rps:6.0f} requests/s")
    finally:
        srv.stop()


if __name__ == "__main__":
    main()
