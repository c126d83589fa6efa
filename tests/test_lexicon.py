"""The lexical index that orders the embedder's queue in a surge (edge_ai/engines/lexicon.py): a question
sharing most of its rare words, and all its numbers, with one cached prompt of its scope is likely a hit."""

from __future__ import annotations

import json
from pathlib import Path

import edge_ai.engines.lexicon as lexicon
from edge_ai.engines.lexicon import LexicalIndex, rare_words

PAIRS = json.loads((Path(__file__).resolve().parent / "fixtures" / "gptcache_pairs_120.json").read_text())


def test_paraphrases_of_cached_prompts_are_near_and_new_questions_are_not():
    index = LexicalIndex()
    for i, p in enumerate(PAIRS):
        index.add("scope", str(i), p["origin"])
    near = sum(index.near("scope", p["similar"]) for p in PAIRS)
    assert near >= 0.7 * len(PAIRS)  # 97 of 120 when written
    new = [f"In two sentences, what should a beginner know about {topic}?" for topic in
           ("volcanoes", "tax law", "bread", "satellites", "chess", "rivers", "vaccines", "jazz", "glaciers", "bees")]
    assert not any(index.near("scope", q) for q in new)
    assert not index.near("another scope", PAIRS[0]["similar"])  # only prompts of the question's own scope


def test_numbers_must_match_in_order_as_the_hit_decision_wants():
    index = LexicalIndex()
    index.add("s", "a", "The match ended 2-1. Who won, the home team or the away team?")
    assert index.near("s", "The match finished 2-1: who won, home team or away team?")
    assert not index.near("s", "The match ended 1-2. Who won, the home team or the away team?")
    assert not index.near("s", "The match ended 3-0. Who won, the home team or the away team?")


def test_a_removed_or_replaced_prompt_no_longer_counts():
    index = LexicalIndex()
    index.add("s", "a", "How do volcanoes form under the ocean floor?")
    assert index.near("s", "How are volcanoes formed beneath the ocean floor?") and "a" in index
    index.add("s", "a", "What makes sourdough bread rise?")  # the same entry, replaced
    assert not index.near("s", "How are volcanoes formed beneath the ocean floor?")
    assert index.near("s", "Why does sourdough bread rise?") and len(index) == 1
    index.remove("a")
    assert not index.near("s", "Why does sourdough bread rise?") and len(index) == 0


def test_words_in_very_many_prompts_are_not_looked_up(monkeypatch):
    monkeypatch.setattr(lexicon, "COMMON", 3)
    index = LexicalIndex()
    for i, name in enumerate(("alpha", "bravo", "charlie", "delta", "echo")):
        index.add("s", str(i), f"python question {name}")
    # "python" and "question" are in 5 prompts each: only the rare word decides
    assert not index.near("s", "python question zulu")
    assert index.near("s", "python question charlie")
    assert rare_words("What is the capital of France?") == {"capital", "france"}


def test_rows_of_removed_prompts_leave_the_postings_once_they_outnumber_the_living():
    index = LexicalIndex()
    for i in range(1100):
        index.add("s", f"old{i}", f"ephemeral topic number{i} zebra")
    index.add("s", "kept", "lasting question about giraffes")
    for i in range(1100):
        index.remove(f"old{i}")
    # compacted once 1,025 were dead: what is left of 1,100 rows is those buried since
    assert len(index._postings[("s", "zebra")]) == 1100 - 1025 and ("s", "number7") not in index._postings
    assert index.near("s", "a question about giraffes, lasting") and not index.near("s", "ephemeral zebra topic")
    index.add("s", "new", "ephemeral zebra topic")
    assert index.near("s", "ephemeral zebra topic") and len(index) == 2
