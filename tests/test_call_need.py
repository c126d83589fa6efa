"""A call answering the user's own turn is checked: asked apart, does general knowledge answer the request?
(edge_ai/call_need.py). What the model judges is measured by the agent eval; here: which requests are
asked about, and what the answer policy does with the judgement (the model's answers are scripted)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from edge_ai.call_need import request_to_check, tool_share
from edge_ai.policy import AnswerPolicy
from edge_ai.request import CacheControl, Message, Request, Tool, ToolCall
from tests.conftest import Scripted

WEATHER = Tool("get_weather", "Get the current weather for a city.",
               {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
BASH = Tool("Bash", "Executes a given bash command.",
            {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]})


def test_only_the_users_own_turn_naming_no_file_is_checked():
    assert request_to_check([Message("user", "What is the capital of Italy?")]) == "What is the capital of Italy?"
    reminded = Message("user", "<system-reminder>Today is Sunday.</system-reminder>\nWho wrote Hamlet?")
    assert request_to_check([reminded]) == "Who wrote Hamlet?"  # the harness's notes are not the request
    assert request_to_check([Message("user", "What does README.md say?")]) is None  # about a file
    assert request_to_check([Message("user", "Fix add() in src/calc.py")]) is None
    call = Message("assistant", "", (ToolCall("t1", "get_weather", '{"city": "Paris"}'),))
    mid_task = [Message("user", "Is it raining in Paris?"), call, Message("tool", "rain", tool_call_id="t1")]
    assert request_to_check(mid_task) is None  # after results the agent is mid-task
    assert request_to_check([]) is None
    assert tool_share((0.3, 0.1)) == pytest.approx(0.75) and tool_share((0.0, 0.0)) == 0.0


def answer_with(monkeypatch, text: str, verdict: bool, check_calls: bool = True, again_text: str = "Rome."):
    asked: list[list[Message]] = []
    again_asked: list[bool] = []

    async def needless(model, messages):
        asked.append(list(messages))
        return verdict

    def plain():
        again_asked.append(True)
        return Scripted(again_text)

    monkeypatch.setattr("edge_ai.policy.needless", needless)
    req = Request(model="local", messages=(Message("user", "What is the capital of Italy?"),), tools=(WEATHER, BASH),
                  cache=CacheControl(read=False, write=False))
    policy = AnswerPolicy(cache=None, models=None, default_max_tokens=64)  # type: ignore[arg-type]
    model = SimpleNamespace()

    async def run():
        asked_plain = plain if check_calls else None  # as AnswerPolicy.answer passes it
        return [e async for e in policy._local(req, Scripted(text), None, None, asked_plain, model)]  # type: ignore[arg-type]

    *deltas, final = asyncio.run(run())
    return "".join(deltas), final, asked, again_asked


CALL = '{"name": "get_weather", "arguments": {"city": "Rome"}}'


def test_a_needless_call_is_asked_again_without_the_tools(monkeypatch):
    text, final, asked, again_asked = answer_with(monkeypatch, CALL, verdict=True)
    assert len(asked) == 1 and again_asked == [True]
    assert text == final.text == "Rome." and final.tool_calls == () and final.finish_reason == "stop"
    # a lead that announced the call has been streamed; the answer given whole is the one asked again
    text, final, _, _ = answer_with(monkeypatch, "I will look it up.\n" + CALL, verdict=True)
    assert text == "I will look it up.\n\nRome." and final.text == "Rome." and final.tool_calls == ()


def test_a_shell_block_in_the_answer_asked_again_is_text_not_a_call(monkeypatch):
    block = "You can check with:\n```bash\ncurl -s https://example.com/italy\n```\nThe capital is Rome."
    text, final, _, _ = answer_with(monkeypatch, "```bash\ncurl -s https://example.com/italy\n```", verdict=True,
                                    again_text=block)
    assert final.tool_calls == () and final.text == block and text == block


def test_a_needed_call_goes_out_and_no_check_is_made_when_checking_is_off(monkeypatch):
    _, final, asked, again_asked = answer_with(monkeypatch, CALL, verdict=False)
    assert len(asked) == 1 and again_asked == [] and [c.name for c in final.tool_calls] == ["get_weather"]
    _, final, asked, again_asked = answer_with(monkeypatch, CALL, verdict=True, check_calls=False)
    assert asked == [] and again_asked == [] and [c.name for c in final.tool_calls] == ["get_weather"]


def test_a_text_answer_is_not_checked(monkeypatch):
    text, final, asked, _ = answer_with(monkeypatch, "The capital of Italy is Rome.", verdict=True)
    assert asked == [] and final.text == text == "The capital of Italy is Rome."


def test_a_queue_too_full_to_ask_again_lets_the_call_go_out(monkeypatch):
    from edge_ai.errors import Overloaded

    async def needless(model, messages):
        return True

    def plain():
        raise Overloaded("all local model slots are busy and the queue is full", retry_after=1)

    monkeypatch.setattr("edge_ai.policy.needless", needless)
    req = Request(model="local", messages=(Message("user", "What is the capital of Italy?"),), tools=(WEATHER,),
                  cache=CacheControl(read=False, write=False))
    policy = AnswerPolicy(cache=None, models=None, default_max_tokens=64)  # type: ignore[arg-type]

    async def run():
        return [e async for e in policy._local(req, Scripted(CALL), None, None, plain, SimpleNamespace())]  # type: ignore[arg-type]

    *_, final = asyncio.run(run())
    assert [c.name for c in final.tool_calls] == ["get_weather"]
