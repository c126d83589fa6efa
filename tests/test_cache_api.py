"""The semantic cache through the HTTP API: hits, scope, bypass headers, persistence across restarts."""

from __future__ import annotations

import uuid

import pytest


def ask(client, messages, **kw):
    raw = client.chat.completions.with_raw_response.create(model=kw.pop("model", "gpt-4o"), messages=messages, max_tokens=kw.pop("max_tokens", 16), temperature=0, **kw)
    return raw.headers, raw.parse().choices[0].message.content


def scoped(system_hint: str = "") -> str:
    """A system prompt unique to one test, so entries written by other tests never match."""
    return f"You are a helpful assistant. {system_hint} ({uuid.uuid4().hex[:8]})"


def test_same_question_twice_second_from_cache(openai_client):
    msgs = [{"role": "system", "content": scoped()}, {"role": "user", "content": "What is the boiling point of water?"}]
    h1, a1 = ask(openai_client, msgs)
    h2, a2 = ask(openai_client, msgs)
    assert h1["x-edge-source"] == "local"
    assert h2["x-edge-source"] == "cache"
    assert float(h2["x-edge-similarity"]) == 1.0
    assert a2 == a1


def test_paraphrase_hits(openai_client):
    system = scoped()
    h1, a1 = ask(openai_client, [{"role": "system", "content": system}, {"role": "user", "content": "How do I reset my password?"}])
    h2, a2 = ask(openai_client, [{"role": "system", "content": system}, {"role": "user", "content": "How can I reset my password?"}])
    assert h1["x-edge-source"] == "local"
    assert h2["x-edge-source"] == "cache", h2
    assert 0.9 <= float(h2["x-edge-similarity"]) < 1.0
    assert a2 == a1


def test_unrelated_question_misses(openai_client):
    system = scoped()
    ask(openai_client, [{"role": "system", "content": system}, {"role": "user", "content": "How do I reset my password?"}])
    h, _ = ask(openai_client, [{"role": "system", "content": system}, {"role": "user", "content": "What is the tallest mountain on Earth?"}])
    assert h["x-edge-source"] == "local"


def test_other_system_prompt_misses(openai_client):
    q = {"role": "user", "content": "What is the speed of light?"}
    ask(openai_client, [{"role": "system", "content": scoped("Answer as a pirate.")}, q])
    h, _ = ask(openai_client, [{"role": "system", "content": scoped("Answer as a poet.")}, q])
    assert h["x-edge-source"] == "local"


def test_other_earlier_turn_misses(openai_client):
    system = scoped()
    q = {"role": "user", "content": "And how big is it?"}
    first = [{"role": "user", "content": "Tell me about the Moon."}, {"role": "assistant", "content": "The Moon orbits Earth."}]
    other = [{"role": "user", "content": "Tell me about Jupiter."}, {"role": "assistant", "content": "Jupiter is a gas giant."}]
    h1, _ = ask(openai_client, [{"role": "system", "content": system}, *first, q])
    h2, _ = ask(openai_client, [{"role": "system", "content": system}, *other, q])
    h3, _ = ask(openai_client, [{"role": "system", "content": system}, *first, q])
    assert (h1["x-edge-source"], h2["x-edge-source"], h3["x-edge-source"]) == ("local", "local", "cache")


def test_other_model_name_misses(openai_client):
    msgs = [{"role": "system", "content": scoped()}, {"role": "user", "content": "Define entropy."}]
    ask(openai_client, msgs, model="gpt-4o")
    h, _ = ask(openai_client, msgs, model="claude-sonnet-4-5")
    assert h["x-edge-source"] == "local"


def test_tenant_header_scopes_the_cache(openai_client):
    msgs = [{"role": "system", "content": scoped()}, {"role": "user", "content": "What is a prime number?"}]
    ask(openai_client, msgs, extra_headers={"x-edge-tenant": "team-a"})
    h, _ = ask(openai_client, msgs, extra_headers={"x-edge-tenant": "team-b"})
    assert h["x-edge-source"] == "local"


def test_cache_header_skips_read_and_write(openai_client):
    msgs = [{"role": "system", "content": scoped()}, {"role": "user", "content": "What is photosynthesis?"}]
    h1, _ = ask(openai_client, msgs, extra_headers={"x-edge-cache": "no-write"})
    h2, _ = ask(openai_client, msgs)  # nothing was written, so this one is local and writes
    h3, _ = ask(openai_client, msgs, extra_headers={"x-edge-cache": "no-read"})
    h4, _ = ask(openai_client, msgs)
    assert [h["x-edge-source"] for h in (h1, h2, h3, h4)] == ["local", "local", "local", "cache"]


