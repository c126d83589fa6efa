"""What the HTTP layer costs an exact cache hit, in-process (no sockets, no load generator): the same
app and cache with three front ends, interleaved ABBA in one process so drift hits each alike.

- `fastapi`: the FastAPI app with the gatekeeper middleware removed (routing, the route, the answer).
- `open`: plus the gatekeeper with no keys configured (metrics, request observation): the default.
- `keyed`: plus a configured key checked on every request (sha256 + constant-time compare over 8 keys).

So `open - fastapi` is what metrics cost a request, and `keyed - fastapi` auth + metrics. The
FastAPI-vs-the-old-router cost over HTTP is `cache_hits.py --exact-only --wrk 10` run from a worktree of
each commit (BENCHMARKS.md).

    .venv/bin/python scripts/bench/http_layer.py [--n 3000] [--cycles 2]
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

KEY = "sk-bench-key-0007"


async def call(app: Any, body: bytes, headers: list[tuple[bytes, bytes]]) -> bool:
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions", "query_string": b"", "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()), (b"x-edge-cache", b"no-write"), *headers],
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2),
    }
    sent, hit = False, False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()
        return {}

    async def send(message: dict[str, Any]) -> None:
        nonlocal hit
        if message["type"] == "http.response.start":
            hit = message["status"] == 200 and dict(message["headers"]).get(b"x-edge-source") == b"cache"

    await app(scope, receive, send)
    return hit


async def measure(app: Any, bodies: list[bytes], n: int, headers: list[tuple[bytes, bytes]]) -> list[float]:
    for b in bodies[:200]:
        await call(app, b, headers)
    lat = []
    for i in range(n):
        t = time.perf_counter()
        if not await call(app, bodies[i % len(bodies)], headers):
            raise RuntimeError("not a cache hit")
        lat.append(time.perf_counter() - t)
    return lat


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--cycles", type=int, default=2, help="ABBA cycles (each runs every variant twice)")
    args = ap.parse_args()
    from cache_hits import warmed_cache
    from hit_path import with_lifespan

    from edge_ai.config import ApiKey, Settings
    from edge_ai.server.app import create_app

    pairs, cache_dir = warmed_cache("edge-layer-")
    bodies = [orjson.dumps({"model": "gpt-4o", "max_tokens": 1, "messages": [{"role": "user", "content": p["origin"]}]})
              for p in pairs]
    keys = [ApiKey(key=f"sk-other-{i}", tenant=f"t{i}") for i in range(7)] + [ApiKey(key=KEY, tenant="bench")]
    base = create_app(Settings(cache_dir=str(cache_dir), n_slots=4))
    runtime = base.state.runtime
    bare = create_app(Settings(cache_dir=str(cache_dir), n_slots=4))
    bare.user_middleware = []  # the stack is built on the first call: this one has no gatekeeper
    keyed = create_app(Settings(cache_dir=str(cache_dir), n_slots=4, api_keys=keys))
    auth = [(b"authorization", f"Bearer {KEY}".encode())]

    async def run() -> dict[str, list[float]]:
        await asyncio.to_thread(runtime.loaded.wait)
        for other in (bare, keyed):  # one set of engines behind all three front ends (only base's lifespan runs)
            rt = other.state.runtime
            for name in ("embedder", "models", "cache", "policy", "gateway", "error"):
                setattr(rt, name, getattr(runtime, name))
        # tenant "bench" has its own scope: fill it from the open tenant's entries by asking once through base
        variants = {"fastapi": (bare, []), "open": (base, []), "keyed": (keyed, auth)}
        await _fill_tenant(keyed, runtime, bodies, auth)
        out: dict[str, list[float]] = {k: [] for k in variants}
        order = list(variants) + list(variants)[::-1]
        for _ in range(args.cycles):
            for name in order:
                app, headers = variants[name]
                out[name] += await measure(app, bodies, args.n, headers)
        return out

    results = asyncio.run(with_lifespan(base, run))
    print(f"exact cache hits in-process, {args.n} x {2 * args.cycles} per variant (ABBA), {os.cpu_count()} CPUs")
    means, p50s = {}, {}
    for name, lat in results.items():
        lat.sort()
        means[name] = sum(lat) / len(lat) * 1e6
        p50s[name] = lat[len(lat) // 2] * 1e6
        print(f"{name:<8} mean {means[name]:6.1f} us  p50 {lat[len(lat) // 2] * 1e6:6.1f} us  p99 {lat[int(0.99 * (len(lat) - 1))] * 1e6:6.1f} us")
    print(f"metrics (open - fastapi): {means['open'] - means['fastapi']:+.1f} us; "
          f"auth + metrics (keyed - fastapi): {means['keyed'] - means['fastapi']:+.1f} us (means; outliers weigh in)")
    print(f"p50: metrics {p50s['open'] - p50s['fastapi']:+.1f} us; auth + metrics {p50s['keyed'] - p50s['fastapi']:+.1f} us")


async def _fill_tenant(app: Any, runtime: Any, bodies: list[bytes], auth: list[tuple[bytes, bytes]]) -> None:
    """Copy the warmed entries into the keyed tenant's scope, so its requests are exact hits too."""
    from dataclasses import replace

    from edge_ai.dialects import openai as oa
    from edge_ai.dialects.validate import parse
    from edge_ai.request import CacheControl, Final

    for b in bodies:
        req = parse(oa.ChatCompletionRequest, orjson.loads(b)).to_request(CacheControl(), "")
        entry = runtime.cache.store.get(req.exact_key())
        if entry is None:
            continue
        mine = replace(req, tenant="bench")
        await runtime.cache.put(mine, Final(entry.answer, entry.finish_reason, 0, entry.completion_tokens), "import", entry.vec())


if __name__ == "__main__":
    main()
