"""What a cache hit and a local answer cost, end to end over HTTP, on this machine.

Starts `edge-ai serve` on a free port with a fresh cache, then for N distinct questions measures:
  local  - first ask: a miss, answered by the local model (max_tokens tokens, greedy)
  exact  - the same request again: exact-match hit (no embedding)
  para   - a reworded request: semantic hit (embed + vector search)
Prints p50/p95 per path and the ratios. Usage:

    .venv/bin/python scripts/bench/latency.py [--n 20] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
QUESTIONS = [
    ("How do I reset my password?", "How can I reset my password?"),
    ("What is the boiling point of water?", "What's the boiling point of water?"),
    ("Why is the sky blue?", "Why does the sky look blue?"),
    ("How do I make a cup of tea?", "How can I make a cup of tea?"),
    ("What is the capital of France?", "What's the capital of France?"),
    ("How many legs does a spider have?", "How many legs do spiders have?"),
    ("What causes earthquakes?", "What is the cause of earthquakes?"),
    ("How do vaccines work?", "How does a vaccine work?"),
    ("What is machine learning?", "What does machine learning mean?"),
    ("How far is the Moon from Earth?", "What is the distance from the Earth to the Moon?"),
]


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20, help="questions per path")
    ap.add_argument("--max-tokens", type=int, default=64)
    args = ap.parse_args()

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cache = tempfile.mkdtemp(prefix="edge-bench-")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_ai", "serve", "--port", str(port), "--cache-dir", cache, "--log-level", "warning"],
        cwd=ROOT,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        client = httpx.Client(base_url=url, timeout=120)
        times: dict[str, list[float]] = {"local": [], "exact": [], "para": []}

        def ask(q: str, tag: str, expect: str) -> None:
            body = {
                "model": "gpt-4o",
                "messages": [{"role": "system", "content": f"Session {tag}."}, {"role": "user", "content": q}],
                "max_tokens": args.max_tokens,
                "temperature": 0,
            }
            t = time.perf_counter()
            r = client.post("/v1/chat/completions", json=body)
            dt = (time.perf_counter() - t) * 1000
            r.raise_for_status()
            got = r.headers["x-edge-source"]
            assert got == expect, (q, got, expect)
            times["local" if expect == "local" else ("exact" if q == base else "para")].append(dt)

        ask("warm up", "w", "local")
        times["local"].clear()
        for i in range(args.n):
            base, para = QUESTIONS[i % len(QUESTIONS)]
            tag = str(i)
            ask(base, tag, "local")
            ask(base, tag, "cache")
            ask(para, tag, "cache")
        print(f"edge-ai latency, {args.n} questions, max_tokens={args.max_tokens}, {os.cpu_count()} CPUs")
        print(f"{'path':<8}{'p50 ms':>10}{'p95 ms':>10}")
        for k, v in times.items():
            print(f"{k:<8}{statistics.median(v):>10.1f}{pct(v, 95):>10.1f}")
        local = statistics.median(times["local"])
        print(f"local/exact-hit ratio: {local / statistics.median(times['exact']):.0f}x; "
              f"local/semantic-hit ratio: {local / statistics.median(times['para']):.0f}x")
    finally:
        proc.terminate()
        proc.wait(30)


if __name__ == "__main__":
    main()
