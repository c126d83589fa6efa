"""The bounded most-recently-used map behind the hot-path memos."""

from __future__ import annotations

from edge_ai.recent import Recent


def test_keeps_the_most_recently_used_and_forgets_the_rest():
    r = Recent(3)
    for k in "abc":
        r.remember(k, k.upper())
    assert r.recall("a") == "A"  # used: now the most recent
    r.remember("d", "D")
    assert list(r) == ["c", "a", "d"] and r.recall("b") is None
    r.remember("c", "C2")  # remembering again replaces and refreshes
    assert list(r) == ["a", "d", "c"] and r.recall("c") == "C2"
    r.size = 1  # a smaller bound applies at the next remember
    r.remember("e", "E")
    assert list(r) == ["e"]
