"""`edge-ai eval agent`: does the local path let an agent act? A task set of requests in the three dialects,
each with what a right answer is, asked through the production path (dialect schema -> Request -> answer
policy, cache off), and each answer judged:

- a task that needs a tool: **right** (the expected tool, arguments valid for its schema and matching the
  task's patterns), **wrong call** (another tool, or arguments that do not fit), **text** (no call at all);
- a task that needs none: **text** (right when it matches the task's pattern, if it has one) or **invented
  call** (a call where none was needed).

The file is JSONL. A line {"toolsets": {NAME: [tools in a dialect's wire format], ...}} names tool sets that
tasks refer to; every other line is a task:
{"id", "dialect": "openai" | "anthropic" | "responses", "tools": NAME, "body": {the request without tools},
 "expect": {"call": NAME or [NAMES], "args": {field: regex}} or {"text": regex or null}}.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_ai.dialects.validate import parse
from edge_ai.request import CacheControl, Final, Request

VERDICTS = ("right", "wrong call", "text", "invented call")
MISMATCH = "text does not match: "  # a no-tool task answered in text that misses its pattern (a wrong answer)


@dataclass
class AgentTask:
    id: str
    dialect: str
    body: dict[str, Any]
    expect: dict[str, Any]

    @property
    def needs_call(self) -> bool:
        return "call" in self.expect


@dataclass
class Judged:
    task: AgentTask
    verdict: str  # one of VERDICTS
    detail: str
    seconds: float
    belief: float | None = None  # the model's highest probability of opening a call (Final.call_belief)


@dataclass
class AgentResult:
    label: str
    judged: list[Judged] = field(default_factory=list)
    seconds: float = 0.0

    def counts(self, needs_call: bool) -> Counter[str]:
        return Counter(j.verdict for j in self.judged if j.task.needs_call == needs_call)

    @property
    def texts_off_pattern(self) -> list[Judged]:
        """No-tool tasks answered in text that does not match the task's pattern: no call, but no answer either."""
        return [j for j in self.judged if not j.task.needs_call and j.verdict == "text" and j.detail.startswith(MISMATCH)]


def read_tasks(path: Path) -> list[AgentTask]:
    toolsets: dict[str, list[dict[str, Any]]] = {}
    tasks = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if "toolsets" in row:
                toolsets.update(row["toolsets"])
                continue
            body = dict(row["body"])
            if row.get("tools"):
                body["tools"] = toolsets[row["tools"]]
            dialect = row["dialect"]
            if dialect not in ("openai", "anthropic", "responses"):
                raise ValueError(f"unknown dialect {dialect!r}")
            tasks.append(AgentTask(str(row["id"]), dialect, body, row["expect"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{n}: not a task line: {exc}") from exc
    return tasks


def to_request(task: AgentTask) -> Request:
    from edge_ai.dialects import anthropic as an
    from edge_ai.dialects import openai as oa
    from edge_ai.dialects import responses as rs

    schema = {"openai": oa.ChatCompletionRequest, "anthropic": an.MessagesRequest, "responses": rs.ResponsesRequest}[task.dialect]
    return parse(schema, task.body).to_request(CacheControl(read=False, write=False), "eval")  # type: ignore[attr-defined]


def judge(task: AgentTask, final: Final, req: Request) -> tuple[str, str]:
    calls = final.tool_calls
    if not task.needs_call:
        if calls:
            return "invented call", f"{calls[0].name}({calls[0].arguments[:80]})"
        pattern = task.expect.get("text")
        ok = pattern is None or re.search(pattern, final.text, re.I) is not None
        return "text", ("" if ok else MISMATCH) + final.text[:100]
    if not calls:
        return "text", final.text[:100]
    want: dict[str, dict[str, str]] = task.expect["call"]
    call = calls[0]
    if call.name not in want:
        return "wrong call", f"{call.name} instead of {'/'.join(want)}"
    args = json.loads(call.arguments)
    tool = next((t for t in req.tools if t.name == call.name), None)
    problem = _schema_problem(args, tool.parameters) if tool else "tool not offered"
    if problem:
        return "wrong call", f"{call.name}: {problem}"
    for key, pattern in (want[call.name] or {}).items():
        if not re.search(pattern, str(args.get(key, "")), re.I | re.S):
            return "wrong call", f"{call.name}: {key}={str(args.get(key))[:60]!r} does not match {pattern!r}"
    return "right", f"{call.name}({call.arguments[:80]})"


def _schema_problem(args: dict[str, Any], schema: dict[str, Any]) -> str:
    """Required fields present and declared types right (what a tool runner checks first)."""
    props = schema.get("properties") or {}
    for key in schema.get("required") or []:
        if key not in args:
            return f"missing {key}"
    types = {"string": str, "number": (int, float), "integer": int, "boolean": bool, "array": list, "object": dict}
    for key, value in args.items():
        kind = (props.get(key) or {}).get("type")
        if isinstance(kind, str) and kind in types and not isinstance(value, types[kind]):
            return f"{key} is not a {kind}"
        if key not in props and schema.get("additionalProperties") is False:
            return f"unknown field {key}"
    return ""


async def eval_agent(policy: Any, tasks: list[AgentTask], label: str, concurrency: int = 4) -> AgentResult:
    from edge_ai.evaluate import answer_patiently

    slots = asyncio.Semaphore(concurrency)

    async def run(task: AgentTask) -> Judged:
        req = to_request(task)
        async with slots:
            t0 = time.perf_counter()
            final = await answer_patiently(policy, req)
            verdict, detail = judge(task, final, req)
            if final.call_belief is not None:
                detail = f"[call {final.call_belief:.2f}] {detail}"
            return Judged(task, verdict, detail, time.perf_counter() - t0, final.call_belief)

    t0 = time.perf_counter()
    judged = await asyncio.gather(*(run(t) for t in tasks))
    return AgentResult(label, list(judged), time.perf_counter() - t0)
