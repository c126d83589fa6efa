"""`edge-ai eval agent`: the shipped task set reads into real requests of three dialects, and answers are
judged as the closing table counts them."""

from __future__ import annotations

from pathlib import Path

from edge_ai.eval_agent import judge, read_tasks, to_request
from edge_ai.request import Final, ToolCall

TASKS = read_tasks(Path(__file__).resolve().parents[1] / "scripts" / "eval" / "agent.jsonl")


def by_id(task_id: str):
    return next(t for t in TASKS if t.id == task_id)


def test_the_shipped_task_set_covers_three_dialects_calls_results_and_plain_questions():
    assert len(TASKS) >= 40 and {t.dialect for t in TASKS} == {"openai", "anthropic", "responses"}
    assert sum(t.needs_call for t in TASKS) >= 25 and sum(not t.needs_call for t in TASKS) >= 10
    reqs = [to_request(t) for t in TASKS]
    assert all(r.tools for r in reqs)  # every task offers its tools
    assert sum(r.messages[-1].role == "tool" for r in reqs) >= 8  # turns answering a tool result
    codex = to_request(by_id("cx-codeword"))
    assert [t.name for t in codex.tools] == ["exec_command"]  # web_search / namespace tools accepted, not offered


def answer(text: str = "", *calls: tuple[str, str]) -> Final:
    tcs = tuple(ToolCall(f"call_{i}", n, a) for i, (n, a) in enumerate(calls))
    return Final(text, "tool_calls" if tcs else "stop", 10, 5, tool_calls=tcs)


def test_answers_are_judged_right_wrong_text_or_invented():
    t = by_id("cc-fix-add")
    req = to_request(t)
    assert judge(t, answer("", ("Edit", '{"file_path": "calc.py", "old_string": "a - b", "new_string": "a + b"}')), req)[0] == "right"
    assert judge(t, answer("", ("Read", '{"file_path": "calc.py"}')), req)[0] == "right"  # reading first is right too
    assert judge(t, answer("", ("Edit", '{"file_path": "calc.py", "old_string": "a - b", "new_string": "a * b"}')), req)[0] == "wrong call"
    assert judge(t, answer("", ("Edit", '{"file_path": "calc.py"}')), req)[0] == "wrong call"  # required fields missing
    assert judge(t, answer("", ("Bash", '{"command": "sed -i s/-/+/ calc.py"}')), req)[0] == "wrong call"  # not an expected tool
    assert judge(t, answer("Change a - b to a + b."), req)[0] == "text"
    q = by_id("cc-q-france")
    assert judge(q, answer("Paris."), to_request(q)) == ("text", "Paris.")
    assert judge(q, answer("", ("Bash", '{"command": "cat capital.txt"}')), to_request(q))[0] == "invented call"
    # a text that misses the question's pattern is no call, and no answer either: counted apart
    from edge_ai.eval_agent import AgentResult, Judged

    off = judge(q, answer("To find it, run curl against an API."), to_request(q))
    assert off[0] == "text" and off[1].startswith("text does not match")
    result = AgentResult("m", [Judged(q, *judge(q, answer("Paris."), to_request(q)), 1.0), Judged(q, *off, 1.0)])
    assert [j.detail for j in result.texts_off_pattern] == [off[1]]
