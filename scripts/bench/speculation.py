"""Speculative decoding by n-gram lookup: edge-ai with and without drafts, and llama-server's n-gram modes.

Tasks (streamed /v1/chat/completions, greedy, no repeat or DRY penalty, x-edge-cache off, distinct prompts):
- rewrite: a 60-line Python file, rewritten with one class renamed (answers copy most of the prompt);
- edit: the JSON of an edit call (old and new string) that renames a method in a 40-line file;
- chat: a plain question answered in prose (drafts rarely hit).
Each server runs each level in ABBA order (servers alternate, then reverse); decode tok/s is aggregate
completion tokens over wall time after the first token of each request. Drafted / accepted tokens come from
edge-ai's /metrics.

    .venv/bin/python scripts/bench/speculation.py [--llama-server PATH] [--levels 1 4 16] [--tasks rewrite edit chat]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts" / "bench"))
from llm_throughput import free_port, wait_up  # noqa: E402


def python_file(tag: str, lines: int) -> str:
    """A module whose class is named at its definition and twice more, as in most files: a rename changes a
    few lines and the rest is copied (a guess must match the last 24 tokens for llama-server's ngram-mod)."""
    out = [f"# inventory module {tag}", "import json", "", "", "class StockLedger:", "    def __init__(self):",
           "        self.items = {}", ""]
    i = 0
    while len(out) < lines - 4:
        out += [f"    def record_{i}(self, item, count):", f"        self.items['{tag}-{i}'] = count * {i + 2}",
                f"        return sum(self.items.values()) + {i}", ""]
        i += 1
    out += ["", "def open_ledger(path):", "    with open(path) as fh:", "        return StockLedger.load(json.load(fh))"]
    return "\n".join(out[:lines])


def task_prompt(task: str, tag: str) -> str:
    if task == "rewrite":
        return ("Rewrite this Python file with the class StockLedger renamed to InventoryBook everywhere. Output the "
                f"whole file and nothing else.\n\n```python\n{python_file(tag, 60)}\n```")
    if task == "edit":
        return ("Rename the method record_3 to log_delivery in this file. Answer with only a JSON object "
                '{"file_path": "ledger.py", "old_string": <the whole method as it is>, "new_string": <the whole '
                f"method renamed>}}.\n\n```python\n{python_file(tag, 40)}\n```")
    return f"In about 150 words ({tag}), explain why a city might build a light rail line instead of more bus routes."


def one_request(client: httpx.Client, url: str, task: str, tag: str, tokens: int, headers: dict) -> tuple[int, float, float]:
    body = {"model": "m", "messages": [{"role": "user", "content": task_prompt(task, tag)}], "max_tokens": tokens,
            "temperature": 0, "repeat_penalty": 1.0, "dry_multiplier": 0.0, "stream": True,
            "stream_options": {"include_usage": True}}
    for attempt in range(2):  # llama-server may close a kept-alive connection between requests: ask again
        try:
            return _timed(client, url, body, headers)
        except httpx.RemoteProtocolError:
            if attempt:
                raise
    raise AssertionError("unreachable")


def _timed(client: httpx.Client, url: str, body: dict, headers: dict) -> tuple[int, float, float]:
    t0 = time.perf_counter()
    first, n = None, 0
    with client.stream("POST", url + "/v1/chat/completions", json=body, headers=headers) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            data = json.loads(line[6:])
            if data.get("usage"):
                n = data["usage"]["completion_tokens"]
            if first is None and any((c.get("delta") or {}).get("content") for c in data.get("choices") or []):
                first = time.perf_counter()
    end = time.perf_counter()
    return n, (first or end) - t0, end - (first or end)


def run_level(url: str, task: str, clients: int, per_client: int, tokens: int, headers: dict, tag: str) -> dict:
    got: list[tuple[int, float, float]] = []
    lock = threading.Lock()

    def worker(c: int) -> None:
        with httpx.Client(timeout=900) as client:
            for i in range(per_client):
                r = one_request(client, url, task, f"{tag}-{c}-{i}", tokens, headers)
                with lock:
                    got.append(r)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    total = sum(n for n, _, _ in got)
    decode_one = statistics.mean(n / d for n, _, d in got if d > 0)  # a stream's own decode speed
    return {"tok_s": total / wall, "stream_tok_s": decode_one, "tok_per_req": total / len(got),
            "ttft_ms": 1000 * statistics.median(t for _, t, _ in got)}


def drafts(url: str) -> tuple[float, float]:
    text = httpx.get(url + "/metrics").text
    pick = lambda name: sum(float(v) for v in re.findall(rf'^{name}_total{{[^}}]*}} ([0-9.e+]+)$', text, re.M))  # noqa: E731
    return pick("edge_ai_llm_draft_tokens"), pick("edge_ai_llm_draft_tokens_accepted")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen-coder-1.5b", help="packaged name or GGUF path")
    ap.add_argument("--llama-server", default=os.environ.get("LLAMA_SERVER", ""))
    ap.add_argument("--spec-types", nargs="*", default=["ngram-simple", "ngram-mod"], help="llama-server --spec-type values")
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--tasks", nargs="+", default=["rewrite", "edit", "chat"])
    ap.add_argument("--tokens", type=int, default=400)
    ap.add_argument("--requests", type=int, default=0, help="requests per level (default: the level, at least 2)")
    ap.add_argument("--reps", type=int, default=2, help="ABBA rounds per level")
    ap.add_argument("--same", action="store_true", help="A/A: both edge-ai servers without speculation, to see what "
                    "the run's order and processes alone make of the ratio")
    args = ap.parse_args()

    from edge_ai.model_files import resolve_gguf

    gguf = str(resolve_gguf(args.model, ROOT / "models"))
    slots, threads = str(max(args.levels)), str(os.cpu_count() or 2)
    edge = [sys.executable, "-m", "edge_ai", "serve", "--model", gguf, "--n-slots", slots, "--n-ctx-slot", "4096",
            "--log-level", "warning"]
    servers = {"edge-ai": (edge + ["--no-speculate" if args.same else "--speculate"], "/readyz", {"x-edge-cache": "off"}),
               "edge-ai no-spec": (edge + ["--no-speculate"], "/readyz", {"x-edge-cache": "off"})}
    if args.llama_server:
        base = [args.llama_server, "-m", gguf, "--parallel", slots, "-c", str(4096 * int(slots)), "-t", threads,
                "--no-webui", "--no-repack", "--jinja", "--host", "127.0.0.1"]
        servers["llama-server"] = (base, "/health", {})
        for spec in args.spec_types:
            servers[f"llama-server {spec}"] = (base + ["--spec-type", spec], "/health", {})
    procs: dict[str, tuple[subprocess.Popen, str, dict]] = {}
    results: dict[tuple[str, str, int], list[dict]] = {}
    try:
        for name, (cmd, health, headers) in servers.items():
            port = free_port()
            extra = ["--cache-dir", tempfile.mkdtemp(prefix="edge-spec-")] if name.startswith("edge-ai") else []
            proc = subprocess.Popen(cmd + ["--port", str(port)] + extra, cwd=ROOT, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"})
            url = f"http://127.0.0.1:{port}"
            procs[name] = (proc, url, headers)
            wait_up(url, proc, health)
        for name, (proc, url, headers) in procs.items():
            # one request first: a fresh process pages in the model's weights on its first prefill, and the
            # server measured first in each level would pay for it (edit at 4 clients: TTFT 9.2 s against 5.3 s)
            with httpx.Client(timeout=900) as client:
                one_request(client, url, "chat", f"warm-{name}", 8, headers)
        for task in args.tasks:
            for level in args.levels:
                per = max(1, (args.requests or max(level, 2)) // level)
                names = list(procs)
                order = [n for rep in range(args.reps) for n in (names if rep % 2 == 0 else names[::-1])]
                for name in order:
                    proc, url, headers = procs[name]
                    before = drafts(url) if name.startswith("edge-ai") else (0.0, 0.0)
                    r = run_level(url, task, level, per, args.tokens, headers, f"{name}-{task}-{level}-{len(results.get((name, task, level), []))}")
                    after = drafts(url) if name.startswith("edge-ai") else (0.0, 0.0)
                    r["drafted"], r["accepted"] = after[0] - before[0], after[1] - before[1]
                    results.setdefault((name, task, level), []).append(r)
                    print(f"{task:<8} c={level:<3} {name:<26} {r['tok_s']:6.1f} tok/s  stream {r['stream_tok_s']:6.1f}  "
                          f"{r['tok_per_req']:5.0f} tok/req  TTFT {r['ttft_ms']:6.0f} ms  drafted {r['drafted']:.0f} "
                          f"accepted {r['accepted']:.0f}", flush=True)
    finally:
        for proc, _, _ in procs.values():
            proc.terminate()
            proc.wait(30)
    print(f"\n{Path(gguf).name}, {os.cpu_count()} CPUs, greedy, max_tokens {args.tokens}; aggregate tok/s (mean of "
          f"{args.reps} ABBA runs), ratio to edge-ai without speculation")
    for task in args.tasks:
        for level in args.levels:
            base = statistics.mean(r["tok_s"] for r in results[("edge-ai no-spec", task, level)])
            row = "  ".join(f"{n}: {statistics.mean(r['tok_s'] for r in results[(n, task, level)]):.1f} "
                            f"({statistics.mean(r['tok_s'] for r in results[(n, task, level)]) / base:.2f}x)" for n in procs)
            print(f"{task:<8} c={level:<3} {row}")


if __name__ == "__main__":
    main()
