"""How offered tools are shown to a local model, and how the calls it writes are read back.

Shown. A chat template that knows tools (Qwen2.5's: it renders Jinja `tools`, assistant `tool_calls` and
`tool` turns) gets them in its own format, so the model sees what it was trained on. A template without a
tool format (SmolLM2, Gemma) gets the tools described in the system prompt, and earlier calls and results
written into the turns as text.

Read. Small models do not keep to their template's format: Qwen2.5-Coder asks for `<tool_call>` tags and
writes a fenced ```json block, or bare JSON, instead (llama-server, Ollama and vLLM return those as text).
A call is read in every form these models write: inside `<tool_call>` or `<tools>` tags, in a fenced block,
or as a bare JSON object or array that starts a line, whose objects have a `name` naming an offered tool
and `arguments` (or `parameters` / `input`) as an object or as JSON text. Text before the first call stays
text; several calls are several calls. JSON that names no offered tool is text.

Streaming. `CallReader` passes text through as it comes and holds back only from where a call might begin
(a tag, a fence, a `{` or `[` opening a line) until that stretch is known to be a call or not.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, replace
from typing import Any, AsyncIterator, Iterable, Sequence

from edge_ai.edit_blocks import FAILED, Workspace, edit_call, plain_output
from edge_ai.request import Final, Message, Request, Tool, ToolCall


def template_knows_tools(source: str) -> bool:
    """A Jinja chat template that renders offered tools and calls in its own format."""
    return "tools" in source and "tool_calls" in source


def openai_tools(tools: Iterable[Tool]) -> list[dict[str, Any]]:
    """Tools as chat templates take them (the OpenAI function shape, as Hugging Face passes them)."""
    return [{"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}
            for t in tools]


# After the results of a call, a user turn of its own: Qwen2.5-Coder-1.5B, shown the file it had read for
# Claude Code ("code word: PELICAN"), read it again, and again; with this turn after the results it answered
# "The code word written in inventory.txt is PELICAN." (the same words inside the results did not help).
# Not after a failed call: told "File has not been read yet", it read the file on its own, and with this
# turn refused ("I'm sorry, but I can't assist with that request").
# The turn restates the request (its latest user turn, harness notes taken out): told only "Fix it." before
# the file it had read, the model described the file; reminded of the request, it wrote the fixed code
# (which is then read as an edit, see edit_blocks.py): the agent eval's two fix-after-read tasks, text ->
# right calls, with no new call on the no-tool tasks that answer results (BENCHMARKS.md).
USE_RESULTS = "Use these results: answer the request from them, or make the next call it needs."
RESTATED_CHARS = 400


def template_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Turns as a tool-aware template takes them: assistant `tool_calls` with parsed arguments, `tool` turns,
    each run of results followed by the request and USE_RESULTS unless the client's own user turn follows or
    a call failed."""
    out: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        msg: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.tool_calls:
            msg["tool_calls"] = [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": _parsed(c.arguments)}}
                                 for c in m.tool_calls]
        if m.role == "tool":
            msg["tool_call_id"] = m.tool_call_id
            msg["content"] = plain_output(m.content)
        out.append(msg)
        after = messages[i + 1].role if i + 1 < len(messages) else None
        if m.role == "tool" and after not in ("tool", "user"):
            results = _run_of_results(messages, i)
            if not any(r.content.startswith(FAILED) for r in results):
                asked = request_before(messages, i)
                note = f"The request: {asked}\n{USE_RESULTS}" if asked else USE_RESULTS
                out.append({"role": "user", "content": note})
    return out


def request_before(messages: Sequence[Message], last: int, limit: int = RESTATED_CHARS) -> str:
    """The latest user turn before `last`, less an agent harness's notes, cut to `limit` characters."""
    for m in reversed(messages[:last]):
        if m.role == "user":
            text = NOT_ASKED.sub("", m.content).strip()
            return text if len(text) <= limit else text[:limit] + "…"
    return ""


