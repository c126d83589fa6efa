"""The internal request and reply forms."""

from __future__ import annotations

import asyncio

import pytest

from edge_ai.request import Final, Message, Reply, Request


def test_collect_returns_the_final_and_closes_the_answer():
    closed = []

    async def events():
        try:
            yield "Hel"
            yield "lo"
            yield Final("Hello", "stop", 3, 2)
            yield "never read"
        finally:
            closed.append(True)  # ran now, not whenever the GC gets to a suspended generator

    async def main() -> tuple[Final, list[bool]]:
        final = await Reply("cache", events()).collect()
        return final, list(closed)  # before the loop's own shutdown would close it

    final, closed_then = asyncio.run(main())
    assert (final.text, final.completion_tokens, closed_then) == ("Hello", 2, [True])


def test_collect_without_a_final_is_an_error():
    async def events():
        yield "cut"

    with pytest.raises(RuntimeError, match="without a final"):
        asyncio.run(Reply("local", events()).collect())


def test_keys_separate_scope_from_query():
    a = Request(model="m", system="be brief", messages=(Message("user", "hi"),))
    b = Request(model="m", system="be brief", messages=(Message("user", "hello"),))
    c = Request(model="m", system="be verbose", messages=(Message("user", "hi"),))
    assert a.scope_key() == b.scope_key() != c.scope_key()
    assert len({a.exact_key(), b.exact_key(), c.exact_key()}) == 3
