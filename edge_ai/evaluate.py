"""Measure the production hit decision on labelled data (`edge-ai eval pairs | retrieval`)."""

from __future__ import annotations

import asyncio
import gzip
import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_ai.cache import SemanticCache
from edge_ai.engines.embedder import Embedder
from edge_ai.hit import HitJudge, differing
from edge_ai.request import Final, Message, Request


def _open(path: Path):
    path = Path(path)
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


@dataclass
class PairsResult:
    n: int
    tp: int
    fp: int
    fn: int
    precision_at_recall: dict[float, float]  # of the ranking by score, whatever the threshold

    @property
    def precision(self) -> float:
        return self.tp / max(self.tp + self.fp, 1)

    @property
    def recall(self) -> float:
        return self.tp / max(self.tp + self.fn, 1)

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / max(p + r, 1e-9)


RECALLS = (0.30, 0.40, 0.50)  # where `eval pairs` reads precision off the ranking


def precision_at(scores: np.ndarray, labels: np.ndarray, recall: float) -> float:
    """Precision where a ranking by `scores` (higher = surer hit) first reaches `recall` of the positives."""
    order = np.argsort(-scores)
    tp = np.cumsum(labels[order])
    at = min(int(np.searchsorted(tp / labels.sum(), recall)), len(tp) - 1)
    return float(tp[at] / (at + 1))


def read_pairs(path: Path, limit: int | None = None) -> list[dict[str, Any]]:
    rows = []
    with _open(path) as fh:
        for line in fh:
            if line.strip():
                rows.append(json.loads(line))
            if limit and len(rows) >= limit:
                break
    return rows


def eval_pairs(path: Path, embedder: Embedder, judge: HitJudge, threshold: float,
               limit: int | None = None) -> PairsResult:
    """`text_a` is the cached prompt, `text_b` the new one; label 1 means a hit would be right."""
    rows = read_pairs(path, limit)
    a = embedder.encode([r["text_a"] for r in rows])
    b = embedder.encode([r["text_b"] for r in rows])
    sims = np.einsum("ij,ij->i", a, b)
    # where the prompts share more than a few words at an end, the decision also weighs the stretch
    # where they differ (hit.differing), as the cache's lookup does
    stretch: list[float | None] = [None] * len(rows)
    wheres = {i: w for i, r in enumerate(rows) if (w := differing(r["text_a"], r["text_b"])) is not None}
    if wheres:
        wa, wb = embedder.encode([w[0] for w in wheres.values()]), embedder.encode([w[1] for w in wheres.values()])
        for i, x, y in zip(wheres, wa, wb):
            stretch[i] = float(x @ y)
    scores = np.array([judge.score(float(sim), r["text_a"], r["text_b"], st) for r, sim, st in zip(rows, sims, stretch)])
    labels = np.array([int(r["label"]) == 1 for r in rows])
    hits = scores >= threshold
    curve = {r: precision_at(scores, labels, r) for r in RECALLS} if labels.any() else {}
    return PairsResult(len(rows), int((hits & labels).sum()), int((hits & ~labels).sum()), int((labels & ~hits).sum()), curve)


def eval_retrieval(path: Path, embedder: Embedder, judge: HitJudge, threshold: float) -> dict[str, Any]:
    """GPTCache's protocol: insert every `origin`, ask every `similar`, count right / wrong / miss —
    through the production lookup (exact path, scope partition, threshold, vetoes)."""
    pairs = json.loads(Path(path).read_text(encoding="utf-8"))
    return asyncio.run(_retrieval(pairs, embedder, judge, threshold))


