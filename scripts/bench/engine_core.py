"""Where the inference core's time goes, engine-level (no HTTP): llama_decode per token when prefilling and
when decoding B streams at once, and edge-ai's own work per step (batch building, sampling, stop matching,
handing text to the event loop), i.e. the wall time of a step outside llama_decode.

    .venv/bin/python scripts/bench/engine_core.py [--model PATH] [--batches 1 4 16] [--reps 3]
        [--repeat-penalty 1.2 --dry 0.5]   # the shipped defaults' sampler chain instead of an argmax

The last line is the ceiling this leaves for llm_throughput.py's workload (prompts of the same shape, 64
tokens each): completion tokens / (prompt tokens x prefill cost + completion tokens x decode cost). When
two servers run the same llama.cpp kernels, that ceiling is shared; only the work outside the kernels
tells them apart.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from edge_ai.engines.llm import LLMEngine, SamplingParams  # noqa: E402


async def run(engine: LLMEngine, prompts: list[str], max_tokens: int, sampling: SamplingParams) -> dict[str, float]:
    """All prompts at once; what the engine's counters moved by."""
    st = engine.stats
    before = (st.steps, st.decode_s, st.prompt_tokens, st.generated_tokens)
    params = replace(sampling, max_tokens=max_tokens)
    t0 = time.perf_counter()
    tasks = [engine.submit(engine.tokenize(p, add_bos=True), params) for p in prompts]
    await asyncio.gather(*(t.result() for t in tasks))
    wall = time.perf_counter() - t0
    steps, decode_s, prompt, gen = (a - b for a, b in zip((st.steps, st.decode_s, st.prompt_tokens, st.generated_tokens), before))
    return {"wall": wall, "steps": steps, "decode_s": decode_s, "prompt": prompt, "gen": gen}


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--repeat-penalty", type=float, default=1.0)
    ap.add_argument("--dry", type=float, default=0.0, help="DRY multiplier")
    args = ap.parse_args()
    sampling = SamplingParams(temperature=0.0, repeat_penalty=args.repeat_penalty, dry_multiplier=args.dry)
    engine = LLMEngine(args.model, n_slots=max(args.batches), n_ctx_slot=4096)
    serial = 0

    def prompts(b: int) -> list[str]:  # distinct from the second token on: no prefix is reused
        nonlocal serial
        serial += 1
        return [f"Story {serial}-{i}. Once upon a time, in a village by the sea," for i in range(b)]

    await run(engine, prompts(2), 8, sampling)  # warm-up
    how = "argmax" if sampling.greedy else f"greedy sampler chain, repeat {args.repeat_penalty}, DRY {args.dry}"
    print(f"{Path(args.model).name}, {how}, {args.tokens} tokens a stream, best of {args.reps} (median in brackets)")
    print(f"{'B':>3} {'prefill ms/token':>17} {'decode ms/step':>15} {'ms/token':>9} {'own ms/step':>12} {'tok/s':>7}")
    costs: dict[int, tuple[float, float]] = {}
    for b in args.batches:
        pre, dec, own, tps = [], [], [], []
        for _ in range(args.reps):
            # the same prompt shape with 1 token and with --tokens: the difference is decode steps alone
            one = await run(engine, prompts(b), 1, sampling)
            full = await run(engine, prompts(b), args.tokens, sampling)
            pre.append(one["decode_s"] / one["prompt"] * 1000)
            dec.append((full["decode_s"] - one["decode_s"]) / (full["steps"] - one["steps"]) * 1000)
            own.append((full["wall"] - full["decode_s"]) / full["steps"] * 1000)
            tps.append(full["gen"] / full["wall"])
        costs[b] = (min(pre), min(dec) / b)
        print(f"{b:>3} {min(pre):>9.2f} [{statistics.median(pre):5.2f}] {min(dec):>7.1f} [{statistics.median(dec):5.1f}]"
              f" {min(dec) / b:>9.2f} {min(own):>5.2f} [{statistics.median(own):4.2f}] {max(tps):>7.1f}")
    big = max(args.batches)
    n_prompt = len(engine.tokenize(prompts(1)[0], add_bos=True))
    pre_ms, dec_ms = costs[big]
    ceiling = args.tokens / ((n_prompt * pre_ms + args.tokens * dec_ms) / 1000)
    print(f"ceiling at {big} streams for {n_prompt}-token prompts and {args.tokens}-token answers, from llama_decode "
          f"alone: {ceiling:.0f} completion tok/s")
    engine.close()


if __name__ == "__main__":
    asyncio.run(main())