def _run_of_results(messages: Sequence[Message], last: int) -> list[Message]:
    first = last
    while first > 0 and messages[first - 1].role == "tool":
        first -= 1
    return list(messages[first: last + 1])


def as_text_turns(messages: Sequence[Message]) -> list[Message]:
    """Turns for a template with no tool format: calls and results written out, results as user turns."""
    from edge_ai.request import merge_turns

    out: list[Message] = []
    for m in messages:
        if m.role == "tool":
            out.append(Message("user", f"[tool result]\n{m.content}"))
        elif m.tool_calls:
            calls = [json.dumps({"name": c.name, "arguments": _parsed(c.arguments)}, ensure_ascii=False) for c in m.tool_calls]
            out.append(Message(m.role, "\n".join(filter(None, [m.content, *calls]))))
        else:
            out.append(m)
    return merge_turns(out)


# Told with the tools in every tool template: small models otherwise "call" a tool for a question they can
# answer (Qwen2.5-Coder read a file to name the capital of France).
WHEN_TO_CALL = ("Call a tool only when the request needs one: to read or change files, run commands or get "
                "live data. Answer a question you can answer yourself directly, in text.")


def compact_tools(tools: Sequence[Tool]) -> tuple[Tool, ...]:
    """Tools as a small model can use them and two cores can prefill them: each its name, the first
    sentence of its description and the rules it states with "must" (Claude Code's Edit: "You must Read
    the file in this conversation before editing, or the call will fail"; without it Qwen2.5-Coder-1.5B
    edited unread files, failed and gave up), and its parameters (names, types, enums, what is required)
    without the per-field prose. Claude Code's 14-25 tools are 52 KB of descriptions; a 1.5B model lost in
    them calls the wrong one, and prefilling them cold takes minutes here."""
    return tuple(Tool(t.name, _gist(t.description), _bare_schema(t.parameters)) for t in tools)


COMPACT_SYSTEM_CHARS = 1500  # the start of an agent's system prompt: who it is and its first instructions


def compact_request(req: Request) -> Request:
    """An agent's request as a small model sees it in the compact form: tools compacted; the start of the
    system prompt (cut at a paragraph or line end) and, from the rest, the paragraphs that say where the
    agent works (its working directory: Claude Code states it near the end, and a model without it invents
    paths); the turns less the notes a harness puts into them (fitting the context keeps the latest). The
    cache scope is the full request's: only the prompt changes."""
    system = req.system
    if len(system) > COMPACT_SYSTEM_CHARS:
        head = system[:COMPACT_SYSTEM_CHARS]
        cut = max(head.rfind("\n\n"), head.rfind("\n"))
        cut = cut if cut > COMPACT_SYSTEM_CHARS // 2 else COMPACT_SYSTEM_CHARS
        facts = [p for p in re.split(r"\n\s*\n", system[cut:]) if _WHERE.search(p)]
        system = "\n\n".join([system[:cut].rstrip(), *(p.strip() for p in facts)])
    turns = tuple(replace(m, content=HARNESS_NOTE.sub("", m.content) or m.content) if m.role == "user" else m
                  for m in req.messages)
    asked = " ".join(m.content for m in turns if m.role == "user")
    tools = tuple(t for t in req.tools if not _ON_REQUEST_ONLY.search(t.description) or t.name in asked)
    return replace(req, tools=compact_tools(tools), system=system, messages=turns)


# A tool the agent says to use only on the user's explicit request, or only in a mode of its own (Codex's
# create_goal: "Create a goal only when explicitly requested by the user…"; request_user_input: "only
# available in Plan mode"): the 1.5B called create_goal for "Create a file greet.py" and request_user_input
# to ask what to add. Left out of the compact form unless the conversation names it.
_ON_REQUEST_ONLY = re.compile(r"\bonly when explicitly requested\b|\bonly available in \w+ mode\b", re.I)


