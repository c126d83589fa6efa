"""Which questions are likely cache hits, known before anything is embedded: the rare words a question
shares with a cached prompt of its scope.

In a surge the embedder is the bottleneck, and most of what it embeds is new questions, embedded only to
learn they are new (and then refused by a full model queue). A first-time paraphrase waited behind them:
p99 4 s (RELIABILITY.md). Ranked by this index, a question that shares most of its rare words, and all of
its numbers, with one cached prompt is embedded first; one that shares nothing waits, as it would have
waited for the model anyway. Nothing is refused or answered on these words alone: they only order the
embedder's queue, and the hit is still decided on vectors (SemanticCache.lookup).

Words: lower-case, three letters or more, not among the commonest English words; in a scope, a word in more
than COMMON prompts says little and is skipped. Numbers must match in order, as the hit decision's veto
wants (hit.contradicts), so a templated question with another number ("… (question 3-7)?") is not ranked
first beside the one stored.
"""

from __future__ import annotations

import math
import re
import threading
from array import array

import numpy as np

from edge_ai.hit import NUMBER as _NUMBER  # numbers read as the hit decision's veto reads them

_WORD = re.compile(r"[a-z][a-z0-9_'-]{2,}")
_STOP = frozenset(
    "the and for are but not you all any can her was one our out his has had how its who why what when where "
    "which with this that from have will would should could does did your they them their there then than "
    "into about some more most other such only also just been being were may might must shall".split()
)
COMMON = 2_000  # prompts in a scope containing a word, above which it is not looked up
NEAR_SHARE = 0.4  # of a question's rare words, at least this share shared with one prompt (and 1 word)


_NONE = array("i")
READS = 1_000  # characters of a prompt read: about what the embedder reads of it (128 tokens)


def rare_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text[:READS].lower()) if w not in _STOP}


def _numbers(text: str) -> int:
    return hash(tuple(_NUMBER.findall(text[:READS])))


class LexicalIndex:
    """Thread-safe: written by the store's follower thread and by requests, read by lookups."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._row_of: dict[str, int] = {}  # entry id -> row
        self._numbers = array("q")  # row -> hash of its numbers, in order
        self._alive = bytearray()  # row -> 1 while the entry is indexed
        self._postings: dict[tuple[str, str], array] = {}  # (scope, word) -> rows
        self._dead = 0  # rows no longer indexed, still in postings until the next compaction

    def __len__(self) -> int:
        return len(self._row_of)

    def __contains__(self, id_: str) -> bool:
        return id_ in self._row_of

    def add(self, scope: str, id_: str, text: str) -> None:
        with self._lock:
            old = self._row_of.pop(id_, None)
            if old is not None:  # replaced: the new text's words count, not the old's
                self._bury(old)
            row = len(self._numbers)
            self._numbers.append(_numbers(text))
            self._alive.append(1)
            self._row_of[id_] = row
            for word in rare_words(text):
                self._postings.setdefault((scope, word), array("i")).append(row)

    def remove(self, id_: str) -> None:
        with self._lock:
            row = self._row_of.pop(id_, None)
            if row is not None:
                self._bury(row)

    def _bury(self, row: int) -> None:
        """Mark a row dead; once the dead outnumber the living, drop them from the postings (a cache that
        expires and rewrites entries for months keeps postings the size of what it holds). Lock held."""
        self._alive[row] = 0
        self._dead += 1
        if self._dead > max(1024, len(self._row_of)):
            alive = np.frombuffer(bytes(self._alive), dtype=np.uint8).astype(bool)
            for key in list(self._postings):
                rows = np.array(self._postings[key], dtype=np.int32)
                kept = rows[alive[rows]]
                if len(kept):
                    self._postings[key] = array("i", kept.tobytes())
                else:
                    del self._postings[key]
            self._dead = 0

    def near(self, scope: str, text: str) -> bool:
        """One prompt of `scope` shares at least NEAR_SHARE of the text's rare words, and its numbers."""
        with self._lock:
            # a word in more than COMMON prompts of the scope tells nothing either way: not counted at all;
            # a word in none counts against (it is new)
            counted = [self._postings.get((scope, w), _NONE) for w in rare_words(text)]
            counted = [p for p in counted if len(p) <= COMMON]
            lists = [p for p in counted if len(p)]
            if not lists:
                return False
            rows, shared = np.unique(np.concatenate([np.frombuffer(p, dtype=np.int32) for p in lists]), return_counts=True)
            need = max(1, math.ceil(NEAR_SHARE * len(counted)))
            candidates = rows[shared >= need]
            if not len(candidates):
                return False
            numbers = _numbers(text)
            return any(self._alive[r] and self._numbers[r] == numbers for r in candidates.tolist())
