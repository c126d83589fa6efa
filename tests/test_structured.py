"""Structured output and forced tool calls: grammar-constrained decoding through the official SDKs, both
dialects, streaming and not. Valid by construction: every answer must parse and fit its schema."""

from __future__ import annotations

import json

import anthropic
import jsonschema
import pytest

CITY = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "country": {"type": "string"}, "population": {"type": "integer"}},
    "required": ["city", "country", "population"],
    "additionalProperties": False,
}
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
           "required": ["city", "unit"]}
SUM = {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"]}
OPENAI_TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "The weather in a city", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "add", "description": "Add two numbers", "parameters": SUM}},
]
ANTHROPIC_TOOLS = [
    {"name": "get_weather", "description": "The weather in a city", "input_schema": WEATHER},
    {"name": "add", "description": "Add two numbers", "input_schema": SUM},
]
ASK = [{"role": "user", "content": "What is the weather like in Paris today?"}]


@pytest.fixture(scope="module")
def claude(server):
    return anthropic.Anthropic(base_url=server.url, api_key="test-key", max_retries=0, timeout=120)


def test_json_schema_answer_is_valid_json_for_its_schema(openai_client):
    fmt = {"type": "json_schema", "json_schema": {"name": "city", "schema": CITY, "strict": True}}
    r = openai_client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Describe the capital of France."}],
        response_format=fmt, max_tokens=120, extra_headers={"x-edge-cache": "off"},
    )
    jsonschema.validate(json.loads(r.choices[0].message.content), CITY)
    assert r.choices[0].finish_reason == "stop"


def test_json_object_answer_streams_as_text_that_parses(openai_client):
    stream = openai_client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Give me a JSON object with a name and an age."}],
        response_format={"type": "json_object"}, max_tokens=120, stream=True, extra_headers={"x-edge-cache": "off"},
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert isinstance(json.loads(text), dict)


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "add"}}])
def test_openai_forced_tool_call(openai_client, choice):
    r = openai_client.chat.completions.create(model="gpt-4o", messages=ASK, tools=OPENAI_TOOLS, tool_choice=choice, max_tokens=80)
    msg = r.choices[0]
    assert msg.finish_reason == "tool_calls" and msg.message.content is None
    call = msg.message.tool_calls[0]
    schemas = {"get_weather": WEATHER, "add": SUM}
    if isinstance(choice, dict):
        assert call.function.name == "add"
    jsonschema.validate(json.loads(call.function.arguments), schemas[call.function.name])
    assert call.id.startswith("call_") and call.type == "function"


def test_openai_forced_tool_call_streaming(openai_client):
    stream = openai_client.chat.completions.create(
        model="gpt-4o", messages=ASK, tools=OPENAI_TOOLS, max_tokens=80, stream=True,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    names, args, finish = [], "", None
    for chunk in stream:
        for c in chunk.choices:
            for tc in c.delta.tool_calls or []:
                names += [tc.function.name] if tc.function.name else []
                args += tc.function.arguments or ""
            finish = c.finish_reason or finish
    assert names == ["get_weather"] and finish == "tool_calls"
    jsonschema.validate(json.loads(args), WEATHER)


def test_anthropic_forced_tool_use(claude):
    msg = claude.messages.create(model="claude-sonnet-4-5", max_tokens=80, messages=ASK, tools=ANTHROPIC_TOOLS,
                                 tool_choice={"type": "tool", "name": "get_weather"})
    assert msg.stop_reason == "tool_use"
    (block,) = msg.content
    assert block.type == "tool_use" and block.name == "get_weather" and block.id.startswith("toolu_")
    jsonschema.validate(block.input, WEATHER)


def test_anthropic_forced_tool_use_streaming(claude):
    with claude.messages.stream(model="claude-sonnet-4-5", max_tokens=80, messages=ASK, tools=ANTHROPIC_TOOLS,
                                tool_choice={"type": "any"}) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    block = final.content[0]
    assert block.type == "tool_use" and block.name in ("get_weather", "add")
    jsonschema.validate(block.input, WEATHER if block.name == "get_weather" else SUM)


def test_a_tool_result_turn_is_answered(claude):
    """The agent loop's next step: the tool ran, its result comes back, the model answers in text."""
    msgs = ASK + [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris", "unit": "celsius"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "Sunny, 21 degrees"}]},
    ]
    msg = claude.messages.create(model="claude-sonnet-4-5", max_tokens=40, messages=msgs, tools=ANTHROPIC_TOOLS)
    assert msg.content[0].type == "text" and msg.content[0].text.strip()


def test_a_tool_choice_naming_no_offered_tool_is_a_400(openai_client, claude):
    import openai

    with pytest.raises(openai.BadRequestError):
        openai_client.chat.completions.create(model="gpt-4o", messages=ASK, tools=OPENAI_TOOLS,
                                              tool_choice={"type": "function", "function": {"name": "nope"}})
    with pytest.raises(anthropic.BadRequestError):
        claude.messages.create(model="claude-sonnet-4-5", max_tokens=20, messages=ASK, tools=ANTHROPIC_TOOLS,
                               tool_choice={"type": "tool", "name": "nope"})
