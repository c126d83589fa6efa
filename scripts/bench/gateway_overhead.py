"""Gateway-mode proxy overhead, and what an open breaker costs.

Starts the fake cloud (loopback) and `edge-ai serve` fronting it, then runs, side by side in one run:
  direct   - N sequential non-streaming requests straight to the fake cloud
  gateway  - the same N requests through edge-ai (forward, pass through, write-through off the response path)
  breaker  - the cloud hangs (slow mode); once the breaker is open, N requests (cache hits) must not wait on it
Usage:

    .venv/bin/python scripts/bench/gateway_overhead.py [--n 300]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from edge_ai.fake_cloud import FakeCloud  # noqa: E402
from tests.conftest import Server  # noqa: E402


def timed(client: httpx.Client, url: str, body: dict) -> tuple[float, httpx.Response]:
    t = time.perf_counter()
    r = client.post(url, json=body)
    return (time.perf_counter() - t) * 1000, r


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--no-write", action="store_true", help="send x-edge-cache: no-write (isolates write-through cost)")
    args = ap.parse_args()
    cloud = FakeCloud().start()
    cloud.set("healthy", event_delay=0)
    d = Path(tempfile.mkdtemp(prefix="edge-gw-bench-"))
    cfg = d / "edge.toml"
    cfg.write_text(f'breaker_failures = 3\nbreaker_cooldown = 600\n[[upstreams]]\nname = "claude"\ndialect = "anthropic"\n'
                   f'base_url = "{cloud.url}"\napi_key = "k"\nfirst_byte_timeout = 0.5\n')
    srv = Server(d / "cache", "--config", str(cfg), "--log-level", "warning", env={"EDGE_AI_N_SLOTS": "16", "EDGE_AI_N_CTX_SLOT": "2048"}).start()
    try:
        direct, via = [], []
        with httpx.Client(timeout=30, headers={"x-edge-cache": "no-write"} if args.no_write else {}) as c:
            qs = [f"Question number {i}?" for i in range(args.n)]
            for q in qs[:20]:  # warm both paths
                body = {"model": "claude-sonnet-4-5", "max_tokens": 16, "messages": [{"role": "user", "content": q}]}
                timed(c, cloud.url + "/v1/messages", body)
                timed(c, srv.url + "/v1/messages", body)
            for q in qs:  # interleaved, so both see the same machine state
                body = {"model": "claude-sonnet-4-5", "max_tokens": 16, "messages": [{"role": "user", "content": q}]}
                direct.append(timed(c, cloud.url + "/v1/messages", body)[0])
                ms, r = timed(c, srv.url + "/v1/messages", body)
                assert r.headers["x-edge-source"] == "cloud"
                via.append(ms)
            time.sleep(1)  # write-throughs land
            cloud.set("slow", delay=5.0)
            for q in qs[:3]:  # three first-byte timeouts open the breaker
                timed(c, srv.url + "/v1/messages", {"model": "claude-sonnet-4-5", "max_tokens": 16, "messages": [{"role": "user", "content": q + "x"}]})
            seen = cloud.stats.requests
            open_ms = []
            for q in qs:
                ms, r = timed(c, srv.url + "/v1/messages", {"model": "claude-sonnet-4-5", "max_tokens": 16, "messages": [{"role": "user", "content": q}]})
                assert r.headers["x-edge-source"] == ("local" if args.no_write else "cache"), r.headers
                open_ms.append(ms)
            waited = cloud.stats.requests - seen
        print(f"gateway overhead, {args.n} sequential non-streaming requests, {os.cpu_count()} CPUs")
        print(f"{'path':<34}{'p50 ms':>9}{'p95 ms':>9}")
        for name, xs in (("direct to fake cloud", direct), ("through edge-ai (cloud answer)", via), ("breaker open (cache hit)", open_ms)):
            print(f"{name:<34}{statistics.median(xs):>9.2f}{pct(xs, 95):>9.2f}")
        print(f"proxy overhead p50: {statistics.median(via) - statistics.median(direct):.2f} ms; "
              f"requests sent upstream while the breaker was open: {waited}")
    finally:
        srv.stop()
        cloud.stop()


if __name__ == "__main__":
    main()
