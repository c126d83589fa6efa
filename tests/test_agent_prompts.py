"""Agent-sized prompts: a request longer than a slot's context is cut to fit and answered, never refused
for its length, and a resent long prefix is not computed again."""

from __future__ import annotations

import json
import secrets

import httpx
import pytest

from edge_ai.dialects.anthropic import MessagesRequest
from edge_ai.request import CacheControl, Message, Request


def claude_code_body(question: str, n_tools: int = 16) -> dict:
    """The shape of a Claude Code request (2.1): a billing block whose value changes each request, system
    blocks with cache_control (tens of KB), many tools with long descriptions and schemas, a
    system-reminder block before the prompt, a system-role message after it, metadata, adaptive
    thinking, a 32k ceiling."""
    rules = " ".join(f"Rule {i}: when the user asks for a change, read the relevant files first, keep edits minimal "
                     f"and explain what you did in one short paragraph." for i in range(120))
    tools = [{
        "name": f"Tool{i}",
        "description": f"Tool number {i}. " + "Use it for working with files in the repository, carefully. " * 20,
        "input_schema": {"type": "object", "$schema": "http://json-schema.org/draft-07/schema#",
                         "properties": {"path": {"type": "string", "description": "an absolute path " * 5},
                                        "limit": {"type": "number"}}, "required": ["path"], "additionalProperties": False},
    } for i in range(n_tools)]
    return {
        "model": "claude-sonnet-4-5-20250929",
        "max_tokens": 32000,
        "stream": True,
        "temperature": 1,
        "metadata": {"user_id": "user_abc_account__session_123"},
        "thinking": {"type": "adaptive"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "output_config": {"effort": "high"},
        "system": [
            {"type": "text", "text": f"x-anthropic-billing-header: cc_version=2.1.197.{secrets.token_hex(2)[:3]}; cc_entrypoint=sdk-cli;"},
            {"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "You are an interactive CLI tool that helps users with software engineering tasks. " + rules,
             "cache_control": {"type": "ephemeral"}},
        ],
        "tools": tools,
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "<system-reminder>As you answer the user's questions, you can use the following context.</system-reminder>"},
            {"type": "text", "text": question, "cache_control": {"type": "ephemeral"}},
        ]}, {"role": "system", "content": "Available agent types for the Agent tool: general, explore."}],
    }


HEADERS = {"anthropic-version": "2023-06-01", "x-api-key": "test-key", "x-edge-cache": "off",
           "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14,fine-grained-tool-streaming-2025-05-14"}


def stream_events(server, body: dict) -> tuple[httpx.Headers, list[tuple[str, dict]]]:
    events = []
    with httpx.stream("POST", server.url + "/v1/messages?beta=true", json=body, headers=HEADERS, timeout=180) as r:
        assert r.status_code == 200, r.read()
        name = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[6:])))
        return r.headers, events


def test_a_claude_code_request_gets_a_complete_stream(server):
    body = claude_code_body("Say hi in one short sentence.")
    assert len(json.dumps(body)) > 40_000
    headers, events = stream_events(server, body)
    names = [n for n, _ in events]
    assert names[0] == "message_start" and names[-1] == "message_stop"
    assert names.count("message_delta") == 1 and names.count("content_block_stop") == 1
    text = "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta")
    assert text.strip()
    # the test server's slots hold 1,024 tokens: most of the system prompt had to go, and it says so
    assert int(headers["x-edge-truncated"]) > 1000
    stop = next(d for n, d in events if n == "message_delta")
    assert stop["delta"]["stop_reason"] in ("end_turn", "max_tokens")


def test_a_resent_agent_prefix_is_reused(server):
    def reused() -> int:
        return sum(m["prompt_tokens_reused"] for m in server.status()["models"].values())

    stream_events(server, claude_code_body("What does git status do?"))
    before = reused()
    stream_events(server, claude_code_body("What does git log do?"))
    assert reused() - before > 500  # the (cut) system prompt came from the first request's KV