def test_longer_max_tokens_does_not_take_a_truncated_answer(openai_client):
    msgs = [{"role": "system", "content": scoped()}, {"role": "user", "content": "Explain how rain forms, in detail."}]
    h1, a1 = ask(openai_client, msgs, max_tokens=4)
    h2, _ = ask(openai_client, msgs, max_tokens=4)
    h3, a3 = ask(openai_client, msgs, max_tokens=12)
    assert (h1["x-edge-source"], h2["x-edge-source"], h3["x-edge-source"]) == ("local", "cache", "local")
    assert len(a3) > len(a1)


def test_streaming_hit_replays_the_answer(openai_client):
    msgs = [{"role": "system", "content": scoped()}, {"role": "user", "content": "What is gravity?"}]
    _, answer = ask(openai_client, msgs)
    raw = openai_client.chat.completions.with_raw_response.create(model="gpt-4o", messages=msgs, max_tokens=16, temperature=0, stream=True)
    assert raw.headers["x-edge-source"] == "cache"
    text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    assert text == answer


def test_streamed_hits_come_whole_in_every_dialect(server, openai_client):
    """A streamed hit's events are all known: they go out as one body (one write, no task group), and each
    dialect's SDK reads them as the stream it asked for."""
    import anthropic

    system = scoped()
    msgs = [{"role": "system", "content": system}, {"role": "user", "content": "What is a glacier?"}]
    _, answer = ask(openai_client, msgs)
    raw = openai_client.chat.completions.with_raw_response.create(model="gpt-4o", messages=msgs, max_tokens=16, temperature=0, stream=True)
    assert raw.headers["x-edge-source"] == "cache" and int(raw.headers["content-length"]) > 0
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices) == answer

    claude = anthropic.Anthropic(base_url=server.url, api_key="k")
    ask_claude = dict(model="claude-x", system=system, max_tokens=16,
                      messages=[{"role": "user", "content": "What is a moraine?"}])
    first = claude.messages.create(**ask_claude).content[0].text
    raw_stream = claude.messages.with_raw_response.create(**ask_claude, stream=True)  # type: ignore[call-overload]
    assert raw_stream.headers["x-edge-source"] == "cache" and int(raw_stream.headers["content-length"]) > 0
    events = list(raw_stream.parse())
    assert [e.type for e in events][0] == "message_start" and events[-1].type == "message_stop"
    assert "".join(e.delta.text for e in events if e.type == "content_block_delta") == first

    ask_responses = dict(model="gpt-4o", instructions=system, input="What is a fjord?", max_output_tokens=16, temperature=0)
    whole = openai_client.responses.create(**ask_responses).output_text
    raw_responses = openai_client.responses.with_raw_response.create(**ask_responses, stream=True)
    assert raw_responses.headers["x-edge-source"] == "cache" and int(raw_responses.headers["content-length"]) > 0
    streamed = list(raw_responses.parse())
    assert streamed[-1].type in ("response.completed", "response.incomplete")  # 16 tokens may cut it short
    assert "".join(e.delta for e in streamed if e.type == "response.output_text.delta") == whole


def test_cache_survives_restart(server, openai_client):
    msgs = [{"role": "system", "content": scoped()}, {"role": "user", "content": "Why is the ocean salty?"}]
    h1, a1 = ask(openai_client, msgs)
    assert h1["x-edge-source"] == "local"
    server.restart()
    h2, a2 = ask(openai_client, msgs)
    paraphrase = [msgs[0], {"role": "user", "content": "Why is the sea salty?"}]
    h3, a3 = ask(openai_client, paraphrase)  # the vector index was rebuilt from disk too
    assert (h2["x-edge-source"], h3["x-edge-source"]) == ("cache", "cache")
    assert a1 == a2 == a3


def test_threshold_header_sets_strictness_per_request(openai_client):
    system = scoped()
    ask(openai_client, [{"role": "system", "content": system}, {"role": "user", "content": "How do I reset my password?"}])
    para = [{"role": "system", "content": system}, {"role": "user", "content": "How can I reset my password?"}]  # cosine ~0.99
    strict, _ = ask(openai_client, para, extra_headers={"x-edge-threshold": "0.999", "x-edge-cache": "no-write"})
    default, _ = ask(openai_client, para, extra_headers={"x-edge-cache": "no-write"})
    assert (strict["x-edge-source"], default["x-edge-source"]) == ("local", "cache")


def test_bad_threshold_header_is_a_400(openai_client):
    import openai

    with pytest.raises(openai.BadRequestError):
        ask(openai_client, [{"role": "user", "content": "hi"}], extra_headers={"x-edge-threshold": "very"})
