"""How much shared wording should the negation veto ask for? The hit decision with the veto always on,
never on, and on from each word overlap given, on Quora pairs and GPTCache's paraphrase set.

    .venv/bin/python scripts/bench/negation_veto.py ../shared/data/qqp_dev.jsonl.gz \\
        ../shared/data/gptcache_mock_data.json [--overlaps 0.5 0.6 0.7 0.8] [--vectors qqp_vecs.npz]

Everything but the veto is the production decision (hit model, number veto, threshold 0.892 unless
--threshold): Quora's precision at recall 0.40 on each half of the file, and GPTCache's right / wrong
at 0.80 and at the threshold, each paraphrase taking the best-scoring of its 4 nearest origins if the
decision accepts it, as the cache's lookup does. --vectors caches the Quora embeddings (the same .npz as
`fit_hit_model.py --vectors`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import edge_ai.hit as hit  # noqa: E402
from edge_ai.config import Settings  # noqa: E402
from edge_ai.evaluate import precision_at, read_pairs  # noqa: E402
from edge_ai.model_files import open_embedder  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pairs", type=Path)
    ap.add_argument("retrieval", type=Path)
    ap.add_argument("--overlaps", type=float, nargs="+", default=[0.5, 0.6, 0.7, 0.8])
    ap.add_argument("--threshold", type=float, default=0.892)
    ap.add_argument("--vectors", type=Path)
    args = ap.parse_args()

    rows = read_pairs(args.pairs)
    labels = np.array([int(r["label"]) for r in rows])
    embedder = open_embedder(Settings())
    if args.vectors and args.vectors.exists():
        z = np.load(args.vectors)
        a, b = z["a"], z["b"]
    else:
        a = embedder.encode([r["text_a"] for r in rows])
        b = embedder.encode([r["text_b"] for r in rows])
        if args.vectors:
            np.savez(args.vectors, a=a, b=b)
    sims = np.einsum("ij,ij->i", a, b)
    pairs = json.loads(args.retrieval.read_text())
    origins = embedder.encode([p["origin"] for p in pairs])
    asked = embedder.encode([p["similar"] for p in pairs])
    near = asked @ origins.T
    top = np.argsort(-near, axis=1)[:, :4]
    embedder.close()

    half = len(rows) // 2
    print(f"negation veto          QQP P@R0.40 0..{half - 1}  {half}..{len(rows) - 1}"
          f"   {args.retrieval.name} right / wrong at 0.80, at {args.threshold}")
    judge = hit.HitJudge()
    variants = [("always", 0.0), ("never", float("inf"))] + [(f"overlap >= {o}", o) for o in args.overlaps]
    for name, overlap in variants:
        hit.NEGATION_OVERLAP = overlap  # hit.contradicts reads it at call time
        scores = np.array([judge.score(float(s), r["text_a"], r["text_b"]) for s, r in zip(sims, rows)])
        precision = [precision_at(scores[part], labels[part], 0.40) for part in (slice(0, half), slice(half, None))]
        counts = []
        for t in (0.80, args.threshold):
            right = wrong = 0
            for i, p in enumerate(pairs):  # the best-scoring of the 4 nearest, as the production lookup
                score, j = max((judge.score(float(near[i, j]), pairs[j]["origin"], p["similar"]), j) for j in top[i])
                if score >= t:
                    right += pairs[j]["origin"] == p["origin"]  # by text, as `edge-ai eval retrieval`
                    wrong += pairs[j]["origin"] != p["origin"]
            counts.append(f"{right} / {wrong}")
        print(f"{name:<22}{precision[0]:>16.3f}{precision[1]:>13.3f}   {counts[0]:>12}{counts[1]:>14}")


if __name__ == "__main__":
    main()
