"""A linear map on the embeddings, fitted to Quora's labels: does it make a better hit decision? A measured
idea that did not ship (BENCHMARKS.md, "Hit decision quality").

The map W (384 x 384, or the identity plus a `--rank` product; it starts at the identity, pulled back to it by `--lam`) is fitted with a logistic
loss on cos(aW, bW) over Quora pairs --held.. (the hit model's fitting half). Both decisions below are the
production score (penalties and vetoes of edge_ai/hit.py) on top of the raw or the mapped cosine:
- Quora: precision at recall 0.30 / 0.40 / 0.50 on the unseen pairs 0..--held-1;
- GPTCache's set: every origin cached, each paraphrase served its best-scoring origin of the 4 nearest;
  wrong hits among the 900 and 950 surest, so the two scales are compared at equal numbers of hits.

    .venv/bin/python scripts/bench/linear_adapter.py ../shared/data/qqp_dev.jsonl.gz \\
        ../shared/data/gptcache_mock_data.json [--vectors qqp_vecs.npz] [--lam 0.01 0.001 0.0001] [--rank 4]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from edge_ai.config import Settings
from edge_ai.evaluate import RECALLS, precision_at, read_pairs
from edge_ai.model_files import open_embedder, open_judge


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def fit(a: np.ndarray, b: np.ndarray, y: np.ndarray, lam: float, epochs: int, rank: int = 0, seed: int = 0) -> np.ndarray:
    """W = I + D, D full (rank 0) or U Vᵀ of that rank; λ‖D‖² keeps W near the identity."""
    torch.manual_seed(seed)
    a_t, b_t, y_t = torch.tensor(a), torch.tensor(b), torch.tensor(y, dtype=torch.float32)
    dim = a.shape[1]
    if rank:
        u, v = torch.nn.Parameter(torch.zeros(dim, rank)), torch.nn.Parameter(0.01 * torch.randn(dim, rank))
        params, delta = [u, v], lambda: u @ v.T
    else:
        d = torch.nn.Parameter(torch.zeros(dim, dim))
        params, delta = [d], lambda: d
    scale, bias = torch.nn.Parameter(torch.tensor(10.0)), torch.nn.Parameter(torch.tensor(-8.0))
    opt = torch.optim.Adam([*params, scale, bias], lr=1e-3)
    eye = torch.eye(dim)
    for _ in range(epochs):
        for rows in torch.randperm(len(y_t)).split(256):
            dw = delta()
            w = eye + dw
            sim = (torch.nn.functional.normalize(a_t[rows] @ w, dim=1) * torch.nn.functional.normalize(b_t[rows] @ w, dim=1)).sum(1)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(scale * sim + bias, y_t[rows]) + lam * (dw**2).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return (eye + delta()).detach().numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("pairs", type=Path, help="labelled pairs (jsonl[.gz]): text_a, text_b, label")
    ap.add_argument("retrieval", type=Path, help='GPTCache-style JSON list of {"origin", "similar"}')
    ap.add_argument("--held", type=int, default=20149, help="pairs 0..held-1 are scored, the rest fit the map")
    ap.add_argument("--vectors", type=Path, help=".npz with a, b: the Quora embeddings (fit_hit_model.py --vectors)")
    ap.add_argument("--lam", type=float, nargs="+", default=[0.01, 0.001, 0.0001], help="pull towards the identity")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--rank", type=int, default=0, help="fit W = I + U Vᵀ of this rank (0: a full matrix)")
    args = ap.parse_args()

    settings = Settings()
    embedder, judge = open_embedder(settings), open_judge(settings)
    rows = read_pairs(args.pairs)
    y = np.array([int(r["label"]) for r in rows])
    if args.vectors and args.vectors.exists():
        z = np.load(args.vectors)
        a, b = z["a"], z["b"]
    else:
        a, b = embedder.encode([r["text_a"] for r in rows]), embedder.encode([r["text_b"] for r in rows])
        if args.vectors:
            np.savez(args.vectors, a=a, b=b)
    data = json.loads(args.retrieval.read_text(encoding="utf-8"))
    origins, asked = [p["origin"] for p in data], [p["similar"] for p in data]
    o_vec, q_vec = embedder.encode(origins), embedder.encode(asked)
    held = slice(0, args.held)

    def report(name: str, w: np.ndarray | None) -> None:
        m = (lambda x: x) if w is None else (lambda x: x @ w)
        sims = (unit(m(a[held])) * unit(m(b[held]))).sum(1)
        scores = np.array([judge.score(float(s), r["text_a"], r["text_b"]) for s, r in zip(sims, rows[: args.held])])
        quora = " / ".join(f"{precision_at(scores, y[held], r):.3f}" for r in RECALLS)
        near = unit(m(q_vec)) @ unit(m(o_vec)).T
        best, served = np.zeros(len(asked)), np.zeros(len(asked), int)
        for i, q in enumerate(asked):
            for j in np.argsort(-near[i])[:4]:
                s = judge.score(float(near[i, j]), origins[j], q)
                if s > best[i]:
                    best[i], served[i] = s, j
        wrong = np.array([origins[j] != origins[i] for i, j in enumerate(served)])
        surest = np.argsort(-best)
        print(f"{name:<22}{quora:>24}{int(wrong[surest[:900]].sum()):>14}{int(wrong[surest[:950]].sum()):>14}")

    print(f"{'decision':<22}{'Quora P@R .30/.40/.50':>24}{'GPT wrong@900':>14}{'GPT wrong@950':>14}")
    report("production score", None)
    for lam in args.lam:
        report(f"mapped, lam {lam:g}", fit(a[args.held :], b[args.held :], y[args.held :], lam, args.epochs, args.rank))


if __name__ == "__main__":
    main()
