"""Warm-up throughput: importing logged answers, and answering prompts with the local model batched
(the continuous-batching core, --concurrency 16) vs one at a time (--concurrency 1). Runs the real
`edge-ai warm` command on fresh caches.

    .venv/bin/python scripts/bench/warmup.py [--logged 10000] [--prompts 1000] [--max-tokens 8]
    .venv/bin/python scripts/bench/warmup.py --dedupe-only --prompts 5000   # the near-duplicate pass alone, in-process
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def warm(inputs: Path, *args: str) -> tuple[float, dict]:
    d = Path(tempfile.mkdtemp(prefix="edge-warm-bench-"))
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "edge_ai", "warm", str(inputs), "--cache-dir", str(d / "cache"), "--report", str(d / "r.json"), *args],
                   cwd=ROOT, check=False, capture_output=True)
    return time.perf_counter() - t, json.loads((d / "r.json").read_text())


TOPICS = ["rivers", "mountains", "bread", "engines", "planets", "music", "trees", "cities", "bridges", "birds"]


def dedupe_only(prompts: Path) -> None:
    """Time warm-up's near-duplicate pass (embedding included) in-process, without answering anything."""
    import asyncio

    from edge_ai.cache import SemanticCache
    from edge_ai.config import Settings
    from edge_ai.model_files import open_embedder, open_judge
    from edge_ai.warmup import Warmer, WarmReport, read_inputs

    settings = Settings()
    report = WarmReport()
    items = read_inputs([prompts], "gpt-4o", report)
    cache = SemanticCache.open(tempfile.mkdtemp(prefix="edge-warm-bench-"), open_embedder(settings), open_judge(settings))
    t = time.perf_counter()
    kept = asyncio.run(Warmer(cache, None, [])._dedupe(items, report, lambda n: None))  # type: ignore[arg-type]
    print(f"near-duplicate pass, {len(items)} prompts: {time.perf_counter() - t:.1f} s, {len(kept)} kept, {report.duplicates} dropped")
    cache.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--logged", type=int, default=10_000)
    ap.add_argument("--prompts", type=int, default=1000)
    ap.add_argument("--max-tokens", type=int, default=8)
    ap.add_argument("--dedupe-only", action="store_true", help="time only the near-duplicate pass of --prompts prompts")
    args = ap.parse_args()
    d = Path(tempfile.mkdtemp(prefix="edge-warm-in-"))
    with open(d / "logged.jsonl", "w") as fh:
        for i in range(args.logged):
            fh.write(json.dumps({"request": {"model": "gpt-4o", "messages": [{"role": "user", "content": f"Question {i}: what is item {i} made of?"}]},
                                 "response": {"choices": [{"message": {"role": "assistant", "content": f"Item {i} is made of parts."}, "finish_reason": "stop"}]}}) + "\n")
    with open(d / "prompts.jsonl", "w") as fh:
        for i in range(args.prompts):
            fh.write(json.dumps(f"Write note {i} about {TOPICS[i % len(TOPICS)]} number {i}.") + "\n")
    if args.dedupe_only:
        return dedupe_only(d / "prompts.jsonl")
    t_imp, r_imp = warm(d / "logged.jsonl")
    t_batch, r_batch = warm(d / "prompts.jsonl", "--max-tokens", str(args.max_tokens), "--concurrency", "16")
    t_one, r_one = warm(d / "prompts.jsonl", "--max-tokens", str(args.max_tokens), "--concurrency", "1")
    print(f"warm-up throughput, {os.cpu_count()} CPUs (wall time of the whole command, model loading included)")
    print(f"import {args.logged} logged answers:          {t_imp:7.1f} s  {r_imp['imported'] / t_imp:8.1f} prompts/s")
    print(f"{args.prompts} prompts, local, batched (16):   {t_batch:7.1f} s  {sum(r_batch['answered'].values()) / t_batch:8.1f} prompts/s")
    print(f"{args.prompts} prompts, local, one at a time:  {t_one:7.1f} s  {sum(r_one['answered'].values()) / t_one:8.1f} prompts/s")
    print(f"batched / one at a time: {t_one / t_batch:.2f}x   (max_tokens {args.max_tokens}; duplicates dropped: {r_batch['duplicates_skipped']})")


if __name__ == "__main__":
    main()