async def _retrieval(pairs: list[dict[str, str]], embedder: Embedder, judge: HitJudge,
                     threshold: float) -> dict[str, Any]:
    cache = SemanticCache.open(tempfile.mkdtemp(prefix="edge-eval-"), embedder, judge, threshold)
    vecs = embedder.encode([p["origin"] for p in pairs])
    for p, vec in zip(pairs, vecs):
        await cache.put(_ask(p["origin"]), Final(p["origin"], "stop", 0, 1), "eval", vec)
    looks = []
    step = max(1, embedder.max_queue // 4)  # in parts the embedder's queue admits (a lookup embeds up to 3 texts)
    for start in range(0, len(pairs), step):
        looks += await asyncio.gather(*(cache.lookup(_ask(p["similar"])) for p in pairs[start : start + step]))
    origin_vec = {p["origin"]: vec for p, vec in zip(pairs, vecs)}
    right = miss = 0
    wrong: list[dict[str, Any]] = []
    for p, look in zip(pairs, looks):
        if look.hit is None:
            miss += 1
        elif look.hit.entry.query == p["origin"]:
            right += 1
        else:
            served = look.hit.entry.query
            # Would this decision serve the served origin's answer to the right origin itself? Then the two
            # are one question to it, and the protocol's ids, not the decision, tell them apart.
            same = await cache.score(float(look.hit.entry.vec() @ origin_vec[p["origin"]]), served, p["origin"], threshold) >= threshold
            wrong.append({"similarity": look.hit.similarity, "asked": p["similar"], "served": served,
                          "right": p["origin"], "same_question": same})
    cache.close()
    return {"pairs": len(pairs), "right": right, "wrong": len(wrong), "miss": miss, "threshold": threshold,
            "same_question": sum(w["same_question"] for w in wrong), "wrong_hits": wrong}


def _ask(text: str) -> Request:
    return Request(model="eval", messages=(Message("user", text),))


# ---- answers: is the local model's answer usable? ------------------------------------------------


@dataclass
class Graded:
    question: str
    answer: str
    verdict: str  # correct | wrong | garbage | empty
    why: str = ""


def garbage(text: str) -> str:
    """Why an English answer is unusable on its face, or "": letters of another script, or a run of the same
    words repeated (a small model's loop)."""
    import unicodedata

    for ch in text:
        if ch.isalpha() and not unicodedata.name(ch, "").startswith("LATIN"):
            return f"another script ({ch!r})"
    words = re.findall(r"\w+", text.lower())
    for n in range(1, 9):
        copies = 4 if n == 1 else 3  # "very very very" happens; four of one word or three of a phrase do not
        for i in range(len(words) - n * copies + 1):
            if all(words[i : i + n] == words[i + k * n : i + (k + 1) * n] for k in range(1, copies)):
                return f"repeats {' '.join(words[i:i + n])!r}"
    lines = [ln.strip().lower() for ln in text.splitlines() if ln.strip()]
    if len(lines) >= 3 and len(set(lines)) <= len(lines) // 2:
        return "repeats its lines"
    return ""


def grade(question: str, pattern: str, answer: str) -> Graded:
    if not answer.strip():
        return Graded(question, answer, "empty")
    why = garbage(answer)
    if why:
        return Graded(question, answer, "garbage", why)
    return Graded(question, answer, "correct" if re.search(pattern, answer, re.I) else "wrong")


@dataclass
class AnswersResult:
    setting: str
    graded: list[Graded]
    completion_tokens: int
    seconds: float

    def count(self, verdict: str) -> int:
        return sum(g.verdict == verdict for g in self.graded)

    @property
    def correct_share(self) -> float:
        return self.count("correct") / max(len(self.graded), 1)


def read_questions(path: Path) -> list[dict[str, str]]:
    """JSONL of {"q": question, "a": regular expression a right answer matches (case-insensitive)}."""
    rows = []
    with _open(path) as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                re.compile(row["a"])
                rows.append({"q": str(row["q"]), "a": row["a"]})
            except (ValueError, KeyError, TypeError, re.error) as exc:
                raise ValueError(f"{path}:{n}: not a {{\"q\", \"a\"}} line with a valid pattern: {exc}") from exc
    return rows


async def answer_patiently(policy: Any, req: Request) -> Final:
    """The policy's answer, asked again after a short wait while the model's queue is full."""
    from edge_ai.errors import Overloaded

    while True:
        try:
            return await (await policy.answer(req)).collect()
        except Overloaded:
            await asyncio.sleep(0.2)


async def eval_answers(policy: Any, questions: list[dict[str, str]], setting: str, sampling: dict[str, Any],
                       repeats: int, max_tokens: int | None, model: str = "eval") -> AnswersResult:
    """Ask every question `repeats` times (seeds 1..repeats) through the answer policy, cache off, as a
    client would send it: one user turn, the given sampling fields and nothing else."""
    import time

    from edge_ai.request import CacheControl

    off = CacheControl(read=False, write=False)
    slots = asyncio.Semaphore(32)  # within the engine's slots and queue

    async def ask(q: dict[str, str], seed: int) -> tuple[Graded, int]:
        req = Request(model=model, messages=(Message("user", q["q"]),), max_tokens=max_tokens, cache=off,
                      seed=seed if repeats > 1 else None, **sampling)
        async with slots:
            final = await answer_patiently(policy, req)
        return grade(q["q"], q["a"], final.text), final.completion_tokens

    t0 = time.perf_counter()
    done = await asyncio.gather(*(ask(q, r + 1) for r in range(repeats) for q in questions))
    return AnswersResult(setting, [g for g, _ in done], sum(n for _, n in done), time.perf_counter() - t0)