# Notes an agent's harness puts into user turns (Claude Code: the date, reminders, skills; ~10 KB): the
# 1.5B coder, seeing a user turn open with one, answered by writing it out again in 4 of 6 turns tried.
HARNESS_NOTE = re.compile(r"<system-reminder>.*?</system-reminder>\s*", re.DOTALL)
# What a user turn carries that the user did not ask: those notes, and Codex's <environment_context> (its
# working directory, shell, date). Restated as "the request", the 1.5B answered by writing it out.
NOT_ASKED = re.compile(r"<(system-reminder|environment_context)>.*?</\1>\s*", re.DOTALL)

# A paragraph of an agent's system prompt that says where it works.
_WHERE = re.compile(r"working directory|\bcwd\b|<env>|environment_context", re.IGNORECASE)


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+\s*(?:[-*]\s+)?")
_RULE = re.compile(r"\bmust\b", re.IGNORECASE)


def _gist(text: str, limit: int = 200, rules: int = 3) -> str:
    """A tool description's first sentence and up to `rules` sentences that say what a call must do."""
    sentences = [" ".join(s.split()).lstrip("-* ") for s in _SENTENCE_END.split(text.strip())]
    sentences = [s for s in sentences if s]
    if not sentences:
        return ""
    kept = [sentences[0]] + [s for s in sentences[1:] if _RULE.search(s)][:rules]
    return " ".join(k if len(k) <= limit else k[: limit - 1].rstrip() + "…" for k in kept)


_SCHEMA_KEEP = ("type", "properties", "required", "additionalProperties", "items", "enum", "anyOf", "oneOf", "const", "default")