def test_claude_codes_billing_block_is_not_prompt_and_system_messages_are_instructions():
    a, b = (MessagesRequest.model_validate(claude_code_body("What does git status do?")) for _ in range(2))
    assert a.system[0].text != b.system[0].text  # the billing value changed between the two requests
    ra, rb = (r.to_request(CacheControl(), "") for r in (a, b))
    assert "billing" not in ra.system and ra.scope_key() == rb.scope_key()  # one prompt, one cache scope
    assert ra.system.endswith("Available agent types for the Agent tool: general, explore.")
    assert [m.role for m in ra.messages] == ["user"] and ra.query.endswith("What does git status do?")


def test_an_openai_history_longer_than_the_context_keeps_the_system_start_and_the_latest_turns(openai_client):
    turns = []
    for i in range(30):
        turns += [{"role": "user", "content": f"Question {i}: " + "tell me more about it " * 12},
                  {"role": "assistant", "content": f"Answer {i}: " + "here is more about it " * 12}]
    msgs = [{"role": "system", "content": "You are terse."}, *turns, {"role": "user", "content": "What is 2 plus 2?"}]
    raw = openai_client.chat.completions.with_raw_response.create(model="gpt-4o", messages=msgs, max_tokens=16,
                                                                  extra_headers={"x-edge-cache": "off"})
    assert int(raw.headers["x-edge-truncated"]) > 0
    assert raw.parse().choices[0].message.content.strip()


def test_max_tokens_leaving_no_room_for_a_prompt_is_still_a_400(openai_client):
    import openai

    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        openai_client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}], max_tokens=10_000)


@pytest.fixture(scope="module")
def model():
    from edge_ai.config import Settings
    from edge_ai.local_models import LocalModels

    models = LocalModels(Settings(n_slots=1, n_ctx_slot=512))
    yield models.default
    models.close()


def test_fit_drops_whole_middle_turns_first(model):
    history = []
    for i in range(12):
        history += [Message("user", f"Old question {i}: " + "words " * 30), Message("assistant", f"Old answer {i}: " + "words " * 30)]
    req = Request(model="m", system="SYSTEM START. Be brief.", messages=(*history, Message("user", "LATEST QUESTION")))
    prep = model.prepare(req, 64)
    text = model.engine.detokenize(prep.tokens)
    assert prep.dropped > 0 and len(prep.tokens) + prep.params.max_tokens <= 512
    assert "SYSTEM START. Be brief." in text and "LATEST QUESTION" in text  # the system prompt whole, the question
    assert "Old question 11" in text and "Old question 0:" not in text  # the latest turns kept, the oldest dropped
    assert text.index("Old question") < text.index("Old answer")  # whole pairs: still a user turn first


def test_fit_cuts_the_end_of_a_long_system_prompt_and_the_middle_of_a_long_question(model):
    req = Request(model="m", system="KEEP THIS START. " + "filler " * 900, messages=(Message("user", "Q? " * 5),))
    prep = model.prepare(req, 64)
    assert "KEEP THIS START." in model.engine.detokenize(prep.tokens) and len(prep.tokens) <= 512 - 64
    huge = Request(model="m", messages=(Message("user", "BEGIN " + "middle " * 2000 + " END"),))
    text = model.engine.detokenize(model.prepare(huge, 64).tokens)
    assert "BEGIN" in text and "END" in text and "[...]" in text


def test_an_agent_prefix_survives_a_restart(tmp_path):
    from tests.conftest import Server

    srv = Server(tmp_path / "cache").start()

    def reused() -> int:
        return sum(m["prompt_tokens_reused"] for m in srv.status()["models"].values())

    stream_events(srv, claude_code_body("What does git status do?"))
    srv.restart()  # a clean shutdown saves the slots' longest prefixes with their KV
    assert list((tmp_path / "cache" / "prefixes").glob("*/prefix-0.bin"))
    stream_events(srv, claude_code_body("What does git log do?"))
    assert reused() > 500  # the first request after the restart found the system prompt computed
    srv.stop()


