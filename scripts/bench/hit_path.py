"""CPU cost of one cache hit inside the server, without sockets or a load generator.

Warms a cache with GPTCache's 999 origins (recorded answers, no model call), loads edge-ai's app
in-process, and calls it as an ASGI app for N sequential exact hits, then N semantic hits on paraphrases
asked again (each was asked once before, so its vector and hit decision are remembered: this is the
path without the embedder, whose cost is in `embeddings.py`); the anchor is `floor_server.py`'s
app (the same router and Starlette responses answering a fixed body) called the same way. On 2 shared cores the HTTP
benchmarks (`cache_hits.py`) drift ±30% run to run; this isolates what edge-ai's own code costs.

    .venv/bin/python scripts/bench/hit_path.py [--n 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts" / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


async def call(app: Any, body: bytes) -> int:
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions", "query_string": b"", "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()), (b"x-edge-cache", b"no-write")],
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2),
    }
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client never leaves
        return {}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = dict(message["headers"]).get(b"x-edge-source") == b"cache" and message["status"]

    await app(scope, receive, send)
    return status


async def measure(app: Any, bodies: list[bytes], n: int) -> tuple[float, float, float]:
    for b in bodies:  # warm: memos, first-touch
        await call(app, b)
    lat = []
    for i in range(n):
        t = time.perf_counter()
        ok = await call(app, bodies[i % len(bodies)])
        lat.append(time.perf_counter() - t)
        if ok != 200:
            raise RuntimeError("not a cache hit: is the cache warm?")
    lat.sort()
    return sum(lat) / n * 1e6, lat[n // 2] * 1e6, lat[int(0.99 * (n - 1))] * 1e6


async def with_lifespan(app: Any, work: Any) -> Any:
    inbox: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    started = asyncio.Event()

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "lifespan.startup.complete":
            started.set()

    await inbox.put({"type": "lifespan.startup"})
    task = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}}, inbox.get, send))
    await started.wait()
    try:
        return await work()
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        await task


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=3000)
    args = ap.parse_args()
    from cache_hits import warmed_cache
    from floor_server import app as floor_app

    from edge_ai.server.app import create_app
    from edge_ai.config import Settings

    pairs, cache_dir = warmed_cache("edge-hitpath-")
    bodies = [orjson.dumps({"model": "gpt-4o", "max_tokens": 1, "messages": [{"role": "user", "content": p["origin"]}]})
              for p in pairs]
    app = create_app(Settings(cache_dir=str(cache_dir), n_slots=4))

    async def both() -> list[tuple[str, tuple[float, float, float]]]:
        await asyncio.to_thread(app.state.runtime.loaded.wait)  # models load in the background
        edge = await measure(app, bodies, args.n)
        similar = [orjson.dumps({"model": "gpt-4o", "max_tokens": 1, "messages": [{"role": "user", "content": p["similar"]}]})
                   for p in pairs]
        hitting = [b for b in similar if await call(app, b) == 200]  # a miss costs a 1-token local answer
        semantic = await measure(app, hitting, args.n)
        floor = await measure(floor_app, bodies, args.n)
        return [("edge-ai exact hit", edge), ("semantic hit, again", semantic), ("floor (fixed body)", floor)]

    rows = asyncio.run(with_lifespan(app, both))
    print(f"{args.n} sequential in-process requests, {os.cpu_count()} CPUs")
    for name, (mean, p50, p99) in rows:
        print(f"{name:<20} mean {mean:6.0f} us  p50 {p50:6.0f} us  p99 {p99:6.0f} us")
    for name, (mean, _, _) in rows[:2]:
        print(f"{name} / floor (mean): {mean / rows[-1][1][0]:.1f}x")


if __name__ == "__main__":
    main()
