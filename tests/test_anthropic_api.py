"""The Anthropic Messages dialect through the official `anthropic` SDK against the real server."""

from __future__ import annotations

import json
import uuid

import anthropic
import httpx
import pytest


@pytest.fixture(scope="module")
def client(server):
    return anthropic.Anthropic(base_url=server.url, api_key="test-key", max_retries=0, timeout=120)


GREEDY = {"temperature": 0}  # the current SDK no longer has a temperature argument; older clients send it


# ~990 tokens: leaves the test server's 1024-token slots little room, so a large max_tokens ends fast
NEAR_FULL = "Summarise this. " + "word " * 980


def system() -> str:
    return f"You are terse. ({uuid.uuid4().hex[:8]})"


def test_message_non_streaming(client):
    raw = client.messages.with_raw_response.create(
        model="claude-sonnet-4-5", max_tokens=16, system=system(), messages=[{"role": "user", "content": "Say hello."}], extra_body=GREEDY
    )
    msg = raw.parse()
    assert raw.headers["x-edge-source"] == "local"
    assert msg.type == "message" and msg.role == "assistant" and msg.model == "claude-sonnet-4-5"
    assert msg.content[0].type == "text" and msg.content[0].text.strip()
    assert msg.stop_reason in ("end_turn", "max_tokens")
    assert msg.usage.input_tokens > 5 and 0 < msg.usage.output_tokens <= 16


def test_streaming_event_sequence(server):
    body = {"model": "claude-haiku-4-5", "max_tokens": 12, "stream": True, "system": system(), "messages": [{"role": "user", "content": "Count to five."}]}
    names = []
    with httpx.stream("POST", server.url + "/v1/messages", json=body, timeout=60) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("event: "):
                names.append(line[7:])
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[3:-3]) == {"content_block_delta"}


def test_sdk_stream_text_matches_non_streaming(client):
    kw = dict(model="claude-sonnet-4-5", max_tokens=16, extra_body=GREEDY, system=system(), messages=[{"role": "user", "content": "Name a fruit."}])
    client.messages.create(**kw, extra_headers={"x-edge-cache": "off"})  # leaves the prompt in a slot: the next two reuse it alike
    full = client.messages.create(**kw, extra_headers={"x-edge-cache": "off"}).content[0].text
    with client.messages.stream(**kw, extra_headers={"x-edge-cache": "off"}) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == full == final.content[0].text
    assert final.usage.output_tokens > 0


