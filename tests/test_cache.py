"""The semantic cache over a partition large enough for inverted lists: hits, persistence, reload.

Real embedder and hit model; the partition switches to lists at 40 entries here instead of 10,000."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from edge_ai.cache import SemanticCache
from edge_ai.request import Final, Message, Request

PAIRS = json.loads((Path(__file__).resolve().parents[2] / "shared" / "data" / "gptcache_mock_data.json").read_text())[:120]
ENTRIES = len({p["origin"] for p in PAIRS})  # a few origins repeat: one entry each


def ask(text: str) -> Request:
    return Request(model="gpt-4o", messages=(Message("user", text),))


async def fill(cache: SemanticCache) -> None:
    for p in PAIRS:
        await cache.put(ask(p["origin"]), Final("Answer: " + p["origin"], "stop", 0, 3), "import")


async def answers(cache: SemanticCache, questions: list[str]) -> list[str | None]:
    found = []
    for q in questions:
        hit = (await cache.lookup(ask(q))).hit
        found.append(hit.entry.answer if hit else None)
    return found


def test_lists_answer_as_exact_search_does_and_survive_a_restart(parts, tmp_path):
    embedder, judge = parts
    similar = [p["similar"] for p in PAIRS]

    exact = SemanticCache.open(tmp_path / "exact", embedder, judge)
    asyncio.run(fill(exact))
    assert exact.index.kind(ask("x").scope_key()) == "exact"
    expected = asyncio.run(answers(exact, similar))
    assert sum(a is not None for a in expected) >= 60  # most paraphrases are hits (a check that can fail)

    cache = SemanticCache.open(tmp_path / "lists", embedder, judge)
    cache.index.ann_min = 40
    asyncio.run(fill(cache))
    assert cache.index.wait_rebuilt(60)
    scope = ask("x").scope_key()
    assert cache.index.kind(scope) == "lists" and len(cache.index) == ENTRIES
    assert asyncio.run(answers(cache, similar)) == expected
    assert asyncio.run(answers(cache, [PAIRS[7]["origin"]])) == ["Answer: " + PAIRS[7]["origin"]]  # exact hit
    cache.close()  # saves the lists: the store has not changed since

    again = SemanticCache.open(tmp_path / "lists", embedder, judge)
    assert again.index.kind(scope) == "lists" and len(again.index) == ENTRIES  # reloaded, not rebuilt
    assert asyncio.run(answers(again, similar)) == expected
    again.close()
    exact.close()
