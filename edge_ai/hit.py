"""The semantic-hit decision: is the cached answer to `cached` the right answer to `asked`?

The score is the prompts' cosine similarity less a penalty for each of two signals that embeddings blur:
- a capitalised name on one side only ("… in California?" / "… in Texas?");
- a symbol on one side only ("C" / "C++", "=" / "==").
The penalties are in cosine units, so `threshold` keeps its meaning (a similarity) and its strictness
scale; they come from a logistic regression on labelled pairs (`hit_model.json`), whose decision
boundary is a line in these features: a threshold on the score is a threshold on its probability.

Six vetoes stay hard whatever the model says, because they change the answer in any domain: different
numbers ("2 + 2" / "2 + 3", "in 2019" / "in 2020"), different code (fenced blocks), two words trading
places ("from Monday to Tuesday" / "from Tuesday to Monday"), opposite words as the only difference
("increase" / "decrease", "upload … to" / "download … from"), one name put for another ("in California"
/ "in Texas"), and a negation on one side only ("Can I…" / "Can't I…") where the rest of the wording is
shared. Embeddings barely see these: such pairs sit at
cosine 0.92–0.99. A reworded paraphrase often carries its negation in other words
("in non-streaming mode" / "without streaming"); there a one-sided "not" says little (see
NEGATION_OVERLAP).

A sentence embedding is a mean over the text's tokens, so a long stretch two prompts share outweighs the
part where they differ: a program's fixed instructions around the varying part, or anything past the
embedder's window (256 tokens), which it never sees. Two different tickets under one 180-token
template are at cosine 0.92, past the threshold; past the window they are at 1.0. So when prompts share
more than CONTEXT words at either end, the score is also taken on the stretch where they differ, with
CONTEXT words either side (`differing`), and the lower of the two counts: those two tickets score 0.39
there, a reworded ticket under the same template 0.96. The negation veto then reads the stretch: a
template's words would make any one-sided "not" look like a near-copy.

Why so few features: word-overlap and word-alignment features raise precision on Quora pairs (the data
the model is fitted on) by two more points but lose it on GPTCache's paraphrase set, i.e. they learn the
fitting data rather than near-misses; these help on both (README: "The hit decision").
`scripts/fit_hit_model.py` refits the model, e.g. for another embedder.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

NUMBER = re.compile(r"\d+(?:[.,:/]\d+)*")  # a number as the vetoes read it (also engines/lexicon.py)
_ORDER_LINK = re.compile(r"\s*(?:-|–|—|->|→|to|vs\.?|versus)\s*", re.IGNORECASE)
_WORD = re.compile(r"[a-z0-9']+")
_NAME = re.compile(r"(?<![.?!] )(?<!^)\b[A-Z][a-zA-Z]+")  # a capitalised word not opening a sentence
_SYMBOL = re.compile(r"[^\w\s?.,!'\"’‘“”\-:;()/&]")
_TOKEN = re.compile(r"[A-Za-z0-9]+")  # case kept, for names
_FENCED = re.compile(r"```(.*?)(?:```|$)", re.S)
_SYMMETRIC = frozenset({"and", "or", "nor", "vs", "versus"})
# Negations, words that negate by meaning among them: "I can't log in" and "I am unable to log in" are
# both negated, so they are no one-sided negation ("unable" / "able" is an opposite pair: `_opposite`).
_NEGATIONS = frozenset(
    "not no never without nor cannot can't don't doesn't didn't isn't aren't wasn't weren't won't "
    "wouldn't shouldn't couldn't hasn't haven't hadn't "
    "unable none nothing nobody nowhere neither absence absent lack lacks lacking".split()
)

# Words that ask the opposite of each other. Embeddings place them close: "How do I increase the font
# size…?" / "…decrease…" is at cosine 0.94, "Is the moon bigger than Mars?" / "…smaller…" at 0.97. A hit
# is vetoed when the prompts' differing words are such pairs and nothing else (BENCHMARKS.md, "Three more
# vetoes").
_OPPOSITES = frozenset(frozenset(pair.split("/")) for pair in (
    "bigger/smaller larger/smaller big/small large/small more/less most/least best/worst better/worse "
    "first/last before/after today/tomorrow today/yesterday yesterday/tomorrow high/low higher/lower "
    "highest/lowest fast/slow faster/slower fastest/slowest cheap/expensive cheaper/dearer start/stop "
    "open/close add/remove win/lose buy/sell push/pull true/false positive/negative pros/cons rich/poor "
    "old/young older/younger hot/cold long/short longer/shorter easy/hard easier/harder easiest/hardest "
    "good/bad men/women man/woman male/female boys/girls boy/girl north/south east/west left/right "
    "top/bottom above/below inside/outside early/late earlier/later light/dark love/hate strong/weak "
    "strengths/weaknesses success/failure safe/dangerous accept/reject allow/deny include/exclude "
    "always/never everything/nothing all/none same/different min/max ascending/descending to/from"
).split())
# Prefixes that turn a word into its opposite ("enable" / "disable", "encrypt" / "decrypt", "upload" /
# "download"), on a shared stem of at least 4 letters.
_OPPOSED_PREFIXES = (("", "dis"), ("", "un"), ("", "non"), ("", "il"), ("", "ir"), ("in", "de"), ("en", "de"),
                     ("en", "dis"), ("im", "ex"), ("up", "down"), ("in", "out"), ("over", "under"), ("max", "min"),
                     ("inc", "dec"))

# The negation veto holds when the prompts share at least this much of their other words (Jaccard).
# Among Quora pairs at cosine >= 0.85 with a negation on one side only, 50-78% are duplicates below
# an overlap of 0.8 and 26% above it; on GPTCache's reworded paraphrases the veto refused 32 right hits
# at 0.80 and no wrong one. At 0.7: 888 -> 913 right, 44 -> 38 wrong there against a veto that always
# holds, Quora's precision at recall 0.40 unchanged (BENCHMARKS.md, "Hit decision quality").
NEGATION_OVERLAP = 0.7

# Words of shared context kept either side of where two prompts differ (`differing`). At 8, Quora's
# precision rises a little (0.830 -> 0.832 at recall 0.40); on GPTCache's set one right hit goes to a
# "same question" origin at 0.80 and the default, and a few become misses at 0.95 (BENCHMARKS.md).
CONTEXT = 8
# ...and only where the stretch leaves out at least this share of the words the embedder reads of the
# shorter prompt: nearer the whole, its score is nearly the whole prompts', and its two embeddings would
# be spent for nothing. On GPTCache's set that keeps 15 of the 53 stretches, and four paraphrases that a
# stretch of nearly the whole put under 0.95 are hits again; no other count moves (BENCHMARKS.md).
LEAVES_OUT = 0.2
# Words the embedder reads of a prompt, at least (all-MiniLM-L6-v2: 256 tokens, ~190 English words). Of a
# longer prompt only these count: 100 shared words are most of what it reads of a 1,000-word prompt.
READS = 128

FEATURES = (
    "similarity",  # cosine of the two prompts' sentence embeddings
    "names_differ",  # capitalised words on one side only (capped at 3)
    "symbols_differ",  # 1.0 if the sets of symbols differ
)
DEFAULT_MODEL = Path(__file__).with_name("hit_model.json")


def words(text: str) -> set[str]:
    """Lower-case words, negations spelled out ("can't", "cannot" -> "can not"; "doesn't" -> "does not"),
    typographic apostrophes ("don’t") read as plain ones: "Can I…" and "Can't I…" then share "can"."""
    text = _IRREGULAR.sub(lambda m: _IRREGULAR_AS[m.group(0)], text.lower().replace("’", "'"))
    return set(_WORD.findall(text.replace("n't", " not")))


_IRREGULAR_AS = {"can't": "can not", "cannot": "can not", "won't": "will not", "shan't": "shall not"}
_IRREGULAR = re.compile(r"\b(?:can't|cannot|won't|shan't)\b")


def contradicts(cached: str, asked: str, negation: bool = True) -> bool:
    """The hard vetoes: different numbers, different code, two words trading places, opposite words, one
    name for another, or (unless `negation` is False) a negation on one side only of otherwise shared
    wording."""
    if set(NUMBER.findall(cached)) != set(NUMBER.findall(asked)) or _reordered(cached, asked):
        return True
    if _code_differs(cached, asked) or _traded(cached, asked) or _opposite(cached, asked) or _renamed(cached, asked):
        return True
    if not negation:
        return False
    words_a, words_b = words(cached), words(asked)
    if _NEGATIONS.isdisjoint(words_a) == _NEGATIONS.isdisjoint(words_b):
        return False
    rest_a, rest_b = words_a - _NEGATIONS, words_b - _NEGATIONS
    return len(rest_a & rest_b) >= NEGATION_OVERLAP * max(len(rest_a | rest_b), 1)


def _reordered(cached: str, asked: str) -> bool:
    """The same run of ordered numbers (see `_ordered`) on both sides, in another order."""
    runs_b = _ordered(asked)
    return any(sorted(a) == sorted(b) and a != b for a in _ordered(cached) for b in runs_b)


def _ordered(text: str) -> list[tuple[str, ...]]:
    """Runs of numbers whose order is part of the question: joined by a dash, "to", "vs" or an arrow. A
    score ("ended 2-1" / "ended 1-2"), a range or a versus pair in the other order asks something else,
    while the embeddings stay at cosine 0.996. Numbers in a list ("500 and 1000 rupee notes" / "1000 and
    500…") or in separate phrases may come in any order: on Quora's held-out pairs, 12 of 19 such
    reorderings are labelled duplicates."""
    runs: list[tuple[str, ...]] = []
    run: list[str] = []
    last = 0
    for m in NUMBER.finditer(text):
        if run and _ORDER_LINK.fullmatch(text, last, m.start()):
            run.append(m.group())
        else:
            if len(run) > 1:
                runs.append(tuple(run))
            run = [m.group()]
        last = m.end()
    if len(run) > 1:
        runs.append(tuple(run))
    return runs


def _code(text: str) -> list[str]:
    """The prompt's fenced code blocks, whitespace aside: code is not paraphrased, and one changed operator
    (`w + h` / `w * h`) changes the answer while the embeddings stay at cosine 0.99."""
    return [" ".join(block.split()) for block in _FENCED.findall(text)] if "```" in text else []


def _code_differs(cached: str, asked: str) -> bool:
    code_a, code_b = _code(cached), _code(asked)
    if code_a == code_b:
        return False
    if code_a and code_b:
        return True
    # fenced on one side only: the other may hold the same code unfenced
    code, other = (code_a, asked) if code_a else (code_b, cached)
    flat = " ".join(other.split())
    return any(block not in flat for block in code)


def _opposite(cached: str, asked: str) -> bool:
    """The words on one side only pair up as opposites, one to one, and there is at least one pair
    ("upload a file to S3" / "download a file from S3": upload/download, to/from)."""
    a, b = Counter(_WORD.findall(cached.lower())), Counter(_WORD.findall(asked.lower()))
    only_a, only_b = list((a - b).elements()), list((b - a).elements())
    if not only_a or len(only_a) != len(only_b) or len(only_a) > 3:
        return False
    return all(sum(_opposites(x, y) for y in only_b) == 1 for x in only_a) and \
        all(sum(_opposites(x, y) for x in only_a) == 1 for y in only_b)


def _renamed(cached: str, asked: str) -> bool:
    """One name put for another, all else equal: "bartenders in California" / "…in Texas", "open on
    Monday" / "…on Tuesday". Of Quora's 829 such pairs, 752 are labelled different questions (the
    name penalty alone let the closest through)."""
    a, b = Counter(_TOKEN.findall(cached)), Counter(_TOKEN.findall(asked))
    only_a, only_b = list((a - b).elements()), list((b - a).elements())
    # another case or a plural ("Sunday" / "Sundays") is the same name
    if len(only_a) != 1 or len(only_b) != 1 or only_a[0].lower().rstrip("s") == only_b[0].lower().rstrip("s"):
        return False
    return only_a[0] in _NAME.findall(cached) and only_b[0] in _NAME.findall(asked)


def _opposites(x: str, y: str) -> bool:
    if frozenset((x, y)) in _OPPOSITES:
        return True
    return any(u.startswith(p) and v.startswith(q) and len(u) - len(p) >= 4 and u[len(p):] == v[len(q):]
               for p, q in _OPPOSED_PREFIXES for u, v in ((x, y), (y, x)))


def _traded(cached: str, asked: str) -> bool:
    """The same words with two of them trading places: "convert ethane to ethene" / "convert ethene to
    ethane", "What do Croats think of Turks?" / "…Turks think of Croats?". Not neighbours ("Why should
    we" / "Why we should") nor an "X and Y" / "Y and X" pair. On Quora pairs this holds for 12, of which
    10 are labelled different questions."""
    a, b = _WORD.findall(cached.lower()), _WORD.findall(asked.lower())
    if len(a) != len(b):
        return False
    where = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
    if len(where) != 2:
        return False
    i, j = where
    if a[i] != b[j] or a[j] != b[i] or j == i + 1:
        return False
    return not (j == i + 2 and a[i + 1] in _SYMMETRIC)


def differing(cached: str, asked: str, context: int = CONTEXT) -> tuple[str, str] | None:
    """The stretch of each prompt where they differ, with `context` shared words either side; None when
    that stretch is the whole of both (the prompts share no more than `context` words at either end) or
    nearly (it leaves out less than LEAVES_OUT of what the embedder reads of the shorter one)."""
    a, b = cached.split(), asked.split()
    shortest = min(len(a), len(b))
    head = 0
    while head < shortest and a[head] == b[head]:
        head += 1
    tail = 0
    while tail < shortest - head and a[-1 - tail] == b[-1 - tail]:
        tail += 1
    start, cut = max(head - context, 0), max(tail - context, 0)
    if start + cut == 0 or start + cut < LEAVES_OUT * min(shortest, READS):
        return None
    return " ".join(a[start : len(a) - cut]), " ".join(b[start : len(b) - cut])


@dataclass(frozen=True)
class HitModel:
    """Weights of FEATURES in cosine units: the similarity's is 1, the others are penalties (≤ 0), so a
    score never exceeds its similarity and the index can skip candidates under the threshold."""

    weights: np.ndarray
    threshold: float  # the default least score (cache_threshold unless configured)
    about: dict[str, Any]

    @classmethod
    def load(cls, path: str | Path = DEFAULT_MODEL) -> "HitModel":
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        if tuple(raw["features"]) != FEATURES:
            raise ValueError(f"{path}: features {raw['features']} are not this edge-ai's {list(FEATURES)}")
        weights = np.asarray(raw["weights"], np.float64)
        if weights[0] != 1.0 or (weights[1:] > 0).any():
            raise ValueError(f"{path}: weights must be 1 for the similarity and <= 0 (penalties) for the rest")
        return cls(weights, float(raw["threshold"]), raw.get("about", {}))


def features(similarity: float, cached: str, asked: str) -> np.ndarray:
    """FEATURES of a candidate pair, in order."""
    la, lb = cached.lower(), asked.lower()
    names = sum(w.lower() not in lb for w in set(_NAME.findall(cached)))
    names += sum(w.lower() not in la for w in set(_NAME.findall(asked)))
    symbols = set(_SYMBOL.findall(cached)) != set(_SYMBOL.findall(asked))
    return np.array([similarity, min(names, 3), float(symbols)], np.float64)


class HitJudge:
    def __init__(self, model: HitModel | None = None) -> None:
        self.model = model or HitModel.load()

    def score(self, similarity: float, cached: str, asked: str, stretch: float | None = None) -> float:
        """The similarity less the penalties; 0 under a veto. `stretch`: the cosine of the two prompts'
        `differing` stretches, where there are any; the score is then the lower of the whole prompts'
        and the stretches' own. The negation veto then reads the stretches alone: a shared template's
        words would make any one-sided "not" look like a near-copy (the others hold on either)."""
        where = differing(cached, asked) if stretch is not None else None
        if where is None:
            return 0.0 if contradicts(cached, asked) else self._weigh(similarity, cached, asked)
        return min(self.bound(similarity, cached, asked), self.score(stretch, *where))

    def bound(self, similarity: float, cached: str, asked: str) -> float:
        """The whole prompts' score before the negation veto: no score of this pair is higher, so a pair
        under the threshold here needs no stretch embedded (a stretch may cut a code block in half, so
        the other vetoes are read on the whole prompts too)."""
        return 0.0 if contradicts(cached, asked, negation=False) else self._weigh(similarity, cached, asked)

    def _weigh(self, similarity: float, cached: str, asked: str) -> float:
        return float(features(similarity, cached, asked) @ self.model.weights)