def test_what_claude_clients_send_is_accepted(client):
    msg = client.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=12,
        system=[{"type": "text", "text": system(), "cache_control": {"type": "ephemeral"}}],
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "What's the weather?"}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "tu_1", "name": "weather", "input": {"city": "Paris"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "tu_1", "content": "Sunny, 21C"}, {"type": "text", "text": "Summarise it."}]},
        ],
        tools=[{"name": "weather", "description": "Get weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
        tool_choice={"type": "auto"},
        metadata={"user_id": "u-1"},
        stop_sequences=["\n\n\n"],
        extra_body={"top_k": 40, "temperature": 0.5},
        extra_headers={"anthropic-beta": "prompt-caching-2024-07-31"},
        extra_query={"beta": "true"},
    )
    assert msg.content[0].text.strip()


def test_thinking_is_accepted_without_a_thinking_block(client):
    msg = client.messages.create(
        model="claude-sonnet-4-5", max_tokens=2000, thinking={"type": "enabled", "budget_tokens": 1024},
        system=system(), messages=[{"role": "user", "content": NEAR_FULL}],
    )
    assert [b.type for b in msg.content] == ["text"]


def test_max_tokens_is_a_ceiling_fitted_to_the_context(client):
    msg = client.messages.create(model="m", max_tokens=64000, system=system(), messages=[{"role": "user", "content": NEAR_FULL}])
    assert msg.stop_reason in ("end_turn", "max_tokens")
    assert msg.usage.input_tokens + msg.usage.output_tokens <= 1024


def test_assistant_prefill_continues_the_answer(client):
    msg = client.messages.create(
        model="m", max_tokens=8, extra_body=GREEDY, system=system(),
        messages=[{"role": "user", "content": "List colours."}, {"role": "assistant", "content": "Red, green,"}],
    )
    assert msg.content[0].text and not msg.content[0].text.startswith("Red, green,")


def test_stop_sequence_is_reported(client):
    kw = dict(model="m", max_tokens=30, extra_body=GREEDY, system=system(), messages=[{"role": "user", "content": "Count from 1 to 10 with commas."}])
    client.messages.create(**kw)  # leaves the prompt in a slot: the next two reuse it alike
    text = client.messages.create(**kw, extra_headers={"x-edge-cache": "no-read"}).content[0].text
    stop = text.strip()[1] if len(text.strip()) > 1 else text.strip()[0]
    msg = client.messages.create(**kw, stop_sequences=[stop], extra_headers={"x-edge-cache": "no-read"})
    assert msg.stop_reason == "stop_sequence" and msg.stop_sequence == stop


def test_count_tokens(client):
    n = client.messages.count_tokens(model="claude-sonnet-4-5", system="Be brief.", messages=[{"role": "user", "content": "Hello there"}])
    more = client.messages.count_tokens(model="claude-sonnet-4-5", system="Be brief.", messages=[{"role": "user", "content": "Hello there, how are you today?"}])
    assert 5 < n.input_tokens < more.input_tokens


def test_cache_is_shared_across_dialects(client, openai_client):
    sys_prompt = system()
    o = openai_client.chat.completions.with_raw_response.create(
        model="claude-sonnet-4-5", max_tokens=16, temperature=0,
        messages=[{"role": "system", "content": sys_prompt}, {"role": "user", "content": "What is an atom?"}],
    )
    a = client.messages.with_raw_response.create(
        model="claude-sonnet-4-5", max_tokens=16, extra_body=GREEDY, system=sys_prompt, messages=[{"role": "user", "content": "What is an atom?"}]
    )
    assert (o.headers["x-edge-source"], a.headers["x-edge-source"]) == ("local", "cache")
    assert a.parse().content[0].text == o.parse().choices[0].message.content


def test_offered_tools_are_part_of_the_scope(client):
    kw = dict(model="m", max_tokens=8, extra_body=GREEDY, system=system(), messages=[{"role": "user", "content": "Book a table."}])
    tool = {"name": "book", "description": "Book", "input_schema": {"type": "object"}}
    client.messages.create(**kw)
    raw = client.messages.with_raw_response.create(**kw, tools=[tool])
    assert raw.headers["x-edge-source"] == "local"


@pytest.mark.parametrize(
    "body,status,etype",
    [
        (b"{not json", 400, "invalid_request_error"),
        ({"model": "m", "messages": [{"role": "user", "content": "hi"}]}, 400, "invalid_request_error"),  # no max_tokens
        ({"model": "m", "max_tokens": 5, "messages": []}, 400, "invalid_request_error"),
        ({"model": "m", "max_tokens": 5, "messages": [{"role": "bot", "content": "hi"}]}, 400, "invalid_request_error"),
        ({"model": "m", "max_tokens": 5, "temperature": 1.5, "messages": [{"role": "user", "content": "hi"}]}, 400, "invalid_request_error"),
        ({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]}, 400, "invalid_request_error"),
        # a server tool (no input_schema) cannot be run locally, so it cannot be forced
        ({"model": "m", "max_tokens": 5, "tools": [{"type": "web_search_20250305", "name": "web_search"}],
          "tool_choice": {"type": "any"}, "messages": [{"role": "user", "content": "hi"}]}, 400, "invalid_request_error"),
        ({"model": "m", "max_tokens": 5, "tools": [{"name": "t", "input_schema": {}}], "tool_choice": {"type": "tool", "name": "u"},
          "messages": [{"role": "user", "content": "hi"}]}, 400, "invalid_request_error"),
    ],
)
def test_bad_input_gets_anthropic_errors(server, body, status, etype):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = httpx.post(server.url + "/v1/messages", content=content, headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == status, r.text
    data = r.json()
    assert data["type"] == "error" and data["error"]["type"] == etype and data["error"]["message"]


def test_a_prompt_beyond_the_context_is_cut_and_answered(client):
    raw = client.messages.with_raw_response.create(model="m", max_tokens=5, messages=[{"role": "user", "content": "word " * 3000}],
                                                   extra_headers={"x-edge-cache": "off"})
    assert int(raw.headers["x-edge-truncated"]) > 1500
    assert raw.parse().stop_reason in ("end_turn", "max_tokens")


def test_sdk_raises_typed_errors(client):
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(model="m", max_tokens=5, messages=[])
