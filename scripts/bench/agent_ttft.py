"""Time to first token of an agent-sized request (Claude Code's shape: a ~6k-token system prompt resent with
every question): cold, warm (the same system prompt, another question), and after a restart; edge-ai against
llama-server (`cache_prompt`, its default) on the same GGUF.

    .venv/bin/python scripts/bench/agent_ttft.py --llama-server PATH [--rounds 3]
    .venv/bin/python scripts/bench/agent_ttft.py --llama-server PATH --model qwen-coder-1.5b --tools 14 --rules 60

With `--tools N` the request also offers N agent tools (a first sentence, paragraphs of usage notes and a
parameter schema with per-field prose each, as coding agents send them), and llama-server runs with
`--jinja`: each server shows the model what it shows it by default (edge-ai: the compact form of a long
agent request; llama-server: the whole request). The first token is the first text or call delta.

Both get OpenAI chat requests (streaming, 16 tokens, greedy) with the same text; edge-ai with
`x-edge-cache: off`, so every answer is computed. Rounds alternate the servers (ABBA) and each round
restarts both, so "cold" is a fresh process (and, for edge-ai, a fresh cache directory) every time;
"after restart" is the same server stopped cleanly and started again (edge-ai keeps the longest prompt
prefixes' KV across it: `keep_prefixes`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from scripts.bench.llm_throughput import free_port, wait_up  # noqa: E402

def system_prompt(rules: int) -> str:
    return "You are an interactive CLI tool that helps users with software engineering tasks. " + " ".join(
        f"Rule {i}: when the user asks for a change, read the relevant files first, keep edits minimal, "
        "run the tests, and explain what you did in one short paragraph." for i in range(rules))


TOOL_NAMES = ["ReadFile", "WriteFile", "EditFile", "RunShell", "SearchText", "FindFiles", "ListDir", "FetchUrl",
              "PlanTasks", "Delegate", "EditNotebook", "AskUser", "KillShell", "ShellOutput", "SearchWeb", "ReadImage"]


def agent_tools(n: int) -> list[dict]:
    """N tools of a coding agent's shape (written for this bench): a first sentence, then usage notes."""
    notes = " ".join(f"Usage note {j}: paths are absolute, results are truncated past a limit, and a failed call "
                     "says why; prefer this tool over a shell command that does the same." for j in range(12))
    return [{"type": "function", "function": {
        "name": name, "description": f"{name} does one job of the agent's. {notes}",
        "parameters": {"type": "object", "required": ["path"], "properties": {
            "path": {"type": "string", "description": "The absolute path to work on. " + "It must exist unless stated. " * 4},
            "limit": {"type": "integer", "description": "How many lines or results at most. " * 3},
            "mode": {"type": "string", "enum": ["fast", "full"], "description": "How thorough to be. " * 3}}}}}
        for name in (TOOL_NAMES * (n // len(TOOL_NAMES) + 1))[:n]]


SYSTEM = system_prompt(190)
TOOLS: list[dict] = []


def ttft(url: str, question: str, headers: dict) -> float:
    body = {"model": "m", "stream": True, "max_tokens": 16, "temperature": 0,
            "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]}
    if TOOLS:
        body["tools"] = TOOLS
    t0 = time.perf_counter()
    first = float("nan")
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, headers=headers, timeout=600) as r:
        r.raise_for_status()
        # read to the end: a client leaving early can find its slot still busy on the next request, which
        # then lands in another slot and recomputes the whole prefix (measured: no reuse on either server)
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]" and first != first:
                delta = (json.loads(line[6:]).get("choices") or [{}])[0].get("delta") or {}
                if delta.get("content") or delta.get("tool_calls"):
                    first = (time.perf_counter() - t0) * 1000
    return first


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--llama-server", default=os.environ.get("LLAMA_SERVER", ""))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--tools", type=int, default=0, help="offer this many agent tools with each request")
    ap.add_argument("--rules", type=int, default=190, help="rules in the system prompt (190: ~7k tokens)")
    args = ap.parse_args()
    global SYSTEM, TOOLS
    SYSTEM, TOOLS = system_prompt(args.rules), agent_tools(args.tools)
    from edge_ai.model_files import resolve_gguf

    args.model = str(resolve_gguf(args.model, ROOT / "models"))
    threads = str(os.cpu_count() or 2)
    cache = {"dir": ""}  # a new one each round: "cold" is cold, and "after restart" finds what the round kept
    servers = {
        "edge-ai": (lambda port: [sys.executable, "-m", "edge_ai", "serve", "--port", str(port), "--n-slots", "4",
                                  "--n-ctx-slot", "8192", "--log-level", "warning", "--model", args.model, "--cache-dir", cache["dir"]],
                    "/readyz", {"x-edge-cache": "off"}),
    }
    if args.llama_server:
        servers["llama-server"] = (lambda port: [args.llama_server, "-m", args.model, "--parallel", "4", "-c", str(4 * 8192),
                                                 "-t", threads, "--no-webui", "--no-repack", "--port", str(port), "--host", "127.0.0.1"]
                                   + (["--jinja"] if args.tools else []),
                                   "/health", {})
    results = {name: {"cold": [], "warm": [], "restart": []} for name in servers}
    names = list(servers)
    for rnd in range(args.rounds):
        for name in names if rnd % 2 == 0 else names[::-1]:
            cmd, health, headers = servers[name]
            port = free_port()
            cache["dir"] = tempfile.mkdtemp(prefix="edge-ttft-")
            for phase in ("cold+warm", "restart"):
                proc = subprocess.Popen(cmd(port), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        env={**os.environ, "HF_HUB_OFFLINE": "1"})
                url = f"http://127.0.0.1:{port}"
                try:
                    wait_up(url, proc, health)
                    if phase == "cold+warm":
                        results[name]["cold"].append(ttft(url, f"What does git status do? ({rnd})", headers))
                        results[name]["warm"].append(ttft(url, f"What does git log do? ({rnd})", headers))
                    else:
                        results[name]["restart"].append(ttft(url, f"What does git diff do? ({rnd})", headers))
                finally:
                    proc.terminate()
                    proc.wait(30)
            r = results[name]
            print(f"round {rnd} {name:<13} cold {r['cold'][-1]:7.0f} ms  warm {r['warm'][-1]:6.0f} ms  "
                  f"after restart {r['restart'][-1]:7.0f} ms", flush=True)
    n_tokens = len(SYSTEM.split())
    print(f"\nsystem prompt ~{n_tokens} words, {len(TOOLS)} tools ({len(json.dumps(TOOLS)) // 1000} KB), "
          f"{Path(args.model).name}, {threads} threads; TTFT medians:")
    for name, r in results.items():
        print(f"{name:<13} cold {statistics.median(r['cold']):7.0f} ms  warm {statistics.median(r['warm']):6.0f} ms  "
              f"after restart {statistics.median(r['restart']):7.0f} ms")


if __name__ == "__main__":
    main()
