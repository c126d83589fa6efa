"""Drafts for speculative decoding, by n-gram lookup in a slot's own context.

An agent's answer repeats what it has seen: an edit quotes the lines it replaces, a rewrite copies most
of a file, a call names paths from the conversation. `NgramDraft` proposes the tokens that followed an
earlier occurrence of the context's final `NGRAM` tokens (in the prompt or the answer so far). The engine
decodes them in the same step as the slot's next token and keeps the longest run the model itself would
have produced (see `LLMEngine._verify`): the answer is the one it would have been without drafts.

Which occurrence: a copy has a place in its source. After a draft, the slot keeps a cursor where the
copy stands, and looks for the tail first just ahead of it (`WINDOW` tokens): a rewrite that renames a
class diverges at each rename and comes back to the same place in the file a few tokens later, while the
most recent occurrence of ".total(self) + " is the method it rewrote last, with the last method's numbers.
Without a cursor, or nothing near it, the most recent occurrence anywhere; such a draft does not move
the cursor (the renamed class's "Book.total(self) + " comes from the method rewritten last, and the copy
goes on where the cursor stands, with this method's number).

A draft's length adapts to how the slot's drafts fare: a short probe first (`DRAFT_FIRST`), doubled after
one accepted whole, twice what was accepted after a partial one, halved after a miss, never under
`DRAFT_LEAST` once a draft was kept; after `MISSES_TO_REST` misses in a row (one, while none was kept)
the slot rests for `REST_TOKENS` tokens, longer after each rest that kept nothing. On two cores a step's
cost grows with its tokens (Qwen2.5-Coder-1.5B: 76 ms for one token, 172 for 5, 299 for 17, ~13 ms a token
past that), so a draft pays only where most of it is kept, and plain chat answers rarely repeat their
context; a long copy (a file rewritten) earns drafts of up to 64 tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field

NGRAM = 3  # tokens of context a draft is keyed on: two matched too often by chance, four too rarely
# A slot's first draft is a probe: two tokens cost 37 ms more than a step of one, eight 188 ms, and where
# the context is not being copied (an edit call whose prompt spells out the JSON to write) every probe
# misses: 8-token probes lost 9% on that task at 4 clients (BENCHMARKS.md). A copy grows the draft fast.
DRAFT_FIRST = 2  # tokens in a slot's first draft, and after a miss while none of its drafts was kept
DRAFT_MAX = 64  # the longest draft: reached by doubling, draft after draft kept whole (2, 4, ... 64)
DRAFT_LEAST = 4  # once drafts are kept: shorter ones cost nearly as much a token as one decoded alone
MISSES_TO_REST = 2  # misses in a row, once a draft was kept, before a rest; before that, one
REST_TOKENS = 16  # a rest, doubled after each rest in which no draft was kept (at most 8x)
REST_DOUBLINGS = 3
WINDOW = 64  # how far ahead of the cursor the tail is looked for
LEAST_MATCH = 6  # a draft is taken only where this many tokens before it match the context's end: three
                 # match by chance (an edit call's `"old_string": ` and the prompt's instructions), six rarely
# Beside other decoding slots a draft is a pass of its own: llama.cpp splits a step into ubatches that take
# the same number of tokens from each sequence (split_equal, per-slot KV), so a slot's 2-token probe beside
# three slots' one token each is a second pass over the weights (~76 ms on Qwen2.5-Coder-1.5B), not 2
# tokens more. There a slot whose drafts were never kept probes only on strong evidence: an edit call's
# answer matched the prompt's spelled-out JSON for ~14 tokens, every probe missed, and the 4-client edit
# measured 0.96-0.97x (BENCHMARKS.md); a copied file matches far longer.
LEAST_MATCH_SHARED = 16


@dataclass
class NgramDraft:
    """One slot's index of where each n-gram of its context last ended, and how its drafts fare."""

    index: dict[tuple[int, ...], int] = field(default_factory=dict)  # n-gram -> position after its last occurrence
    indexed: int = 0  # context positions [0, indexed) are in the index
    prompt_len: int = 0  # where the answer begins: a draft's source is the prompt or the answer
    length: int = DRAFT_FIRST
    misses: int = 0
    resting: int = 0  # tokens to go without drafting
    kept: bool = False  # a draft of this task was kept, in part or whole: its context is being copied
    rests: int = 0  # rests since a draft was last kept
    cursor: int | None = None  # where the copy stands in the context: the position its next token comes from
    source_at: int = 0  # where the last draft was taken from
    aligned: bool = False  # the last draft was found near the cursor (or there was none)

    def reset(self, prompt_len: int) -> None:
        """A new task in the slot: its context may share a prefix with the last one, but not its history."""
        self.index.clear()
        self.indexed = 0
        self.prompt_len = prompt_len
        self.length, self.misses, self.resting = DRAFT_FIRST, 0, 0
        self.kept, self.rests = False, 0
        self.cursor = None

    def propose(self, context: list[int], limit: int, shared: bool = False) -> tuple[list[int], str]:
        """Up to `limit` tokens that may follow `context` (the tokens whose KV the slot holds plus its
        pending token), and where they were found ("prompt" or "answer"); none when resting or not found.
        `shared`: other slots decode in the same step (a probe then needs LEAST_MATCH_SHARED)."""
        if self.resting > 0:
            self.resting -= 1
            return [], ""
        limit = min(limit, self.length)
        n = len(context)
        if limit <= 0 or n <= NGRAM:
            return [], ""
        # index every n-gram that ends before the context's last token: an earlier occurrence of the tail
        if self.indexed > n - 1:  # the context was cut back (rejected drafts): entries past it are checked below
            self.indexed = n - 1
        for end in range(max(self.indexed, NGRAM), n):
            self.index[tuple(context[end - NGRAM: end])] = end
        self.indexed = max(self.indexed, n)
        key = context[n - NGRAM:]
        end = self._near_cursor(context, key)
        self.aligned = end is not None or self.cursor is None
        if end is None:
            end = self.index.get(tuple(key))
            if end is None or end >= n or context[end - NGRAM: end] != key:
                return [], ""
        least = LEAST_MATCH_SHARED if shared and not self.kept else LEAST_MATCH
        if _matched(context, end, least) < least:
            return [], ""
        self.source_at = end
        return context[end: end + limit], ("prompt" if end < self.prompt_len else "answer")

    def _near_cursor(self, context: list[int], key: list[int]) -> int | None:
        """The end of the first occurrence of `key` within WINDOW tokens from the cursor, if any."""
        if self.cursor is None:
            return None
        n = len(context)
        for end in range(max(self.cursor, NGRAM), min(self.cursor + WINDOW, n - 1) + 1):
            if context[end - 1] == key[-1] and context[end - NGRAM: end] == key:
                return end
        return None

    def settle(self, drafted: int, accepted: int) -> None:
        """How a draft fared: the next draft's length, or a rest after repeated misses."""
        if drafted == 0:
            return
        if self.aligned:
            self.cursor = self.source_at + accepted  # where the copy stands: its next token's source
        if accepted > 0:
            self.kept, self.rests, self.misses = True, 0, 0
            whole = accepted == drafted
            self.length = min(self.length * 2 if whole else max(accepted * 2, DRAFT_LEAST), DRAFT_MAX)
            return
        self.misses += 1
        self.length = max(self.length // 2, DRAFT_LEAST) if self.kept else DRAFT_FIRST
        if self.misses >= (MISSES_TO_REST if self.kept else 1):
            self.misses, self.resting = 0, REST_TOKENS << min(self.rests, REST_DOUBLINGS)
            self.rests += 1


def _matched(context: list[int], end: int, most: int) -> int:
    """How many tokens before `end` equal the context's last ones (up to `most`)."""
    n, k = len(context), 0
    while k < most and end - k - 1 >= 0 and context[end - k - 1] == context[n - k - 1]:
        k += 1
    return k
