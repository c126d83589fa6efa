"""Agents through the local path: tools offered with tool_choice auto, calls the model chooses, in all three
dialects (Chat Completions, Messages, Responses), streaming and not, and a tool result round trip.

The requests have the shape of Claude Code's and Codex CLI's (their tools' names, schemas and fields,
system blocks, developer messages), written here. The model is the packaged coding model with a tool-call
template; each task says plainly which tool to use, so what is tested is edge-ai's part: tools shown in
the template's format, the call read back and decoded under the tools' grammar, rendered in the dialect."""

from __future__ import annotations

import json
from typing import Iterator

import anthropic
import httpx
import jsonschema
import openai
import pytest

from tests.conftest import Server

NO_CACHE = {"x-edge-cache": "off"}


@pytest.fixture(scope="module")
def coder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("coder") / "cache", "--model", "qwen-coder-0.5b",
                 env={"EDGE_AI_N_SLOTS": "2", "EDGE_AI_N_CTX_SLOT": "4096"}).start()
    yield srv
    srv.stop()


def claude_code_tools() -> list[dict]:
    """Claude Code's kind of file tools: long descriptions, strict schemas."""
    def tool(name: str, what: str, props: dict, required: list[str]) -> dict:
        return {"name": name, "description": what + " Usage notes: use absolute or repository-relative paths. " * 3,
                "input_schema": {"type": "object", "$schema": "http://json-schema.org/draft-07/schema#", "properties": props,
                                 "required": required, "additionalProperties": False}}

    path = {"type": "string", "description": "The path of the file"}
    return [
        tool("Read", "Reads a file from the local filesystem.", {"file_path": path, "limit": {"type": "number"}}, ["file_path"]),
        tool("Write", "Writes a file to the local filesystem.", {"file_path": path, "content": {"type": "string"}}, ["file_path", "content"]),
        tool("Edit", "Performs exact string replacements in files.",
             {"file_path": path, "old_string": {"type": "string"}, "new_string": {"type": "string"}}, ["file_path", "old_string", "new_string"]),
        tool("Bash", "Executes a given bash command.", {"command": {"type": "string"}}, ["command"]),
    ]


def claude_code_body(task: str, stream: bool, messages: list | None = None) -> dict:
    return {
        "model": "claude-sonnet-4-5-20250929", "max_tokens": 32000, "stream": stream,
        "system": [{"type": "text", "text": "You are Claude Code, a CLI agent for software engineering tasks.",
                    "cache_control": {"type": "ephemeral"}},
                   {"type": "text", "text": "Use the tools to act on files. Be concise."}],
        "tools": claude_code_tools(),
        "metadata": {"user_id": "user_1"},
        "messages": messages or [{"role": "user", "content": [
            {"type": "text", "text": "<system-reminder>Working directory: /work/scratch</system-reminder>"},
            {"type": "text", "text": task}]}],
    }


def codex_body(task: str, stream: bool, extra_input: list | None = None) -> dict:
    """Codex CLI's kind of Responses request: developer and user messages of input_text parts, a shell
    function tool among others it cannot run here, reasoning and storage fields."""
    return {
        "model": "gpt-5-codex", "instructions": "You are a coding agent running in a terminal. Use exec_command to run shell commands.",
        "input": [
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Sandbox: workspace-write."}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": task}]},
            *(extra_input or []),
        ],
        "tools": [
            {"type": "function", "name": "exec_command", "description": "Runs a shell command and returns its output.",
             "strict": False, "parameters": {"type": "object", "properties": {
                 "cmd": {"type": "string", "description": "The shell command to run."},
                 "workdir": {"type": "string", "description": "Where to run it."}}, "required": ["cmd"], "additionalProperties": False}},
            {"type": "web_search", "external_web_access": False},
            {"type": "namespace", "name": "mcp", "tools": []},
        ],
        "tool_choice": "auto", "parallel_tool_calls": False, "reasoning": {"effort": "medium", "summary": "auto"},
        "store": False, "stream": stream, "include": ["reasoning.encrypted_content"], "prompt_cache_key": "session-1",
    }