def _bare_schema(schema: Any) -> Any:
    """A JSON schema without descriptions, titles, examples and `$schema`: what a call needs to be valid."""
    if isinstance(schema, list):
        return [_bare_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key in _SCHEMA_KEEP:
        if key not in schema:
            continue
        value = schema[key]
        if key == "additionalProperties" and not isinstance(value, bool):
            continue
        if key == "properties" and isinstance(value, dict):
            out[key] = {name: _bare_schema(sub) for name, sub in value.items()}
        elif key in ("items", "anyOf", "oneOf"):
            out[key] = _bare_schema(value)
        else:
            out[key] = value
    return out


def _parsed(arguments: str) -> Any:
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments


# ---- the lazy grammar ----------------------------------------------------------------------------

# A call has begun when a JSON object opens with "name" at the start of the answer or of a line, or after a
# fence or a tool tag, alone or as an array's first item. From its `{` on the answer is decoded under the
# calls' grammar: the name is one of the offered tools and the arguments are valid for its schema, by
# construction. (llama.cpp searches the answer so far for the pattern and hands the grammar the text from
# the first group on.) Without the array's `[`, a call written `[{"name": …}]` was still read back, but
# decoded free: nothing held its arguments to the schema.
CALL_TRIGGERS = (r'(?:^|\n|```(?:json)?\s*|<tool_call>\s*|<tools>\s*)[ \t]*(?:\[\s*)?(\{\s*"name"\s*:\s*")',)


def lazy_call_grammar(call_gbnf: str) -> str:
    """The grammar of what follows a call's first `{`: one call (`call_gbnf`, whose root is one call) and its
    closing fence or tag; then the answer ends. One call an answer, as llama.cpp's server does unless a
    client asks for parallel calls: left to go on, Qwen2.5-Coder-1.5B answered Claude Code's "read
    inventory.txt" with five calls, each the last one's path a little more mangled, until max_tokens (64,000
    there). An agent loop asks again with the call's result, so nothing is lost but a turn."""
    body = re.sub(r"^root ::=", "edge-call ::=", call_gbnf, flags=re.MULTILINE)
    # the model's own layout: it writes calls indented over several lines as often as on one
    body = re.sub(r"^space ::= .*$", r"space ::= [ \\t\\n]{0,20}", body, flags=re.MULTILINE)
    return body + (
        '\nroot ::= edge-call edge-close'
        '\nedge-close ::= ([ \\t\\n]{0,4} "]")? "\\n"? ("```" | "</tool_call>" | "</tools>")?\n'
    )


# ---- reading calls back ------------------------------------------------------------------------

# Where a call may begin: a tag, a fence, or a JSON object / array opening a line.
_START = re.compile(r"<tool_call>|<tools>|```|(?:^|(?<=\n))[ \t]*[{\[]")
_TAGS = {"<tool_call>": "</tool_call>", "<tools>": "</tools>"}
_HELD_SUFFIXES = ("<tool_call>", "<tools>", "```")  # a delta may end inside one of these
_DECODER = json.JSONDecoder()


# A shell block as a call. Given a tool that runs shell commands (Codex's exec_command, Claude Code's
# Bash), Qwen2.5-Coder-1.5B often answers "list the files in src/" with a sentence and a ```bash block
# instead of a call: most of the agent eval's 6 text answers where a call was needed (BENCHMARKS.md;
# reading them as calls: 6 -> 4). An agent's user
# who gets a command to run wanted it run; so a shell block that follows at most a short lead-in is read
# as a call of that tool. A longer answer (an explanation with a command in it) stays text, and so does an
# answer to tool results that worked: there the model reports what was done and quotes the command (the
# eval's "greet.py was created" turn became a second `echo > greet.py`); after a failed call, it is the next
# attempt (policy.py decides which).
SHELL_FENCES = frozenset({"bash", "sh", "shell", "console", "zsh"})
SHELL_LEAD_CHARS = 240  # text before the block, at most: "To list the files in src/, run:"
SHELL_MAX_LINES = 8


@dataclass(frozen=True)
class ShellTool:
    name: str
    param: str  # the command's parameter
    argv: bool  # it takes an argument list (["bash", "-lc", command]) rather than a string


def shell_tool(tools: Sequence[Tool]) -> ShellTool | None:
    """The first tool that runs a shell command: a `command` or `cmd` parameter, a string or a list of
    strings, that no other required parameter goes with."""
    for t in tools:
        props = t.parameters.get("properties") if isinstance(t.parameters, dict) else None
        if not isinstance(props, dict):
            continue
        required = set(t.parameters.get("required") or ())
        for param in ("command", "cmd"):
            spec = props.get(param)
            if not isinstance(spec, dict) or required - {param}:
                continue
            if spec.get("type") == "string":
                return ShellTool(t.name, param, argv=False)
            if spec.get("type") == "array" and (spec.get("items") or {}).get("type") == "string":
                return ShellTool(t.name, param, argv=True)
    return None


def _shell_command(body: str) -> str | None:
    """The command a shell block holds (prompts `$ ` removed), or None when it is not one to run."""
    lines = [ln[2:] if ln.startswith("$ ") else ln for ln in body.strip().splitlines()]
    command = "\n".join(lines).strip()
    if not command or len(lines) > SHELL_MAX_LINES:
        return None
    return command


@dataclass
class _Span:
    start: int
    end: int | None  # None: not complete yet
    calls: list[ToolCall]


class CallReader:
    """Reads an answer as it streams: `feed` returns the text that is safe to show now, `finish` the rest
    of the text and the calls."""

    def __init__(self, tools: Sequence[Tool], shell_blocks: bool = True, workspace: Workspace | None = None) -> None:
        self.names = {t.name for t in tools}
        self.tools = tools
        self.shell = shell_tool(tools) if shell_blocks else None
        self.workspace = workspace or Workspace()  # the files a code block may stand for a call on
        # the read an answer with no call is replaced by (see Workspace.read_first): such an answer is held
        # back whole, as it is not shown unless it calls a tool
        self.blind_read = self.workspace.read_first(tools, new_call_id)
        self.text = ""
        self.shown = 0  # text[:shown] has been returned as text
        self.scanned = 0  # no call starts before this offset (from `shown` on)
        self.calls: list[ToolCall] = []
        self.calling = False  # a call was read: nothing after it is text
        self._calls_end: int | None = None  # where the last call read ends

    def feed(self, delta: str) -> str:
        self.text += delta
        if self.calling or self.blind_read is not None:
            return ""
        while True:
            span = self._next_span(final=False)
            if span is None:  # no call begins in what is here: show it, bar a possible start at its end
                safe = len(self.text) - _held_suffix(self.text)
                return self._show(max(safe, self.shown))
            if span.end is None:  # a call may be under way: show what comes before it, bar its blank lead-in
                return self._show(max(self.shown, len(self.text[: span.start].rstrip())))
            if span.calls:
                out = self._show(span.start).rstrip()
                self.calls += span.calls
                self.calling = True
                return out
            self.scanned = span.end  # complete and not a call: it is text

    def finish(self) -> tuple[str, list[ToolCall]]:
        """(the text not yet shown, the calls). Text after the first call is not part of the answer. An
        answer with no call, written without the file the request names, is replaced by a read of it."""
        if not self.calling:
            while True:
                span = self._next_span(final=True)
                if span is None:
                    if self.blind_read is not None:
                        self.shown = len(self.text)
                        return "", [self.blind_read]
                    return self._show(len(self.text)), []
                if span.calls:
                    rest = self._show(span.start).rstrip()
                    self.calls += span.calls
                    self.calling = True
                    break
                self.scanned = span.end or len(self.text)
        else:
            rest = ""
        tail_from = self._calls_end
        while tail_from is not None:  # further calls after the first one
            self.scanned = tail_from
            span = self._next_span(final=True, start=tail_from)
            if span is None:
                break
            self.calls += span.calls
            tail_from = span.end if span.end is not None else None
        return rest, self.calls

    def _show(self, upto: int) -> str:
        out = self.text[self.shown:upto]
        self.shown = max(self.shown, upto)
        self.scanned = max(self.scanned, self.shown)
        return out

    def _next_span(self, *, final: bool, start: int | None = None) -> _Span | None:
        """The next stretch from `scanned` that may hold a call: complete (with its calls, or none) or not."""
        text = self.text
        m = _START.search(text, start if start is not None else self.scanned)
        if m is None:
            return None
        begin = m.start()
        token = m.group(0).strip()
        if token in _TAGS:
            close = text.find(_TAGS[token], m.end())
            if close < 0 and not final:
                return _Span(begin, None, [])
            end = len(text) if close < 0 else close + len(_TAGS[token])
            calls = self._calls_in(text[m.end(): close if close >= 0 else len(text)])
        elif token == "```":
            nl = text.find("\n", m.end())
            close = text.find("```", nl + 1) if nl >= 0 else -1
            if close < 0 and not final:
                return _Span(begin, None, [])
            body_end = close if close >= 0 else len(text)
            end = len(text) if close < 0 else close + 3
            calls = self._calls_in(text[nl + 1: body_end]) if nl >= 0 else []
            if not calls and nl >= 0 and close >= 0:
                fence = text[m.end(): nl].strip().lower()
                created = self.workspace.create_call(fence, text[nl + 1: body_end], self.tools, new_call_id)
                calls = [created] if created is not None else self._shell_call(fence, text[:begin], text[nl + 1: body_end])
                edit = None if calls else edit_call(fence, text[nl + 1: body_end], self.workspace.shown, self.tools, new_call_id)
                calls = calls or ([edit] if edit is not None else [])
        else:  # a bare object or array opening a line
            at = m.end() - 1
            head = text[at + 1:].lstrip()
            if not head:
                if not final:
                    return _Span(begin, None, [])
                return _Span(begin, len(text), [])
            if head[0] != ('"' if text[at] == "{" else "{"):  # "{name} is…", "[1] See…": prose
                return _Span(begin, at + 1, [])
            close = _closing(text, at)
            if close is None and not final:
                return _Span(begin, None, [])  # still being written
            try:
                value, end = _DECODER.raw_decode(text, at)
            except ValueError:
                return _Span(begin, close or len(text), [])  # not JSON: text
            calls = self._calls_of(value)
        if calls:
            self._calls_end = end
        return _Span(begin, end, calls)

    def _calls_in(self, body: str) -> list[ToolCall]:
        """Calls in a tag's or fence's body: one JSON value, or several one after another (one a line)."""
        calls: list[ToolCall] = []
        at, body = 0, body.strip()
        while at < len(body):
            try:
                value, at = _DECODER.raw_decode(body, at)
            except ValueError:
                return calls
            calls += self._calls_of(value)
            while at < len(body) and body[at] in " \t\r\n,":
                at += 1
        return calls

    def _shell_call(self, fence: str, before: str, body: str) -> list[ToolCall]:
        """A shell block read as a call of the shell tool (see SHELL_FENCES), or none."""
        if self.shell is None or fence not in SHELL_FENCES or len(before.strip()) > SHELL_LEAD_CHARS or "```" in before:
            return []
        command = _shell_command(body)
        if command is None:
            return []
        value: Any = ["bash", "-lc", command] if self.shell.argv else command
        return [ToolCall(new_call_id(), self.shell.name, json.dumps({self.shell.param: value}, ensure_ascii=False))]

    def _calls_of(self, value: Any) -> list[ToolCall]:
        items = value if isinstance(value, list) else [value]
        calls = [c for c in (self._call(v) for v in items) if c is not None]
        return calls if len(calls) == len(items) else []  # all calls, or it is something else

    def _call(self, v: Any) -> ToolCall | None:
        if not isinstance(v, dict):
            return None
        if isinstance(v.get("function"), dict):  # {"type": "function", "function": {...}}
            v = v["function"]
        name = v.get("name")
        if name not in self.names:
            return None
        args = next((v[k] for k in ("arguments", "parameters", "input") if k in v), {})
        if isinstance(args, str):
            try:
                args = json.loads(args or "{}")
            except ValueError:
                return None
        if not isinstance(args, dict):
            return None
        return ToolCall(new_call_id(), name, json.dumps(args, ensure_ascii=False))


async def read_stream(events: AsyncIterator[str | Final], tools: Sequence[Tool],
                      shell_blocks: bool = True, workspace: Workspace | None = None) -> AsyncIterator[str | Final]:
    """An answer's events with the calls in it read: text deltas that are text, then a Final whose text is
    the text before the first call and whose `tool_calls` are the calls (finish_reason "tool_calls").
    `shell_blocks`: whether a shell block may be a call (see SHELL_FENCES); `workspace`: the files the
    conversation has shown or named, on which a code block may stand for a call (see edit_blocks.py)."""
    reader = CallReader(tools, shell_blocks, workspace)
    shown: list[str] = []
    async for event in events:
        if isinstance(event, Final):
            rest, calls = reader.finish()
            if rest:
                shown.append(rest)
                yield rest
            text = "".join(shown)
            if calls:
                yield replace(event, text=text, finish_reason="tool_calls", tool_calls=tuple(calls))
            else:
                yield replace(event, text=text)
            return
        out = reader.feed(event)
        if out:
            shown.append(out)
            yield out


def read_calls(text: str, tools: Sequence[Tool], shell_blocks: bool = True,
               workspace: Workspace | None = None) -> tuple[str, list[ToolCall]]:
    """A whole answer: (its text before the first call, the calls)."""
    reader = CallReader(tools, shell_blocks, workspace)
    shown = reader.feed(text)
    rest, calls = reader.finish()
    return shown + rest, calls


def new_call_id() -> str:
    return f"call_{secrets.token_hex(12)}"


def _closing(text: str, at: int) -> int | None:
    """The offset just past the bracket that closes the one at `at` (strings and escapes skipped), or None."""
    depth, in_string, escaped = 0, False, False
    for i in range(at, len(text)):
        c = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "{[":
            depth += 1
        elif c in "}]":
            depth -= 1
            if depth == 0:
                return i + 1
    return None


def _held_suffix(text: str) -> int:
    """How many characters at the end of `text` could lead into a call: a partial tag or fence, and the
    whitespace before it (a line may open with `{` next; text before a call is shown without it)."""
    partial = 0
    for n in range(min(len(text), 10), 0, -1):
        tail = text[-n:]
        if tail[0] in "<`" and any(s.startswith(tail) for s in _HELD_SUFFIXES):
            partial = n
            break
    rest = text[: len(text) - partial]
    return partial + len(rest) - len(rest.rstrip())
