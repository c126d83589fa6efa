"""What the shared cache on Redis costs and gives, against the embedded disk store, on this machine.

    .venv/bin/python scripts/bench/scaling.py [--wrk 10] [--followers 1 2 4 8] [--entries 20000]

1. Exact hits over HTTP (wrk, 50 connections): a replica on the disk store and one on Redis, ABBA, on the
   same 999 recorded answers. The Redis replica reads every hit from Redis (a hit is confirmed there).
2. Write-to-visible: one writer puts entries at ~100/s while N replicas follow the change stream (each a
   process of its own with its own connection, as replicas are); the time from a put returning to each
   follower holding the entry, p50 / p99 / max, at each N.
3. Redis memory per entry (vectors of 384 float32, recorded-answer sized text) and the time a replica
   takes to rebuild its index from Redis, both extrapolated to a million entries.
4. One store read in-process: DiskStore.get (memo) vs RedisStore.get (one round trip) per call.

Starts its own redis-server on a free port (no persistence).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts" / "bench"))

from edge_ai.engines.redis_store import RedisStore  # noqa: E402
from edge_ai.engines.store import DiskStore, Entry  # noqa: E402
from tests.conftest import RedisServer, Server  # noqa: E402


def cpu() -> str:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def entry(i: int, rng: np.random.Generator) -> Entry:
    v = rng.standard_normal(384).astype(np.float32)
    v /= np.linalg.norm(v)
    q = f"How do I configure the retention policy for bucket number {i} in the storage console?"
    return Entry(id=f"{i:012d}", scope_key="s" * 32, scope={"model": "gpt-4o", "tenant": "t", "system": "", "history": []},
                 query=q, answer="Open the console, pick the bucket, then Settings > Retention. " * 6,
                 finish_reason="stop", completion_tokens=90, max_tokens=None, source="cloud", vector=v.tobytes())


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * (len(xs) - 1)))]


# -- 1. exact hits over HTTP

def http_hits(redis_url: str, seconds: int) -> None:
    from cache_hits import run_wrk, warmed_cache

    pairs, disk_dir = warmed_cache("edge-scale-")
    env = {**os.environ, "EDGE_AI_REDIS_PREFIX": f"bench-{time.time_ns()}"}
    dump = disk_dir.parent / "dump.jsonl"
    subprocess.run([sys.executable, "-m", "edge_ai", "cache", "export", str(dump), "--cache-dir", str(disk_dir)], cwd=ROOT, check=True, env=env,
                   capture_output=True)
    subprocess.run([sys.executable, "-m", "edge_ai", "cache", "import", str(dump), "--cache-backend", "redis", "--redis-url", redis_url],
                   cwd=ROOT, check=True, env=env, capture_output=True)
    origins = [p["origin"] for p in pairs]
    replicas = {
        "disk": Server(disk_dir, "--log-level", "warning", "--n-slots", "4", env=env),
        "redis": Server(disk_dir.parent / "r", "--log-level", "warning", "--n-slots", "4", "--cache-backend", "redis",
                        "--redis-url", redis_url, env=env),
    }
    print(f"\n1. exact hits over HTTP, wrk 50 connections, {seconds} s a round, 999 recorded answers")
    for name in ("disk", "redis", "redis", "disk"):
        srv = replicas[name].start()
        run_wrk(srv.url, origins, 50, 2)  # warm up
        n, misses, p50, p99, rps = run_wrk(srv.url, origins, 50, seconds)
        print(f"   {name:<6} hits {n - misses:6d}  misses {misses:3d}  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  {rps:7.0f} hits/s")
        srv.stop()


# -- 2. write-to-visible

def _follow(url: str, prefix: str, ready, out, stop) -> None:
    class Arrivals:
        def __init__(self) -> None:
            self.at: dict[str, float] = {}

        def added(self, e: Entry) -> None:
            self.at.setdefault(e.id, time.time())

        def removed(self, id_: str) -> None:
            pass

        def reset(self, entries) -> None:
            for e in entries:
                self.at.setdefault(e.id, 0.0)

    seen = Arrivals()
    store = RedisStore(url, prefix=prefix)
    store.follow(seen)
    ready.set()
    stop.wait()
    store.close()
    out.put(seen.at)


def visibility(url: str, followers: list[int], writes: int) -> None:
    print(f"\n2. write-to-visible: {writes} puts at ~100/s, N replicas following (a process each)")
    rng = np.random.default_rng(1)
    ctx = mp.get_context("fork")
    for n in followers:
        prefix = f"vis-{n}-{time.time_ns()}"
        stop, out = ctx.Event(), ctx.Queue()
        readies = [ctx.Event() for _ in range(n)]
        procs = [ctx.Process(target=_follow, args=(url, prefix, r, out, stop)) for r in readies]
        for p in procs:
            p.start()
        for r in readies:
            r.wait(30)
        writer = RedisStore(url, prefix=prefix)
        done: dict[str, float] = {}
        for i in range(writes):
            e = entry(i, rng)
            writer.put(e)
            done[e.id] = time.time()
            time.sleep(0.01)
        time.sleep(1.5)
        stop.set()
        lat = []
        for _ in procs:
            at = out.get(timeout=30)
            lat += [(at[i] - t) * 1000 for i, t in done.items() if at.get(i)]
        for p in procs:
            p.join()
        missing = n * writes - len(lat)
        print(f"   N={n}: p50 {pct(lat, 0.5):6.2f} ms  p99 {pct(lat, 0.99):6.2f} ms  max {max(lat):7.2f} ms  never seen {missing}")
        writer.close()


# -- 3. memory and rebuild

def memory_and_rebuild(url: str, n: int) -> None:
    import redis

    r = redis.Redis.from_url(url)
    r.flushall()
    base = r.info("memory")["used_memory"]
    prefix = f"mem-{time.time_ns()}"
    rng = np.random.default_rng(2)
    store = RedisStore(url, prefix=prefix)
    pipe_t = time.perf_counter()
    for i in range(n):
        store.put(entry(i, rng))
    put_s = time.perf_counter() - pipe_t
    used = r.info("memory")["used_memory"] - base
    stream = r.memory_usage(store._log) or 0
    per = (used - stream) / n
    print(f"\n3. {n} entries: {put_s / n * 1e6:.0f} us a put (one Lua script, one round trip)")
    print(f"   Redis memory {used / 1e6:.1f} MB: {per:.0f} B an entry ({per * 1e6 / 2**30:.2f} GiB a million) "
          f"+ change stream {stream / 1e6:.1f} MB (capped at redis_stream_len records)")

    class Index:
        def __init__(self) -> None:
            self.n = 0

        def added(self, e: Entry) -> None:
            pass

        def removed(self, id_: str) -> None:
            pass

        def reset(self, entries) -> None:
            from edge_ai.engines.index import VectorIndex

            index = VectorIndex(384, background=False, ann_min=10**9)  # the scan and decode alone
            for e in entries:
                index.add(e.scope_key, e.id, e.vec())
                self.n += 1

    follower = RedisStore(url, prefix=prefix)
    t = time.perf_counter()
    follower.follow(Index(), wait=600)
    s = time.perf_counter() - t
    print(f"   a replica's rebuild from Redis: {s:.2f} s for {n} ({n / s:,.0f} entries/s; ~{1e6 / (n / s):.0f} s a million, "
          f"before inverted lists are trained: BENCHMARKS.md, Vector lookup)")
    follower.close()
    store.close()


# -- 4. one read

def reads(url: str) -> None:
    rng = np.random.default_rng(3)
    d = DiskStore(tempfile.mkdtemp(prefix="edge-read-"))
    rs = RedisStore(url, prefix=f"read-{time.time_ns()}")
    for i in range(100):
        e = entry(i, rng)
        d.put(e)
        rs.put(e)
    print("\n4. one store read in-process, 20,000 each, ABBA: get (one after another, blocking) and fetch_many "
          "(the request path: 50 reads asked at once, as 50 concurrent hits do, pipelined)")
    import asyncio

    async def fetches(s) -> None:
        for j in range(400):
            await asyncio.gather(*(s.fetch(f"{(j * 50 + i) % 100:012d}") for i in range(50)))

    for name, s in (("disk", d), ("redis", rs), ("redis", rs), ("disk", d)):
        t = time.perf_counter()
        for i in range(20_000):
            s.get(f"{i % 100:012d}")
        one = (time.perf_counter() - t) / 20_000 * 1e6
        t = time.perf_counter()
        asyncio.run(fetches(s))
        print(f"   {name:<6} get {one:6.1f} us   fetch, 50 at once {(time.perf_counter() - t) / 20_000 * 1e6:6.1f} us a read")
    rs.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wrk", type=int, default=10, metavar="SECONDS", help="length of each HTTP round (0: skip them)")
    ap.add_argument("--followers", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--writes", type=int, default=300)
    ap.add_argument("--entries", type=int, default=20_000)
    ap.add_argument("--parts", type=int, nargs="+", default=[1, 2, 3, 4], help="which of the parts above to run")
    args = ap.parse_args()
    print(f"{cpu()}, {os.cpu_count()} CPUs, redis-server {subprocess.run(['redis-server', '--version'], capture_output=True, text=True).stdout.split()[2]}")
    srv = RedisServer(Path(tempfile.mkdtemp(prefix="edge-redis-"))).start()
    try:
        if 4 in args.parts:
            reads(srv.url)
        if 2 in args.parts:
            visibility(srv.url, args.followers, args.writes)
        if 3 in args.parts:
            memory_and_rebuild(srv.url, args.entries)
        if 1 in args.parts and args.wrk:
            if not shutil.which("wrk"):
                ap.error("the HTTP rounds need wrk (apt-get install wrk)")
            http_hits(srv.url, args.wrk)
    finally:
        srv.stop()


if __name__ == "__main__":
    main()
