"""Surge drill: the cloud is down and every request that went there now comes here.

    .venv/bin/python scripts/bench/surge.py [--clients 200] [--seconds 30] [--wrk-connections 20]

The server runs edge-ai's defaults (16 slots, SmolLM2), and its cache holds GPTCache's 999 questions with
recorded answers. C closed-loop clients (aiohttp, in this process, not the server's) ask for S seconds:

- 60% exact repeats of a cached question;
- 10% a paraphrase asked for the first time (it is embedded);
- 10% a paraphrase asked before (the vector and decision are remembered);
- 20% a new question (the model answers; 32 tokens).

Half the requests are OpenAI and half Anthropic, and 30% stream. During the middle of the run, wrk asks
cached questions over its own connections (C, one thread). That shows what an exact hit costs while the
model is saturated, without a Python load generator's CPU in the way.

Reported, by kind: p50/p99 latency; refusals (429/529, each checked for Retry-After); errors; paraphrases
that missed. Also the server's peak RSS and the load generator's own CPU share. Targets with the model
saturated: exact p99 ≤ 15 ms, first-time paraphrase hits p99 ≤ 1 s, and no refusal of a question the
cache can answer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts" / "bench"))

from cache_hits import WRK_SCRIPT, warmed_cache  # noqa: E402
from tests.conftest import Server  # noqa: E402

KINDS = [("exact", 0.6), ("para_first", 0.1), ("para_again", 0.1), ("new", 0.2)]
TOPICS = ["volcanoes", "tax law", "bread", "satellites", "chess", "rivers", "vaccines", "jazz", "glaciers", "bees"]


class Tally:
    def __init__(self) -> None:
        self.lat: dict[str, list[float]] = defaultdict(list)
        self.refused: dict[str, int] = defaultdict(int)
        self.refused_without_retry_after = 0
        self.errors: dict[str, int] = defaultdict(int)
        self.sources: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.samples: list[str] = []
        self.exact_by: dict[str, list[float]] = defaultdict(list)  # exact hits by dialect and streaming
        self.exact_not_exact = 0  # "exact" questions served by a semantic hit (similarity < 1)
        self.exact_server: list[float] = []  # the same exact hits on the server's clock (Server-Timing), ms
        self.loop_lag: list[float] = []  # how late this process's own event loop woke a 5 ms ticker, ms
        self.exact_at: list[tuple[float, float]] = []  # exact hits: (seconds into the surge when sent, ms)


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * (len(xs) - 1)))] if xs else float("nan")


async def client(i: int, url: str, pairs: list[dict], fresh: list[str], asked: list[str], start: float, stop: float, t: Tally) -> None:
    rng = random.Random(i)
    async with aiohttp.ClientSession(url) as http:
        n = 0
        while time.monotonic() < stop:
            n += 1
            kind = rng.choices([k for k, _ in KINDS], [w for _, w in KINDS])[0]
            if kind == "exact":
                q, max_tokens = rng.choice(pairs)["origin"], 64
            elif kind == "para_first":
                if not fresh:
                    kind = "para_again"
                    q = rng.choice(asked) if asked else pairs[0]["similar"]
                else:
                    q = fresh.pop()
                    asked.append(q)
                max_tokens = 64
            elif kind == "para_again":
                q, max_tokens = (rng.choice(asked) if asked else pairs[0]["similar"]), 64
            else:
                q, max_tokens = f"In two sentences, what should a beginner know about {rng.choice(TOPICS)} (question {i}-{n})?", 32
            anthropic, stream = rng.random() < 0.5, rng.random() < 0.3
            body = {"model": "gpt-4o", "max_tokens": max_tokens, "stream": stream, "messages": [{"role": "user", "content": q}]}
            path = "/v1/messages" if anthropic else "/v1/chat/completions"
            headers = {"x-api-key": "k", "anthropic-version": "2023-06-01"} if anthropic else {}
            t0 = time.perf_counter()
            try:
                async with http.post(path, json=body, headers=headers, timeout=aiohttp.ClientTimeout(total=300)) as r:
                    text = await r.text()
                    ms = (time.perf_counter() - t0) * 1000
                    if r.status in (429, 529):
                        t.refused[kind] += 1
                        if "retry-after" not in r.headers:
                            t.refused_without_retry_after += 1
                        await asyncio.sleep(float(r.headers.get("retry-after", "1")))
                        continue
                    if r.status != 200 or (stream and ("[DONE]" not in text and "message_stop" not in text)):
                        t.errors[kind] += 1
                        if len(t.samples) < 5:
                            t.samples.append(f"{kind} {r.status}: {text[:200]}")
                        continue
                    source = r.headers.get("x-edge-source", "?")
                    t.sources[kind][source] += 1
                    label = kind if source == "cache" or kind == "new" else f"{kind}_missed"
                    t.lat[label].append(ms)
                    if label == "exact":
                        timing = re.search(r"dur=([0-9.]+)", r.headers.get("server-timing", ""))
                        if timing:
                            t.exact_server.append(float(timing.group(1)))
                        t.exact_at.append((time.monotonic() - start - ms / 1000, ms))
                        t.exact_by[("anthropic" if anthropic else "openai") + (" stream" if stream else "")].append(ms)
                        if float(r.headers.get("x-edge-similarity", "1")) < 1.0:
                            t.exact_not_exact += 1
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                t.errors[kind] += 1
                if len(t.samples) < 5:
                    t.samples.append(f"{kind}: {type(exc).__name__} {exc}")


async def ticker(stop: float, t: Tally) -> None:
    """The generator's own scheduling delay: a client's latency includes the time its loop took to run it."""
    while time.monotonic() < stop:
        t0 = time.perf_counter()
        await asyncio.sleep(0.005)
        t.loop_lag.append((time.perf_counter() - t0 - 0.005) * 1000)


def buckets(url: str, name: str, **match: str) -> dict[float, float]:
    """A histogram of the server's /metrics: count at or under each bucket, summed over the series whose
    labels include `match`."""
    import urllib.request

    text = urllib.request.urlopen(url + "/metrics").read().decode()
    out: dict[float, float] = defaultdict(float)
    for labels, v in re.findall(rf'^{name}_bucket\{{([^}}]*)\}} ([0-9.e+]+)$', text, re.M):
        got = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        if all(got.get(k) == want for k, want in match.items()):
            out[float(got["le"])] += float(v)
    return out


def over(before: dict[float, float], after: dict[float, float], le: float) -> tuple[float, float]:
    """(observations over `le`, all observations) between two reads of a histogram."""
    total = after.get(float("inf"), 0) - before.get(float("inf"), 0)
    return total - (after.get(le, 0) - before.get(le, 0)), total


def run_wrk(url: str, questions: list[str], connections: int, seconds: int, out: dict) -> None:
    d = Path(tempfile.mkdtemp(prefix="edge-surge-wrk-"))
    with open(d / "bodies.txt", "w") as fh:
        for q in questions:
            fh.write(json.dumps({"model": "gpt-4o", "max_tokens": 64, "messages": [{"role": "user", "content": q}]}) + "\n")
    (d / "hits.lua").write_text(WRK_SCRIPT)
    res = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(d / "hits.lua"), url, "--",
                          str(d / "bodies.txt")], capture_output=True, text=True)
    m = re.search(r"WRK (\d+) (\d+) ([\d.]+) ([\d.]+)", res.stdout)
    if m:
        n, misses, p50, p99 = m.groups()
        out.update(requests=int(n), misses=int(misses), p50=float(p50), p99=float(p99), rps=int(n) / seconds)
    else:
        out["error"] = res.stdout[-500:] + res.stderr[-500:]


def peak_rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--wrk-connections", type=int, default=20)
    ap.add_argument("--server-arg", action="append", default=[], help="extra `edge-ai serve` flag (repeatable)")
    ap.add_argument("--no-lexical-first", action="store_true", help="the embedder's queue in arrival order only (lexical_first off)")
    ap.add_argument("--no-cpu-turns", action="store_true", help="the embedder does not go before decode steps (cpu_turns off)")
    ap.add_argument("--generator-nice", type=int, default=0, help="renice this process (and wrk) after the server starts")
    args = ap.parse_args()
    pairs, cache_dir = warmed_cache("edge-surge-")
    env = {"EDGE_AI_N_SLOTS": "16", "EDGE_AI_N_CTX_SLOT": "2048", "EDGE_AI_CPU_TURNS": "false" if args.no_cpu_turns else "true",
           "EDGE_AI_LEXICAL_FIRST": "false" if args.no_lexical_first else "true"}
    srv = Server(cache_dir, "--log-level", "warning", *args.server_arg, env=env).start()
    try:
        if args.generator_nice:
            os.nice(args.generator_nice)
        fresh = [p["similar"] for p in pairs]
        random.Random(0).shuffle(fresh)
        asked: list[str] = []
        tally = Tally()
        wrk: dict = {}
        wrk_s = max(5, args.seconds - 15)
        wrk_at = 10
        timer = threading.Timer(wrk_at, run_wrk, (srv.url, [p["origin"] for p in pairs], args.wrk_connections, wrk_s, wrk))
        before = resource.getrusage(resource.RUSAGE_SELF)
        # the server's clock starts when a request reaches the app; its loop's lag is the wait before that
        server_before = buckets(srv.url, "edge_ai_request_duration_seconds", source="cache")
        lag_before = buckets(srv.url, "edge_ai_event_loop_lag_seconds")
        t0 = time.monotonic()
        timer.start()

        async def surge() -> None:
            start = time.monotonic()
            stop = start + args.seconds
            await asyncio.gather(ticker(stop, tally), *(client(i, srv.url, pairs, fresh, asked, start, stop, tally) for i in range(args.clients)))

        asyncio.run(surge())
        wall = time.monotonic() - t0
        timer.join()
        after = resource.getrusage(resource.RUSAGE_SELF)
        gen_cpu = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) / wall
        status = srv.status()
        print(f"surge: {args.clients} clients for {args.seconds} s ({wall:.0f} s with the last answers), {os.cpu_count()} CPUs")
        print(f"{'kind':<18} {'answered':>8} {'p50 ms':>9} {'p99 ms':>9} {'refused':>8} {'errors':>7}")
        for kind in ("exact", "para_first", "para_again", "para_first_missed", "para_again_missed", "new"):
            lat = tally.lat.get(kind, [])
            base = kind.replace("_missed", "")
            refused = tally.refused.get(base, 0) if not kind.endswith("missed") else 0
            errors = tally.errors.get(base, 0) if not kind.endswith("missed") else 0
            print(f"{kind:<18} {len(lat):8d} {pct(lat, 0.5):9.1f} {pct(lat, 0.99):9.1f} {refused:8d} {errors:7d}")
        print(f"refusals without Retry-After: {tally.refused_without_retry_after}")
        for how, lat in sorted(tally.exact_by.items()):
            print(f"  exact, {how:<17} {len(lat):8d} {pct(lat, 0.5):9.1f} {pct(lat, 0.99):9.1f}")
        print(f"  'exact' questions served by a semantic hit: {tally.exact_not_exact}")
        # The surge opens with every client connecting and asking at once; wrk measures a later window.
        for label, lo, hi in (("in the first second", 0, 1), (f"in wrk's window ({wrk_at}-{wrk_at + wrk_s} s)", wrk_at, wrk_at + wrk_s)):
            lat = [ms for at, ms in tally.exact_at if lo <= at < hi]
            print(f"  exact, sent {label:<24} {len(lat):6d} {pct(lat, 0.5):9.1f} {pct(lat, 0.99):9.1f}")
        es = tally.exact_server
        print(f"  exact, on the server's clock     {len(es):8d} {pct(es, 0.5):9.1f} {pct(es, 0.99):9.1f}  (Server-Timing: "
              "request at the app to the answer's first byte)")
        lag = tally.loop_lag
        print(f"generator's event loop lag (5 ms ticker): p50 {pct(lag, 0.5):.1f} ms, p99 {pct(lag, 0.99):.1f} ms, max {max(lag, default=0):.0f} ms")
        server_after = buckets(srv.url, "edge_ai_request_duration_seconds", source="cache")
        lag_after = buckets(srv.url, "edge_ai_event_loop_lag_seconds")
        client_cache = [ms for k in ("exact", "para_first", "para_again") for ms in tally.lat.get(k, [])]
        for le in (0.025, 0.1, 0.25):
            n_server, served = over(server_before, server_after, le)
            n_lag, probes = over(lag_before, lag_after, le)
            n_client = sum(ms > le * 1000 for ms in client_cache)
            print(f"over {le * 1000:3.0f} ms: cache answers on the server's clock {n_server:.0f} of {served:.0f} (wrk's included), "
                  f"on the generator's {n_client} of {len(client_cache)}; server loop probes late {n_lag:.0f} of {probes:.0f}")
        if wrk.get("requests"):
            print(f"wrk, {args.wrk_connections} connections for {wrk_s} s during the surge: {wrk['requests'] - wrk['misses']} hits, "
                  f"{wrk['misses']} misses, p50 {wrk['p50']:.1f} ms, p99 {wrk['p99']:.1f} ms, {wrk['rps']:.0f} req/s")
        else:
            print(f"wrk: {wrk.get('error', 'did not run')}")
        m = next(iter(status["models"].values()))
        e = status["embedder"]
        print(f"server peak RSS {peak_rss_mb(srv.proc.pid):.0f} MB; slots {m['slots']}, tokens generated "
              f"{m['generated_tokens']}, model refusals {m['rejected']}; embedder {e['texts']} texts, busy {e['busy_s']:.1f} s, refusals {e['rejected']}, "
              f"decode waited for it {e.get('decode_yielded_s', 0):.1f} s")
        print(f"load generator CPU: {gen_cpu:.0%} of one core")
        for s in tally.samples:
            print("  sample error:", s)
    finally:
        srv.stop()


if __name__ == "__main__":
    main()
