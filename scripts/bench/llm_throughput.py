"""Batched-inference throughput over HTTP: edge-ai vs llama-cpp-python's server vs llama.cpp's llama-server.

For each server (all started here, same GGUF, same threads; levels alternate between servers in ABBA
order and are averaged, so the machine's drift hits all alike) and each concurrency level,
C clients send streaming /v1/completions requests of --tokens tokens (distinct prompts, so no server
gets a prompt-cache advantage) and we record time to first token (TTFT) and aggregate completion
tokens/s. edge-ai gets `x-edge-cache: off`, so every answer is computed.

    .venv/bin/python scripts/bench/llm_throughput.py [--llama-server PATH] [--levels 1 4 16] [--sampling shipped]

llama-server is built for the benchmark only (never installed by the product), with cmake from the
`vendor/llama.cpp` source inside the llama-cpp-python sdist: scripts/bench/build_llama_server.sh.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(url: str, proc: subprocess.Popen, path: str) -> None:
    for _ in range(600):
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url + path, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError("server did not come up")


# What every request sends. `engine`: greedy with no penalty on both, so the engines are compared and not
# their default samplers. `shipped`: edge-ai's defaults for a client that sends none (greedy, repeat penalty
# 1.2 over 64 tokens, DRY 0.5), sent to both servers explicitly (llama-server's other DRY settings are ours).
SAMPLING = {
    "engine": {"temperature": 0, "repeat_penalty": 1.0},
    "shipped": {"temperature": 0, "repeat_penalty": 1.2, "dry_multiplier": 0.5},
}


def one_request(client: httpx.Client, url: str, prompt: str, tokens: int, headers: dict, sampling: dict) -> tuple[float, int, float]:
    # No ignore_eos (llama-server's extension, not edge-ai's): the prompts are story openings both servers
    # continue for the whole length, and each side's real completion tokens are counted.
    body = {"model": "m", "prompt": prompt, "max_tokens": tokens, **sampling, "stream": True,
            "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    ttft, chunks, usage = None, 0, None
    with client.stream("POST", url + "/v1/completions", json=body, headers=headers) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            data = json.loads(line[6:])
            if data.get("usage"):
                usage = data["usage"].get("completion_tokens")
            for ch in data.get("choices") or []:
                if ch.get("text"):
                    chunks += 1
                    if ttft is None:
                        ttft = time.perf_counter() - t0
    return (ttft or 0.0) * 1000, usage or chunks, time.perf_counter() - t0


def asked_again_if_closed(client: httpx.Client, url: str, prompt: str, tokens: int, headers: dict,
                          sampling: dict) -> tuple[float, int, float]:
    """llama-server may close a kept-alive connection between requests: that request is asked again once
    (it failed before anything was generated), instead of counting as a failure that returns at once."""
    try:
        return one_request(client, url, prompt, tokens, headers, sampling)
    except httpx.RemoteProtocolError:
        return one_request(client, url, prompt, tokens, headers, sampling)


def run_level(url: str, clients: int, per_client: int, tokens: int, headers: dict, tag: str, sampling: dict) -> dict:
    ttfts: list[float] = []
    total, errors = [0], [0]
    lock = threading.Lock()

    def worker(c: int) -> None:
        with httpx.Client(timeout=600) as client:
            for i in range(per_client):
                prompt = f"Story {tag}-{c}-{i}. Once upon a time, in a village by the sea,"
                try:
                    ttft, n, _ = asked_again_if_closed(client, url, prompt, tokens, headers, sampling)
                except httpx.HTTPError:
                    with lock:
                        errors[0] += 1
                    continue
                with lock:
                    ttfts.append(ttft)
                    total[0] += n

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ttfts.sort() if ttfts else ttfts.append(float("nan"))
    return {"tok_s": total[0] / wall, "tok_per_req": total[0] / max(len(ttfts), 1), "ttft_p50": statistics.median(ttfts), "ttft_p95": ttfts[int(0.95 * (len(ttfts) - 1))],
            "tokens": total[0], "errors": errors[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--llama-server", default=os.environ.get("LLAMA_SERVER", ""), help="path to a llama-server binary")
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--requests", type=int, default=32, help="requests per level (at least one per client)")
    ap.add_argument("--only", nargs="*", default=None, help="subset of: edge-ai llama-cpp-python llama-server")
    ap.add_argument("--edge-args", default="", help="extra flags for edge-ai serve, e.g. --kv-unified")
    # edge-ai leaves llama.cpp's extra weight layouts off (AMX faults on VMs that report it unenabled); the
    # same for llama-server, or it dies there with SIGILL
    ap.add_argument("--llama-args", default="--no-repack", help="extra flags for llama-server")
    ap.add_argument("--reps", type=int, default=2, help="runs per level of edge-ai and llama-server, in ABBA order (averaged)")
    ap.add_argument("--reps-all", action="store_true", help="llama-cpp-python's server too takes part in every ABBA round")
    ap.add_argument("--sampling", choices=sorted(SAMPLING), default="engine", help="what each request sends (see SAMPLING)")
    args = ap.parse_args()
    sampling = SAMPLING[args.sampling]
    threads = str(os.cpu_count() or 2)
    slots = str(max(args.levels))
    servers = {
        "edge-ai": ([sys.executable, "-m", "edge_ai", "serve", "--n-slots", slots, "--n-ctx-slot", "4096", "--log-level", "warning",
                     "--model", args.model, "--cache-dir", tempfile.mkdtemp(prefix="edge-bench-"), *args.edge_args.split()],
                    "/readyz", {"x-edge-cache": "off"}),
        # --interrupt_requests False: queue concurrent requests instead of cutting the running stream
        "llama-cpp-python": ([sys.executable, "-m", "llama_cpp.server", "--model", args.model, "--n_ctx", "4096", "--n_threads", threads,
                              "--interrupt_requests", "False"],
                             "/v1/models", {}),
    }
    if args.llama_server:
        servers["llama-server"] = ([args.llama_server, "-m", args.model, "--parallel", slots, "-c", str(4096 * int(slots)),
                                    "-t", threads, "--no-webui", *args.llama_args.split()], "/health", {})
    results: dict[str, dict[int, list[dict]]] = {}
    procs: dict[str, tuple[subprocess.Popen, str, dict]] = {}
    try:  # all servers up at once (an idle one costs nothing); levels then alternate between them
        for name, (cmd, health, headers) in servers.items():
            if args.only and name not in args.only:
                continue
            port = free_port()
            full = cmd + (["--port", str(port)] if name != "llama-server" else ["--port", str(port), "--host", "127.0.0.1"])
            proc = subprocess.Popen(full, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"})
            url = f"http://127.0.0.1:{port}"
            procs[name] = (proc, url, headers)
            wait_up(url, proc, health)
            run_level(url, 1, 2, 8, headers, "warm", sampling)
            results[name] = {c: [] for c in args.levels}
        for c in args.levels:
            per = max(1, args.requests // c)
            # ABBA order, so drift of the machine hits every server alike; llama-cpp-python's serial server
            # is slow at high concurrency, so it runs once unless --reps-all
            fast = [n for n in procs if n != "llama-cpp-python" or args.reps_all]
            order = [n for rep in range(args.reps) for n in (fast if rep % 2 == 0 else fast[::-1])]
            order += ["llama-cpp-python"] if "llama-cpp-python" in procs and not args.reps_all else []
            for name in order:
                _, url, headers = procs[name]
                r = run_level(url, c, per, args.tokens, headers, f"{name}{c}{len(results[name][c])}", sampling)
                results[name][c].append(r)
                print(f"{name:<18} c={c:<3} {r['tok_s']:7.1f} tok/s  {r['tok_per_req']:5.1f} tok/req  TTFT p50 {r['ttft_p50']:7.0f} ms  p95 {r['ttft_p95']:7.0f} ms"
                      f"  failed requests {r['errors']}", flush=True)
    finally:
        for proc, _, _ in procs.values():
            proc.terminate()
            proc.wait(30)
    avg = {n: {c: {k: statistics.mean(r[k] for r in rs) for k in ("tok_s", "ttft_p50", "ttft_p95")} for c, rs in by.items()} for n, by in results.items()}
    print(f"\n{args.tokens} tokens/request, {os.cpu_count()} CPUs, {Path(args.model).name}, sampling {args.sampling} {sampling}")
    header = f"{'server':<18}" + "".join(f"{'c=' + str(c) + ' tok/s':>13}{'TTFT p50/p95 ms':>18}" for c in args.levels)
    print(header)
    for name, by in avg.items():
        print(f"{name:<18}" + "".join(f"{by[c]['tok_s']:>13.1f}{by[c]['ttft_p50']:>10.0f}/{by[c]['ttft_p95']:<7.0f}" for c in args.levels))
    if "edge-ai" in avg:
        for other in ("llama-cpp-python", "llama-server"):
            if other in avg:
                print(f"edge-ai / {other}: " + ", ".join(f"c={c}: {avg['edge-ai'][c]['tok_s'] / avg[other][c]['tok_s']:.2f}x" for c in args.levels))


if __name__ == "__main__":
    main()
