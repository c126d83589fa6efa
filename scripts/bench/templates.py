"""Prompts under one long template: what the hit decision makes of them, by template length.

A program's prompt is fixed instructions around the part that varies (here: support tickets under a
classifier's rules, tests/conftest.py `ticket`). For 0..12 rules (about 50..430 embedder tokens), over
four different tickets under one template, it prints the highest whole-prompt cosine and score (the
decision before it weighed the differing stretch) and the highest production score
(edge_ai/cache.py `SemanticCache.score`), which must stay under the threshold; and for two tickets
reworded, the cosine and the production score, which should reach it.

    .venv/bin/python scripts/bench/templates.py
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from edge_ai.cache import SemanticCache  # noqa: E402
from edge_ai.config import Settings  # noqa: E402
from edge_ai.model_files import open_embedder, open_judge  # noqa: E402
from tests.conftest import ticket  # noqa: E402

TICKETS = [
    "I was charged twice for my subscription this month, please refund.",
    "The dashboard has been down for three hours and every page times out.",
    "I cannot log in since I reset my password.",
    "Please add dark mode to the mobile app.",
]
REWORDED = {  # ticket index -> the same ticket in other words
    0: "I got billed two times for my subscription this month, please refund.",
    2: "Since resetting my password I am unable to log in.",  # "cannot" / "unable": a negation in other words
}


async def main() -> None:
    settings = Settings()
    embedder, judge = open_embedder(settings), open_judge(settings)
    cache = SemanticCache.open(tempfile.mkdtemp(prefix="edge-templates-"), embedder, judge)
    limit = cache.threshold
    print(f"threshold {limit:.3f}; different tickets must score under it, rewordings should reach it")
    print(f"{'rules':>5} {'tokens':>7} | {'different: cosine':>18} {'whole score':>12} {'score':>7} | reworded (billed, login): cosine, score")
    for rules in (0, 1, 2, 4, 6, 8, 12):
        texts = [ticket(t, rules) for t in TICKETS]
        tokens = len(embedder.model.tokenizer(texts[0])["input_ids"])
        vecs = dict(zip(texts, await cache.embed_many(texts)))
        worst = [0.0, 0.0, 0.0]  # the highest of each column among pairs of different tickets
        for a, b in itertools.combinations(texts, 2):
            sim = float(vecs[a] @ vecs[b])
            row = (sim, judge.score(sim, a, b), await cache.score(sim, a, b, 0.0))
            worst = [max(w, r) for w, r in zip(worst, row)]
        right = []
        for i, other in REWORDED.items():
            a, b = texts[i], ticket(other, rules)
            va, vb = await cache.embed_many([a, b])
            right.append((float(va @ vb), await cache.score(float(va @ vb), a, b, 0.0)))
        cells = " ".join(f"{sim:>8.3f} {score:>7.3f}" for sim, score in right)
        print(f"{rules:>5} {tokens:>7} | {worst[0]:>18.3f} {worst[1]:>12.3f} {worst[2]:>7.3f} | {cells}")
    cache.close()
    embedder.close()


if __name__ == "__main__":
    asyncio.run(main())
