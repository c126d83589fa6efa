"""Measure a pair classifier (cross-encoder) as the hit decision: the experiment behind BENCHMARKS.md's
"A pair classifier, trained here" (it did not ship).

No cross-encoder is installable offline here, so one is trained: all-MiniLM-L6-v2's weights with a
one-logit head, fine-tuned on labelled pairs from index `--fit-from` on (QQP: the half the hit model
is fitted on), then scored on the first `--held` pairs and on a GPTCache-style {"origin","similar"} file,
where each paraphrase's top 4 origins by embedding cosine (>= 0.70) are re-ranked by the classifier,
and then with both at once (the nearest origin by cosine >= t, kept only if the classifier's logit >= c).
One epoch takes ~20 minutes on 2 cores.

    .venv/bin/python scripts/pair_classifier.py ../shared/data/qqp_dev.jsonl.gz \\
        --retrieval ../shared/data/gptcache_mock_data.json [--epochs 1] [--out /tmp/pair-model] [--model DIR]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch

from edge_ai.config import Settings
from edge_ai.evaluate import precision_at, read_pairs
from edge_ai.model_files import open_embedder, resolve_embedder


class PairModel:
    def __init__(self, path: str) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(path)
        self.net = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)

    def logits(self, a: list[str], b: list[str]) -> torch.Tensor:
        enc = self.tok(a, b, padding=True, truncation=True, max_length=128, return_tensors="pt")
        return self.net(**enc).logits.squeeze(-1)

    def fit(self, rows: list[dict], epochs: int, batch: int = 32, lr: float = 4e-5) -> None:
        rows = list(rows)
        steps = epochs * (len(rows) // batch)
        opt = torch.optim.AdamW(self.net.parameters(), lr=lr, weight_decay=0.01)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1, anneal_strategy="linear")
        loss_fn = torch.nn.BCEWithLogitsLoss()
        self.net.train()
        step, t0 = 0, time.perf_counter()
        for _ in range(epochs):
            random.shuffle(rows)
            for i in range(0, len(rows) - batch + 1, batch):
                part = rows[i : i + batch]
                a, b = [r["text_a"] for r in part], [r["text_b"] for r in part]
                if step % 2:  # both orders: the decision should not depend on which prompt was cached
                    a, b = b, a
                loss = loss_fn(self.logits(a, b), torch.tensor([float(r["label"]) for r in part]))
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.net.parameters(), 1.0)
                opt.step()
                sched.step()
                opt.zero_grad()
                step += 1
                if step % 50 == 0:
                    print(f"step {step}/{steps} loss {loss.item():.3f} {time.perf_counter() - t0:.0f} s", flush=True)
        self.net.eval()

    @torch.inference_mode()
    def score(self, a: list[str], b: list[str], batch: int = 64) -> np.ndarray:
        """Mean logit over both orders."""
        out = []
        for i in range(0, len(a), batch):
            x, y = a[i : i + batch], b[i : i + batch]
            out.append(((self.logits(x, y) + self.logits(y, x)) / 2).numpy())
        return np.concatenate(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pairs", type=Path)
    ap.add_argument("--retrieval", type=Path, help="a GPTCache-style {origin, similar} file")
    ap.add_argument("--fit-from", type=int, default=20_149)
    ap.add_argument("--held", type=int, default=4_000)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("/tmp/pair-model"), help="where the trained model is saved")
    ap.add_argument("--model", type=Path, help="score a model trained before (an --out directory) instead of training")
    args = ap.parse_args()
    random.seed(0)
    torch.manual_seed(0)
    settings = Settings()
    rows = read_pairs(args.pairs)
    if args.model:
        model = PairModel(str(args.model))
        model.net.eval()
    else:
        model = PairModel(str(resolve_embedder(settings.embedder)))
        model.fit(rows[args.fit_from :], args.epochs)
        model.net.save_pretrained(args.out)
        model.tok.save_pretrained(args.out)

    held = rows[: args.held]
    labels = np.array([int(r["label"]) for r in held])
    embedder = open_embedder(settings)
    a = embedder.encode([r["text_a"] for r in held])
    b = embedder.encode([r["text_b"] for r in held])
    ranked = {"cosine": np.einsum("ij,ij->i", a, b), "pair classifier": model.score([r["text_a"] for r in held], [r["text_b"] for r in held])}
    print(f"held-out pairs 0-{args.held - 1}, precision at recall:")
    for name, s in ranked.items():
        print(f"  {name:<16}" + "  ".join(f"R{r:.2f} {precision_at(s, labels, r):.3f}" for r in (0.05, 0.1, 0.2, 0.3, 0.4, 0.5)))

    if args.retrieval:
        pairs = json.loads(args.retrieval.read_text())
        origins = embedder.encode([p["origin"] for p in pairs])
        asked = embedder.encode([p["similar"] for p in pairs])
        sims = asked @ origins.T
        top = np.argsort(-sims, axis=1)[:, :4]
        cand = [(i, int(j)) for i in range(len(pairs)) for j in top[i] if sims[i, j] >= 0.70]
        logit = model.score([pairs[j]["origin"] for _, j in cand], [pairs[i]["similar"] for i, _ in cand])
        best: dict[int, tuple[float, int]] = {}
        for (i, j), s in zip(cand, logit):
            best[i] = max(best.get(i, (-1e9, -1)), (float(s), j))
        print(f"{args.retrieval.name}: right / wrong / miss by the classifier's logit")
        for t in (-2, -1, 0, 1, 2):
            hits = [(i, j) for i, (s, j) in best.items() if s >= t]
            right = sum(pairs[i]["origin"] == pairs[j]["origin"] for i, j in hits)  # as `edge-ai eval retrieval` counts
            print(f"  logit >= {t:>2}: {right} / {len(hits) - right} / {len(pairs) - len(hits)}")

        # Both at once: the embedder's nearest origin, kept only if the classifier agrees.
        first = sims.argmax(axis=1)
        nearest = sims[np.arange(len(pairs)), first]
        agrees = model.score([pairs[j]["origin"] for j in first], [p["similar"] for p in pairs])
        right = np.array([pairs[i]["origin"] == pairs[j]["origin"] for i, j in enumerate(first)])
        print("cosine >= t and logit >= c: QQP held-out precision / recall | right / wrong / miss")
        for t in (0.80, 0.85, 0.89):
            for c in (-2, -1, 0, 1):
                q = (ranked["cosine"] >= t) & (ranked["pair classifier"] >= c)
                tp = int((q & (labels == 1)).sum())
                g = (nearest >= t) & (agrees >= c)
                print(f"  t {t:.2f} c {c:>2}: P {tp / max(int(q.sum()), 1):.3f} R {tp / labels.sum():.3f}"
                      f" | {int((g & right).sum())} / {int((g & ~right).sum())} / {int((~g).sum())}")


if __name__ == "__main__":
    main()
