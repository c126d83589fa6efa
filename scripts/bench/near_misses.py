"""Hand-made near-misses and paraphrases through the production hit decision: which would be served?

Near-misses are prompts whose answers differ (opposite words, another day, changed code, swapped
roles, another category); paraphrases ask the same thing in other words. For each pair it prints the
whole prompts' cosine, the production score (edge_ai/cache.py `SemanticCache.score`: penalties,
vetoes, differing stretch) and whether it is a hit at the default threshold. Every near-miss served is
a wrong answer; every paraphrase not served is a miss.

    .venv/bin/python scripts/bench/near_misses.py
"""

from __future__ import annotations

import asyncio
import tempfile

from edge_ai.cache import SemanticCache
from edge_ai.config import Settings
from edge_ai.model_files import open_embedder, open_judge

NEAR_MISSES = [
    ("What's the weather like today in Paris?",
     "What's the weather like tomorrow in Paris?"),
    ('Write a Python function to reverse a string.',
     'Write a JavaScript function to reverse a string.'),
    ('How do I install numpy on Windows?',
     'How do I install numpy on Mac?'),
    ('Explain quantum computing in one sentence.',
     'Explain quantum computing in detail.'),
    ('Return the result as JSON.',
     'Return the result as YAML.'),
    ('Is the moon bigger than Mars?',
     'Is the moon smaller than Mars?'),
    ('How do I increase the font size in VS Code?',
     'How do I decrease the font size in VS Code?'),
    ('What are the advantages of remote work?',
     'What are the disadvantages of remote work?'),
    ('How do I encrypt a file with gpg?',
     'How do I decrypt a file with gpg?'),
    ('Summarize this for a child.',
     'Summarize this for an expert.'),
    ('What is the best way to learn guitar?',
     'What is the worst way to learn guitar?'),
    ('How to upload a file to S3 with boto3?',
     'How to download a file from S3 with boto3?'),
    ('Who was the first president of the United States?',
     'Who was the last president of the United States?'),
    ('What happens before a solar eclipse?',
     'What happens after a solar eclipse?'),
    ('Give me a recipe for vegan lasagna.',
     'Give me a recipe for vegetarian lasagna.'),
    ('How do I enable dark mode on iPhone?',
     'How do I disable dark mode on iPhone?'),
    ('What is the maximum value of an int in C?',
     'What is the minimum value of an int in C?'),
    ('Why does this return the wrong value?\\n```python\\ndef area(w, h):\\n    return w + h\\n```',
     'Why does this return the wrong value?\\n```python\\ndef area(w, h):\\n    return w * h\\n```'),
    ('The meeting moved from Monday to Tuesday because the room was booked. Summarize.',
     'The meeting moved from Tuesday to Monday because the room was booked. Summarize.'),
    ('Sort this list ascending: 5, 3, 9',
     'Sort this list descending: 5, 3, 9'),
    ('Which stores are open on Monday?',
     'Which stores are open on Tuesday?'),
    # the same numbers in another order (a score, a versus pair)
    ('The match ended 2-1. Who won, the home team or the away team?',
     'The match ended 1-2. Who won, the home team or the away team?'),
    ('Crash test question 1-0: name a colour.', 'Crash test question 0-1: name a colour.'),
]
PARAPHRASES = [
    ('How do I reset my password?',
     'How can I reset my password?'),
    ('Why is the ocean salty?',
     'Why is the sea salty?'),
    ('What is the best way to learn Python?',
     'What is the best way to learn Python fast?'),
    ('How can I become physically strong?',
     'How do I become physically strong?'),
    ('What are the health benefits of green tea?',
     'What are the health benefits of drinking green tea?'),
    ('Which is the best laptop for programming?',
     'What is the best laptop for programming?'),
    ('How do I start a small business?',
     'How do I start a small business from scratch?'),
    ('Is it safe to fly during pregnancy?',
     'Is it safe to travel by plane while pregnant?'),
    ('How long does it take to learn Spanish?',
     'How much time does it take to learn Spanish?'),
    ('What is the fastest way to lose weight?',
     'What is the quickest way to lose weight?'),
]


async def main() -> None:
    settings = Settings()
    embedder, judge = open_embedder(settings), open_judge(settings)
    cache = SemanticCache.open(tempfile.mkdtemp(prefix="edge-near-"), embedder, judge)
    for name, pairs in (("near-misses (a hit is a wrong answer)", NEAR_MISSES), ("paraphrases (a hit is right)", PARAPHRASES)):
        hits = 0
        print(f"{name}:  cosine  score")
        for cached, asked in pairs:
            a, b = await cache.embed_many([cached, asked])
            sim = float(a @ b)
            score = await cache.score(sim, cached, asked, cache.threshold)
            hits += score >= cache.threshold
            print(f"  {'HIT ' if score >= cache.threshold else '    '}{sim:6.3f} {score:6.3f}  {cached[:48]!r} / {asked[:48]!r}")
        print(f"  {hits} of {len(pairs)} served at threshold {cache.threshold:.3f}\n")
    cache.close()
    embedder.close()


if __name__ == "__main__":
    asyncio.run(main())