@pytest.fixture(scope="module")
def coder():
    """A model whose template has a tool format: only such a model is offered tools."""
    from edge_ai.config import Settings
    from edge_ai.local_models import LocalModels

    models = LocalModels(Settings(model="qwen-coder-0.5b", n_slots=1, n_ctx_slot=1024))
    assert models.default.knows_tools
    yield models.default
    models.close()


def test_a_long_agent_request_is_shown_compact(coder):
    """Tools as name, first sentence and parameters, the system prompt's start: before anything else is cut."""
    from edge_ai.request import Tool

    model = coder

    tools = tuple(Tool(f"Tool{i}", f"Does thing {i}. " + "Long usage notes about paths and caveats. " * 30,
                       {"type": "object", "properties": {"path": {"type": "string", "description": "the path " * 20}},
                        "required": ["path"]}) for i in range(6))
    req = Request(model="m", system="AGENT START. " + "More agent instructions. " * 400, tools=tools,
                  messages=(Message("user", "Read notes.txt"),))
    prep = model.prepare(req, 64)
    text = model.engine.detokenize(prep.tokens)
    assert "AGENT START." in text and "Read notes.txt" in text
    assert all(f"Tool{i}" in text for i in range(6)) and "Does thing 5." in text  # every tool, by name and first sentence
    assert "Long usage notes" not in text and "the path the path" not in text  # not their prose
    assert prep.dropped > 0 and len(prep.tokens) + prep.params.max_tokens <= 1024
    assert prep.params.grammar and prep.params.grammar_triggers  # a call the model begins is still constrained


def test_a_cut_keeps_the_system_prompts_start_before_the_last_tools(coder):
    """More tools than the context holds: the last tools go, while the start of the system prompt (who the
    agent is) stays."""
    from edge_ai.request import Tool

    tools = tuple(Tool(f"Tool{i}", f"Does thing {i}.", {"type": "object", "properties": {"path": {"type": "string"}}})
                  for i in range(40))
    req = Request(model="m", system="AGENT START. " + "More agent instructions. " * 400, tools=tools,
                  messages=(Message("user", "Read notes.txt"),))
    prep = coder.prepare(req, 64)
    text = coder.engine.detokenize(prep.tokens)
    assert "AGENT START." in text and "Read notes.txt" in text and "Tool0" in text
    assert "Tool39" not in text and len(prep.tokens) + prep.params.max_tokens <= 1024


def test_a_call_begins_the_answer_only_when_the_model_believes_in_it_enough(coder):
    """With tools offered, the answer carries the model's probability of opening with a call; asked for
    more belief than that, the answer does not open with one; asked for less, nothing changes."""
    import asyncio
    from dataclasses import replace

    from edge_ai.request import Tool

    tools = (Tool("Read", "Reads a file.", {"type": "object", "properties": {"file_path": {"type": "string"}},
                                            "required": ["file_path"]}),)
    req = Request(model="m", tools=tools, messages=(Message("user", "Read the file notes.txt"),), temperature=0.0)
    prep = coder.prepare(req, 24)

    def answer(call_least: float, tokens=prep.tokens, params=prep.params):
        async def go():
            return await coder.engine.submit(tokens, replace(params, call_least=call_least)).result()
        return asyncio.run(go())

    answer(0.0)  # the prompt's KV in the slot: the answers below all reuse it, so their logits are alike
    free = answer(0.0)
    assert free.call_belief is not None and 0.0 < free.call_belief <= 1.0
    held = answer(free.call_belief + 0.02)
    assert held.call_belief == pytest.approx(free.call_belief, abs=0.01)
    assert not held.text.lstrip(" \t\n").startswith(("{", "[", "```", "<tool_call>", "<tools>"))
    assert answer(free.call_belief / 2).text == free.text
    # a request without tools is not weighed
    plain = coder.prepare(Request(model="m", messages=(Message("user", "Say hi."),), temperature=0.0), 8)
    assert answer(0.5, plain.tokens, plain.params).call_belief is None
