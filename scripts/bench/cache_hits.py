"""End-to-end cache hits over HTTP under concurrency.

Imports GPTCache's 999 `origin` sentences with recorded answers (edge-ai warm, no model call), starts
the server on that cache, then 50 concurrent clients ask (a) the origins again: exact-match hits, and
(b) the `similar` paraphrases: semantic hits (embedding + vector search). A first pass finds which
paraphrases hit (a miss costs a local-model prefill, which would load the CPU the hits are measured on);
the measured rounds ask only those: once on a restarted server ("semantic 1st": each asked for the
first time, so each is embedded), then `--rounds` more times ("semantic again": the cache remembers
recent questions' vectors and hit decisions, so these skip the embedder); for "semantic 1st" it also
prints the embedder's texts, passes and busy share of the round (from /readyz). Latency is per request, client side. The load generator is aiohttp in its own
process: on 2 cores its CPU is taken from the server, and it costs a third of httpx's per request.

    .venv/bin/python scripts/bench/cache_hits.py [--clients 50] [--rounds 2] [--floor] [--wrk SECONDS] [--exact-only]

--floor also runs the exact round against `floor_server.py` (the same HTTP stack answering with a fixed
body, no cache): what the stack and the load generator alone cost on this machine, side by side.
--wrk also runs each round with wrk (Debian's `wrk`, C, one thread) for that many seconds: the same 50
closed-loop connections cycling through the same bodies, at a fraction of aiohttp's CPU, so more of the
2 cores is left to the server, as it would be with clients on other machines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
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


WRK_SCRIPT = """
local bodies, i = {}, 0
misses = 0  -- a global: done() reads it with thread:get
function init(args)
  for line in io.lines(args[1]) do bodies[#bodies + 1] = line end
end
function request()
  i = i % #bodies + 1
  return wrk.format("POST", "/v1/chat/completions",
    {["Content-Type"] = "application/json", ["x-edge-cache"] = "no-write"}, bodies[i])
end
function response(status, headers, body)
  if headers["x-edge-source"] ~= "cache" then misses = misses + 1 end
end
function setup(thread) t = thread end
function done(summary, latency, requests)
  io.write(string.format("WRK %d %d %.3f %.3f\\n", summary.requests, t:get("misses"),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
"""


def run_wrk(url: str, questions: list[str], clients: int, seconds: int) -> tuple[int, int, float, float, float]:
    """(requests, misses, p50 ms, p99 ms, requests/s) from wrk on the same bodies as `run`."""
    d = Path(tempfile.mkdtemp(prefix="edge-wrk-"))
    with open(d / "bodies.txt", "w") as fh:
        for q in questions:
            fh.write(json.dumps({"model": "gpt-4o", "max_tokens": 1, "messages": [{"role": "user", "content": q}]}) + "\n")
    (d / "hits.lua").write_text(WRK_SCRIPT)
    out = subprocess.run(["wrk", "-t1", f"-c{clients}", f"-d{seconds}s", "-s", str(d / "hits.lua"), url, "--",
                          str(d / "bodies.txt")], capture_output=True, text=True, check=True).stdout
    n, misses, p50, p99 = re.search(r"WRK (\d+) (\d+) ([\d.]+) ([\d.]+)", out).groups()
    return int(n), int(misses), float(p50), float(p99), int(n) / seconds


def warmed_cache(prefix: str) -> tuple[list[dict[str, str]], Path]:
    """GPTCache's pairs, and a new cache holding each origin with a recorded answer (`edge-ai warm`
    imports logged exchanges as they are: no model call)."""
    pairs = json.loads((ROOT.parent / "shared" / "data" / "gptcache_mock_data.json").read_text())
    d = Path(tempfile.mkdtemp(prefix=prefix))
    with open(d / "log.jsonl", "w") as fh:
        for p in pairs:
            answer = {"message": {"role": "assistant", "content": "Answer: " + p["origin"]}, "finish_reason": "stop"}
            request = {"model": "gpt-4o", "messages": [{"role": "user", "content": p["origin"]}]}
            fh.write(json.dumps({"request": request, "response": {"choices": [answer]}}) + "\n")
    subprocess.run([sys.executable, "-m", "edge_ai", "warm", str(d / "log.jsonl"), "--cache-dir", str(d / "cache")],
                   cwd=ROOT, check=True, capture_output=True)
    return pairs, d / "cache"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--floor", action="store_true", help="also measure the bare HTTP stack (floor_server.py)")
    ap.add_argument("--exact-only", action="store_true", help="skip the semantic round (and its paraphrase pass)")
    ap.add_argument("--wrk", type=int, default=0, metavar="SECONDS", help="also load each round with wrk for this long")
    args = ap.parse_args()
    if args.wrk and not shutil.which("wrk"):
        ap.error("--wrk needs wrk on PATH (apt-get install wrk)")
    pairs, cache_dir = warmed_cache("edge-hits-")
    srv = Server(cache_dir, "--log-level", "warning", "--n-slots", "4").start()
    try:
        asyncio.run(run(srv.url, [p["origin"] for p in pairs[:100]], args.clients))  # warm up
        print(f"cache hits over HTTP, {args.clients} concurrent clients, {os.cpu_count()} CPUs")
        rounds = [("exact", srv.url, [p["origin"] for p in pairs])]
        if not args.exact_only:
            hitting: set[str] = set()
            asyncio.run(run(srv.url, [p["similar"] for p in pairs], args.clients, hitting))
            similar = [p["similar"] for p in pairs if p["similar"] in hitting]
            print(f"{len(similar)} of {len(pairs)} paraphrases hit; the semantic rounds ask those")
            srv.restart()  # forget the paraphrases' vectors: the first semantic round embeds each one
            asyncio.run(run(srv.url, [p["origin"] for p in pairs[:100]], args.clients))  # warm up (exact hits)
            rounds += [("semantic 1st", srv.url, similar), ("semantic again", srv.url, similar)]
        if args.floor:
            floor = _start_floor()
            rounds = [("floor", floor[1], [p["origin"] for p in pairs])] + rounds
        for name, url, qs in rounds:
            repeat = 1 if name == "semantic 1st" else args.rounds
            before, t0 = srv.status()["embedder"], time.perf_counter()
            lat, misses, rps = asyncio.run(run(url, qs * repeat, args.clients))
            print(f"{name:<15} hits {len(lat):5d}  misses {misses:4d}  p50 {lat[len(lat) // 2]:6.1f} ms  "
                  f"p99 {lat[int(0.99 * (len(lat) - 1))]:6.1f} ms  {rps:6.0f} requests/s  (aiohttp)")
            if name == "semantic 1st":  # is the embedder the bound? busy all the time, then yes
                after, wall = srv.status()["embedder"], time.perf_counter() - t0
                texts = after["texts"] - before["texts"]
                print(f"{'':<15} embedder: {texts} texts in {after['batches'] - before['batches']} passes, "
                      f"{texts / wall:.0f} texts/s, busy {(after['busy_s'] - before['busy_s']) / wall:.0%} of the round")
            if args.wrk and name != "semantic 1st":  # wrk cycles through its bodies: only the first lap is new
                n, misses, p50, p99, rps = run_wrk(url, qs, args.clients, args.wrk)
                print(f"{name:<15} hits {n - misses:5d}  misses {misses:4d}  p50 {p50:6.1f} ms  "
                      f"p99 {p99:6.1f} ms  {rps:6.0f} requests/s  (wrk)")
    finally:
        srv.stop()
        if args.floor:
            floor[0].terminate()


def _start_floor() -> tuple[subprocess.Popen, str]:
    from tests.conftest import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "bench" / "floor_server.py"), str(port)], cwd=ROOT)
    url = f"http://127.0.0.1:{port}"

    async def wait() -> None:
        async with aiohttp.ClientSession() as c:
            for _ in range(100):
                try:
                    async with c.get(url + "/readyz") as r:
                        if r.status == 200:
                            return
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)
        raise RuntimeError("floor server did not start")

    asyncio.run(wait())
    return proc, url


if __name__ == "__main__":
    main()
