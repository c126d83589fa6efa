"""The internal request and reply forms."""

from __future__ import annotations

import asyncio
import hashlib
import json

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


def _json_digest(req: Request) -> str:
    """The scope key as stored caches know it: sha256 of the scope's sorted JSON."""
    text = json.dumps(req.scope(), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def test_scope_key_keeps_the_stored_format_and_tells_scopes_apart():
    ask = (Message("user", "What is the capital of France?"),)
    base = Request(model="m", system="be brief", messages=ask)
    variants = [
        base,
        Request(model="m", system="be brief", messages=ask),  # same scope: same key (memoised)
        Request(model="m2", system="be brief", messages=ask),
        Request(model="m", system="be long", messages=ask),
        Request(model="m", system="be brief", messages=(Message("user", "hi"), Message("assistant", "hello"), *ask)),
        Request(model="m", system="be brief", messages=ask, tenant="acme"),
        Request(model="m", system="be brief", messages=ask, stop=("\n",)),
        Request(model="m", system="be brief", messages=ask, prefill="Paris"),
        Request(model="m", system="be brief", messages=ask, answer_params={"tools": [{"type": "function"}]}),
        Request(model="m", kind="completion", prompt="What is the capital of France?"),
    ]
    for req in variants:
        assert req.scope_key() == _json_digest(req)
    keys = [r.scope_key() for r in variants]
    assert keys[0] == keys[1] and len(set(keys)) == len(keys) - 1
    other_query = Request(model="m", system="be brief", messages=(Message("user", "And of Spain?"),))
    assert other_query.scope_key() == keys[0] and other_query.exact_key() != base.exact_key()
