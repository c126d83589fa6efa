"""Should the cache refuse a hit when a second cached prompt scores almost as well? A measured rule
that did not ship (BENCHMARKS.md, "Hit decision quality").

The margin rule: serve the best-scoring candidate only if no other candidate scores within `delta` of
it; "exempt" variant: rivals the decision itself counts as the same question as the best do not count.
On GPTCache's set (every origin cached, every paraphrase asked, the 4 nearest distinct origins scored
by the production decision) it prints right / wrong per threshold and delta. With --qqp, also Quora pairs
as a retrieval set: every distinct `text_a` of pairs 0..--held-1 cached, every `text_b` asked; a hit on
its own `text_a` is right for a duplicate and wrong for a non-duplicate (other hits are unlabelled).

    .venv/bin/python scripts/bench/margin_rule.py ../shared/data/gptcache_mock_data.json \\
        [--qqp ../shared/data/qqp_dev.jsonl.gz --vectors qqp_vecs.npz]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from edge_ai.config import Settings
from edge_ai.evaluate import read_pairs
from edge_ai.model_files import open_embedder, open_judge

DELTAS = (0.0, 0.01, 0.02, 0.03)


def candidates(asked: list[str], cached: list[str], near: np.ndarray, judge) -> list[list[tuple[float, int]]]:
    """(score, cached index) of each question's 4 nearest distinct cached prompts, best score first."""
    out = []
    for i, q in enumerate(asked):
        seen: set[str] = set()
        found = []
        for j in np.argsort(-near[i])[:8]:
            if cached[j] in seen or cached[j] == q:  # one entry per text; the same text is an exact hit
                continue
            seen.add(cached[j])
            found.append((judge.score(float(near[i, j]), cached[j], q), int(j)))
            if len(found) == 4:
                break
        out.append(sorted(found, reverse=True))
    return out


def served(found: list[tuple[float, int]], t: float, delta: float, same) -> int | None:
    """The cached index a margin rule serves, or None. `same(a, b)`: one question to the decision."""
    if not found or found[0][0] < t:
        return None
    best = found[0]
    rivals = [c for c in found[1:] if c[0] > best[0] - delta and not (same and same(best[1], c[1]))]
    return None if delta and rivals else best[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("retrieval", type=Path, help='GPTCache-style JSON list of {"origin", "similar"}')
    ap.add_argument("--qqp", type=Path, help="labelled pairs (jsonl[.gz]) to read as a retrieval set too")
    ap.add_argument("--held", type=int, default=20149, help="Quora pairs 0..held-1 (the hit model's unseen half)")
    ap.add_argument("--vectors", type=Path, help=".npz with a, b: the Quora embeddings (fit_hit_model.py --vectors)")
    args = ap.parse_args()

    settings = Settings()
    embedder, judge = open_embedder(settings), open_judge(settings)
    default = judge.model.threshold
    pairs = json.loads(args.retrieval.read_text(encoding="utf-8"))
    origins = [p["origin"] for p in pairs]
    o_vec = embedder.encode(origins)
    q_vec = embedder.encode([p["similar"] for p in pairs])
    found = candidates([p["similar"] for p in pairs], origins, q_vec @ o_vec.T, judge)
    between = o_vec @ o_vec.T

    def same_question(t: float):
        return lambda a, b: judge.score(float(between[a, b]), origins[a], origins[b]) >= t

    print(f"{args.retrieval.name}: right / wrong")
    print(f"{'threshold':<10}{'rule':<8}" + "".join(f"{'delta ' + str(d):>14}" for d in DELTAS))
    for t in (0.75, 0.80, default):
        for rule, same in (("plain", None), ("exempt", same_question(t))):
            cells = []
            for d in DELTAS:
                picks = [served(f, t, d, same) for f in found]
                right = sum(j is not None and origins[j] == p["origin"] for j, p in zip(picks, pairs))
                wrong = sum(j is not None and origins[j] != p["origin"] for j, p in zip(picks, pairs))
                cells.append(f"{right} / {wrong}")
            print(f"{t:<10.3f}{rule:<8}" + "".join(f"{c:>14}" for c in cells))

    if args.qqp:
        rows = read_pairs(args.qqp)[: args.held]
        if args.vectors and args.vectors.exists():
            saved = np.load(args.vectors)
            a_vec, b_vec = saved["a"][: len(rows)], saved["b"][: len(rows)]
        else:
            a_vec = embedder.encode([r["text_a"] for r in rows])
            b_vec = embedder.encode([r["text_b"] for r in rows])
        first: dict[str, int] = {}
        for i, r in enumerate(rows):
            first.setdefault(r["text_a"], i)
        keep = sorted(first.values())
        cached = [rows[i]["text_a"] for i in keep]
        found = candidates([r["text_b"] for r in rows], cached, b_vec @ a_vec[keep].T, judge)
        position = {i: k for k, i in enumerate(keep)}
        own = [position[first[r["text_a"]]] for r in rows]  # where each pair's own text_a is cached
        print(f"\n{args.qqp.name} pairs 0..{len(rows) - 1} as retrieval, at {default:.3f}: "
              "own-pair hits on duplicates (right) / on non-duplicates (wrong), precision; other hits")
        for d in DELTAS:
            picks = [served(f, default, d, None) for f in found]
            right = sum(j == o and r["label"] == 1 for j, o, r in zip(picks, own, rows))
            wrong = sum(j == o and r["label"] == 0 for j, o, r in zip(picks, own, rows))
            other = sum(j is not None and j != o for j, o in zip(picks, own))
            print(f"delta {d:<6}{right:>7} / {wrong:<6} P {right / max(right + wrong, 1):.3f}   other {other}")
    embedder.close()


if __name__ == "__main__":
    main()