READ_TASK = "Use the Read tool to read the file inventory.txt."
SHELL_TASK = "Use exec_command to run the shell command: cat inventory.txt"


def test_messages_a_claude_code_request_gets_a_tool_use_block(coder):
    client = anthropic.Anthropic(base_url=coder.url, api_key="k", max_retries=0, timeout=300)
    msg = client.messages.create(**claude_code_body(READ_TASK, stream=False), extra_headers=NO_CACHE)
    calls = [b for b in msg.content if b.type == "tool_use"]
    assert msg.stop_reason == "tool_use" and len(calls) >= 1
    assert calls[0].name == "Read" and calls[0].id.startswith("toolu_")
    schema = next(t["input_schema"] for t in claude_code_tools() if t["name"] == "Read")
    jsonschema.validate(calls[0].input, schema)  # valid by construction: decoded under the tool's grammar
    assert "inventory.txt" in calls[0].input["file_path"]


def test_messages_streaming_a_tool_use_block(coder):
    client = anthropic.Anthropic(base_url=coder.url, api_key="k", max_retries=0, timeout=300)
    body = claude_code_body(READ_TASK, stream=False)
    del body["stream"]
    with client.messages.stream(**body, extra_headers=NO_CACHE) as s:
        final = s.get_final_message()
    calls = [b for b in final.content if b.type == "tool_use"]
    assert final.stop_reason == "tool_use" and calls[0].name == "Read" and "inventory.txt" in calls[0].input["file_path"]


def test_messages_a_tool_result_round_trip(coder):
    """The agent loop's next turn: the call and its result in the history reach the model (in its template's
    tool format: tests/test_tool_calls.py) and the answer is well formed: text, or more calls of offered
    tools. Whether a small model then answers from the result is the agent eval's to measure."""
    client = anthropic.Anthropic(base_url=coder.url, api_key="k", max_retries=0, timeout=300)
    asked = {"role": "user", "content": "What is the code word written in inventory.txt? Read it with the Read tool."}
    called = {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_01", "name": "Read", "input": {"file_path": "inventory.txt"}}]}
    result = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01", "content": "code word: PELICAN " * 20}]}
    body = claude_code_body("", stream=False, messages=[asked, called, result])
    counted = {k: v for k, v in body.items() if k not in ("max_tokens", "stream", "metadata")}
    with_result = client.messages.count_tokens(**counted).input_tokens
    without = client.messages.count_tokens(**{**counted, "messages": [asked, called, {"role": "user", "content": "go on"}]}).input_tokens
    assert with_result > without + 60  # the tool's output is in the prompt
    msg = client.messages.create(**body, extra_headers=NO_CACHE)
    assert msg.stop_reason in ("end_turn", "tool_use", "max_tokens") and msg.content
    names = {t["name"] for t in claude_code_tools()}
    for block in msg.content:
        assert block.type == "text" or (block.type == "tool_use" and block.name in names)


def test_chat_completions_tool_calls_streaming_and_not(coder):
    client = openai.OpenAI(base_url=coder.url + "/v1", api_key="k", max_retries=0, timeout=300)
    tools = [{"type": "function", "function": {"name": t["name"], "description": t["description"], "parameters": t["input_schema"]}}
             for t in claude_code_tools()]
    ask = [{"role": "system", "content": "You are a coding agent. Use the tools to act on files."},
           {"role": "user", "content": READ_TASK}]
    done = client.chat.completions.create(model="gpt-4o", messages=ask, tools=tools, extra_headers=NO_CACHE)
    choice = done.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls[0].function.name == "Read"
    assert "inventory.txt" in json.loads(choice.message.tool_calls[0].function.arguments)["file_path"]
    chunks = list(client.chat.completions.create(model="gpt-4o", messages=ask, tools=tools, stream=True, extra_headers=NO_CACHE))
    streamed = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["tool_calls"] and streamed[0].function.name == "Read"
    assert json.loads(streamed[0].function.arguments) == json.loads(choice.message.tool_calls[0].function.arguments)


def test_responses_a_codex_request_gets_a_function_call(coder):
    client = openai.OpenAI(base_url=coder.url + "/v1", api_key="k", max_retries=0, timeout=300)
    resp = client.responses.create(**codex_body(SHELL_TASK, stream=False), extra_headers=NO_CACHE)
    calls = [item for item in resp.output if item.type == "function_call"]
    assert resp.status == "completed" and calls and calls[0].name == "exec_command"
    assert "inventory.txt" in json.loads(calls[0].arguments)["cmd"] and calls[0].call_id.startswith("call_")
    assert resp.usage.input_tokens > 0 and resp.usage.output_tokens > 0


def test_responses_streaming_events_of_a_function_call(coder):
    client = openai.OpenAI(base_url=coder.url + "/v1", api_key="k", max_retries=0, timeout=300)
    events = list(client.responses.create(**codex_body(SHELL_TASK, stream=True), extra_headers=NO_CACHE))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    for kind in ("response.output_item.added", "response.function_call_arguments.delta",
                 "response.function_call_arguments.done", "response.output_item.done"):
        assert kind in kinds
    assert [e.sequence_number for e in events] == list(range(len(events)))
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert "inventory.txt" in json.loads(done.arguments)["cmd"]
    final = events[-1].response
    assert [o.type for o in final.output][-1] == "function_call" and final.output[-1].arguments == done.arguments


def test_responses_a_function_call_output_round_trip(coder):
    client = openai.OpenAI(base_url=coder.url + "/v1", api_key="k", max_retries=0, timeout=300)
    turn = [{"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "opaque"},  # dropped, as another model's
            {"type": "function_call", "call_id": "call_1", "name": "exec_command", "arguments": '{"cmd": "cat inventory.txt"}'},
            {"type": "function_call_output", "call_id": "call_1", "output": "code word: PELICAN"}]
    body = codex_body("What is the code word written in inventory.txt?", stream=False, extra_input=turn)
    resp = client.responses.create(**body, extra_headers=NO_CACHE)
    assert resp.status in ("completed", "incomplete") and resp.output
    for item in resp.output:
        assert item.type == "message" or (item.type == "function_call" and item.name == "exec_command")


def test_responses_text_streams_and_is_served_from_the_cache_the_second_time(coder):
    client = openai.OpenAI(base_url=coder.url + "/v1", api_key="k", max_retries=0, timeout=300)
    ask = {"model": "gpt-5", "instructions": "Answer in one short sentence.", "input": "What colour is the sky on a clear day?",
           "max_output_tokens": 24}
    events = list(client.responses.create(**ask, stream=True))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    done = next(e for e in events if e.type == "response.output_text.done")
    assert deltas and done.text == deltas and events[-1].type in ("response.completed", "response.incomplete")
    raw = client.responses.with_raw_response.create(**ask)
    assert raw.headers["x-edge-source"] == "cache" and raw.parse().output_text == deltas


def test_responses_bad_input_is_a_400_in_openais_envelope(coder):
    for body in ({"model": "m", "input": "hi", "previous_response_id": "resp_1"},
                 {"model": "m", "input": [{"type": "message", "role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
                 {"model": "m", "input": [{"type": "message", "role": "assistant", "content": "I answered."}]},
                 {"model": "m", "input": "hi", "tool_choice": {"type": "function", "name": "nope"},
                  "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}]},
                 {"model": "m"}):
        r = httpx.post(coder.url + "/v1/responses", json=body, timeout=60)
        assert r.status_code == 400, r.text
        assert set(r.json()["error"]) >= {"message", "type", "param", "code"}


def test_the_responses_route_is_in_the_openapi_document(coder):
    doc = httpx.get(coder.url + "/openapi.json", timeout=30).json()
    assert "/v1/responses" in doc["paths"] and "post" in doc["paths"]["/v1/responses"]

