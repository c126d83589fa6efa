"""A code block that revises a file the conversation has shown, read as the edit it describes.

Asked to fix a file it has just read, Qwen2.5-Coder-1.5B writes the fixed code in a block ("Here's the
corrected version: ```python …```") instead of calling the agent's edit tool: the agent eval's two "fix it
after reading it" tasks and Claude Code's "fix add() in calc.py" ended so, the file unchanged. Coding tools
built for models that do not call tools well (aider's whole-file and diff formats) take the edits out of
such blocks; edge-ai does the same for an agent: the block becomes a call of the edit tool the agent offers,
which the agent runs, checks and reports back like any call. A tool call is returned, never run here.

A block is an edit when it revises a file whose content an earlier call's result showed (a read tool's
`file_path`, or `cat FILE`): most of its lines are that file's lines, in order, and some differ. A block
that repeats the file as it is now is a quote; a block that elides lines ("# ... rest of the file") is not
an edit, since applying it would delete what it left out. The edit goes out as, in order of preference:
- the agent's string-replacement tool (Claude Code's `Edit`: path, old string, new string): the changed
  lines and, where they are not unique in the file, enough lines around them to be;
- its whole-file write tool (`Write`: path, content), when the file was shown whole;
- its shell tool (Codex's `exec_command`), as a here-document that writes the file, when shown whole.

An answer with no call to a request that names a file nothing has read yet ("fix add() in calc.py" answered
with "change it to: ```python def add…```"; "the code word in inventory.txt" answered with a guess) was
written blind: it is replaced by a call that reads that file (the agent's read tool, or `cat`), so that the
model, shown the file, answers from it or makes the change as an edit (see Workspace.read_first). The blind
text is dropped, not kept beside the call: in the history it taught the model to answer and call at once.

The same reading of the conversation tells a failed call from its result (`failed`: after one, a shell
block is the next attempt) and a call that only repeats one whose result is already there (`repeats`: the
answer policy asks again with calls ruled out).
"""

from __future__ import annotations

import difflib
import json
import re
import shlex
from dataclasses import dataclass, field
from typing import Any, Sequence

from edge_ai.request import Message, Tool, ToolCall

FAILED = "[error] "  # how a result the client marked as an error (Anthropic's is_error) begins

_PATH_KEYS = ("file_path", "path", "filename")
_OLD_KEYS = ("old_string", "old_str", "old_text")
_NEW_KEYS = ("new_string", "new_str", "new_text")
_CONTENT_KEYS = ("content", "file_text", "text")
_READ_EXTRA = {"offset", "limit", "start_line", "end_line", "line_start", "line_end"}  # a read of part of a file

# Claude Code's Read numbers each line: "     1\tdef add(a, b):" (or "     1→…")
_NUMBERED = re.compile(r"^\s*\d+(?:\t|→)")
# a block that stands for lines it does not show
_ELISION = re.compile(r"^\s*(?:\.\.\.|…)\s*$|^\s*(?:#|//|/\*|--).*(?:\.\.\.|…|\brest of\b|\bunchanged\b|\bexisting code\b|\bremaining\b)", re.I)
_COMMENT = re.compile(r"^\s*(?:#|//|/\*|\*|--)")
_TRAILING_COMMENT = re.compile(r"\s+(?:#|//).*$")
_DEMO = re.compile(r"^\s*(?:#|//)\s*(?:example|usage|test(?:ing)? it|try it)", re.I)  # "# Example usage:"
# a file's name in a request: "calc.py", "src/app.test.js" (a word with a dot and a short extension)
_FILE_NAME = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)*[\w-][\w.-]*\.[A-Za-z][A-Za-z0-9]{1,4})(?![\w/-])")
# Codex's exec_command result: "Chunk ID: 4a5160\nWall time: 0.0000 seconds\nProcess exited with code 0\n…Output:\n"
SHELL_HEAD = re.compile(r"^Chunk ID: .*?Process exited with code (-?\d+)\n.*?Output:\n", re.S)
# a result that reports a failure the client did not mark ("unable to process image: …", "write_stdin failed: …",
# "cat: x: No such file or directory")
_FAILURE = re.compile(r"(?:\S+ failed:|error\b|unable to|cannot |no such file|\S+: .*: no such file or directory)", re.I)
_TEXT_COMMANDS = frozenset({"cat", "head", "tail", "grep", "rg", "sed", "awk", "nl", "less", "more"})
_TEXT_TOOL = re.compile(r"read|grep|search", re.I)  # tools that show a file's text, or lines of it
_CREATE = re.compile(r"\bcreat\w*|\bnew\b", re.I)
_NOT_CONTENT = frozenset({"console", "output", "diff", "patch"})  # blocks that are no file's content
_NOT_CODE = frozenset({"", "json", "bash", "sh", "shell", "console", "zsh", "text", "diff", "patch", "output"})


@dataclass(frozen=True)
class ShownFile:
    content: str
    whole: bool  # the result showed all of it (not a range of lines)


@dataclass(frozen=True)
class Workspace:
    """What the conversation tells of the user's files. `shown`: each file a result has shown, as it is after
    the later calls that changed it (a read's result, its line numbers taken off, or `cat FILE`'s output;
    edited by later string replacements and writes; dropped when a shell command touched it later, its
    content no longer known). `unread`: the files the request names that no call has read or used."""
    shown: dict[str, ShownFile] = field(default_factory=dict)
    unread: tuple[str, ...] = ()
    creates: str | None = None  # the one file the request asks to create, not written yet

    def create_call(self, fence: str, body: str, tools: Sequence[Tool], new_id: Any) -> ToolCall | None:
        """A block answering a request to create one named file is that file's content, written by the
        agent's write tool (else a here-document through its shell tool). Asked for "a shell script hello.sh
        that prints hi", the 1.5B answered ```` ```bash\necho hi``` ````, which as a shell block ran `echo hi`
        and left no file (both agents, BENCHMARKS.md). A block that names the file (`python greet.py`,
        `chmod +x hello.sh`) is a command about it, and a transcript or a diff is no file's content."""
        if self.creates is None or fence.lower() in _NOT_CONTENT:
            return None
        name = self.creates.rsplit("/", 1)[-1]
        if name in body or not body.strip() or any(ln.startswith("$ ") for ln in body.split("\n")):
            return None
        return _write_call(self.creates, body if body.endswith("\n") else body + "\n", tools, new_id)

    def read_first(self, tools: Sequence[Tool], new_id: Any) -> ToolCall | None:
        """An answer with no call, to a request naming one file nothing has read: the call that replaces it, reading it
        (the agent's read tool, else `cat` through its shell tool). A model that has not seen a file
        guesses what it says (Claude Code's "the code word in inventory.txt": `"inventory_code"`) or
        proposes a change to code it has not seen; shown the file, it can answer or edit. Once tried, never
        again for that file, so a file that is not there costs one turn."""
        if len(self.unread) != 1:
            return None
        path = self.unread[0]
        reader = next((t for t in tools if _reads(t)), None)
        if reader is not None:
            key = next(k for k in _PATH_KEYS if k in _props(reader))
            return ToolCall(new_id(), reader.name, json.dumps({key: path}, ensure_ascii=False))
        from edge_ai.tool_calls import shell_tool  # tool_calls reads answers with this module

        shell = shell_tool(tools)
        if shell is None:
            return None
        command = f"cat {shlex.quote(path)}"
        value: Any = ["bash", "-lc", command] if shell.argv else command
        return ToolCall(new_id(), shell.name, json.dumps({shell.param: value}, ensure_ascii=False))


def workspace(messages: Sequence[Message]) -> Workspace:
    from edge_ai.tool_calls import NOT_ASKED  # tool_calls reads answers with this module

    results = {m.tool_call_id: m.content for m in messages if m.role == "tool"}
    files: dict[str, ShownFile] = {}
    tried: set[str] = set()  # files a read was tried on, whatever came of it
    used: list[str] = []  # the arguments of calls that worked and showed text (a search, `grep`, `head`)
    for m in messages:
        for call in m.tool_calls:
            args = _args(call.arguments)
            if args is None:
                continue
            result = results.get(call.id)
            path = next((args[k] for k in _PATH_KEYS if isinstance(args.get(k), str)), None)
            old = next((args[k] for k in _OLD_KEYS if isinstance(args.get(k), str)), None)
            new = next((args[k] for k in _NEW_KEYS if isinstance(args.get(k), str)), None)
            content = next((args[k] for k in _CONTENT_KEYS if isinstance(args.get(k), str)), None)
            command = next((args[k] for k in ("command", "cmd") if k in args), None)
            ok = result is not None and not failed(result)
            output = plain_output(result) if command is not None and ok else None  # a command's, when it worked
            words = _words(command) if command is not None else None
            if ok and (output is not None and words and words[0] in _TEXT_COMMANDS or command is None and _TEXT_TOOL.search(call.name)):
                used.append(call.arguments)
            if path is not None and old is not None and new is not None:  # a string replacement
                if ok and path in files and files[path].content.count(old) == 1:
                    files[path] = ShownFile(files[path].content.replace(old, new), files[path].whole)
                else:
                    files.pop(path, None)
            elif path is not None and content is not None:  # a whole-file write
                if ok:
                    files[path] = ShownFile(content, True)
            elif path is not None and set(args) - set(_PATH_KEYS) <= _READ_EXTRA:  # a read, or another look at a file
                if "read" in call.name.lower():
                    tried.add(path)
                if ok:
                    files[path] = ShownFile(_unnumbered(result or ""), not set(args) & _READ_EXTRA)
            elif command is not None:
                if words and len(words) == 2 and words[0] == "cat":  # `cat FILE`
                    tried.add(words[1])
                    if output is not None:
                        files[words[1]] = ShownFile(output, True)
                else:
                    text = " ".join(words) if words else str(command)
                    for known in [p for p in files if p in text]:
                        del files[known]
    unread: tuple[str, ...] = ()
    creates: str | None = None
    asked = NOT_ASKED.sub("", next((m.content for m in reversed(messages) if m.role == "user"), ""))
    names = dict.fromkeys(n.group(1) for n in _FILE_NAME.finditer(asked))
    known = {p.rsplit("/", 1)[-1] for p in [*files, *tried]}
    if asked and not _CREATE.search(asked):  # a file to create is not there to read
        unread = tuple(n for n in names if n.rsplit("/", 1)[-1] not in known and not any(n in u for u in used))
    elif len(names) == 1:  # a file to create: until a call has named it (written it, or tried to)
        name = next(iter(names))
        if name.rsplit("/", 1)[-1] not in known and not any(name.rsplit("/", 1)[-1] in c.arguments
                                                              for m in messages for c in m.tool_calls):
            creates = name
    return Workspace(files, unread, creates)


def names_file(text: str) -> bool:
    """The text names a file ("calc.py", "src/app.test.js")."""
    return _FILE_NAME.search(text) is not None


def _reads(tool: Tool) -> bool:
    """A read tool: "read" in its name, a file's path its only required parameter, nothing to write
    (Claude Code's Read; not Codex's view_image, which takes a path too and fails on text)."""
    props = _props(tool)
    if "read" not in tool.name.lower():
        return False
    path = next((k for k in _PATH_KEYS if k in props), None)
    writes = set(props) & {*_OLD_KEYS, *_NEW_KEYS, *_CONTENT_KEYS, "command", "cmd", "pattern"}
    return path is not None and not writes and set(tool.parameters.get("required") or ()) <= {path}


def failed(result: str) -> bool:
    """A result that says its call failed: marked so by the client (Anthropic's is_error), a shell command
    that exited non-zero (Codex's header), or one that says so ("unable to process image: …")."""
    if result.startswith(FAILED) or _FAILURE.match(result.strip()):
        return True
    head = SHELL_HEAD.match(result)
    return head is not None and head.group(1) != "0"


def repeats(calls: Sequence[ToolCall], messages: Sequence[Message]) -> bool:
    """Every call is one made before (the same tool, the same arguments) whose result, not a failure, is in
    the conversation."""
    results = {m.tool_call_id: m.content for m in messages if m.role == "tool"}
    done = {(c.name, json.dumps(_args(c.arguments), sort_keys=True)) for m in messages for c in m.tool_calls
            if c.id in results and not failed(results[c.id])}
    return bool(calls) and all((c.name, json.dumps(_args(c.arguments), sort_keys=True)) in done for c in calls)


def last_results_failed(messages: Sequence[Message]) -> bool:
    """The conversation ends in results of which one failed."""
    results = []
    for m in reversed(messages):
        if m.role != "tool":
            break
        results.append(m.content)
    return any(failed(r) for r in results)


def plain_output(result: str) -> str:
    """A result without Codex's header ("Chunk ID: 202a7b", the wall time, a token count; asked for the port
    a file sets, the 1.5B answered "202a7b"): the output, and the exit code when it is not 0."""
    head = SHELL_HEAD.match(result)
    if head is None:
        return result
    output = result[head.end():]
    return output if head.group(1) == "0" else f"(exit code {head.group(1)})\n{output}"


def edit_call(fence: str, body: str, files: dict[str, ShownFile], tools: Sequence[Tool], new_id: Any) -> ToolCall | None:
    """The call that makes the edit a code block describes, or None when the block is no edit."""
    if fence.lower() in _NOT_CODE or not files:
        return None
    block = body.rstrip("\n").split("\n")
    demo = next((k for k, ln in enumerate(block) if _DEMO.match(ln)), None)
    block = block[:demo] if demo is not None else block  # a usage example after the code is not the file's
    while block and not block[-1].strip():
        block.pop()
    code = sum(_meaningful(ln) for ln in block)
    best: tuple[float, str, list[str], list[Any]] | None = None
    for path, shown in files.items():
        lines = shown.content.rstrip("\n").split("\n")
        match = difflib.SequenceMatcher(None, lines, block, autojunk=False)
        same = sum(_meaningful(ln) for b in match.get_matching_blocks() for ln in block[b.b: b.b + b.size])
        if not code or same * 2 < code:  # most of the block's code is the file's
            continue
        if best is None or same / code > best[0]:
            best = (same / code, path, lines, match.get_opcodes())
    if best is None:
        return None
    _, path, lines, ops = best
    # The block is an excerpt: the file lines before its first shared line and after its last are not in
    # it (see _edge)
    ops = [op for op in (_edge(ops[0], lines, block, True), *ops[1:-1], _edge(ops[-1], lines, block, False))
           if op is not None] if len(ops) > 1 else ops
    changed = [op for op in ops if op[0] != "equal"]
    if not changed:
        return None  # the file as it is: a quote
    i1, i2, j1, j2 = changed[0][1], changed[-1][2], changed[0][3], changed[-1][4]
    if any(_ELISION.search(ln) for ln in block[j1:j2]):
        return None
    text = files[path].content
    before = after = 0  # lines of the file around the change, added one at a time until the old text is unique
    old = "\n".join(lines[i1:i2])
    while not (old.strip() and text.count(old) == 1):
        if i1 - before > 0 and (before <= after or i2 + after >= len(lines)):
            before += 1
        elif i2 + after < len(lines):
            after += 1
        else:
            return None
        old = "\n".join(lines[i1 - before: i2 + after])
    new = "\n".join(lines[i1 - before: i1] + block[j1:j2] + lines[i2: i2 + after])
    edited = lines[:i1] + block[j1:j2] + lines[i2:]
    return _as_call(path, old, new, edited, files[path], tools, new_id)


def _as_call(path: str, old: str, new: str, after: list[str], shown: ShownFile, tools: Sequence[Tool],
             new_id: Any) -> ToolCall | None:
    for t in tools:
        props = _props(t)
        p = next((k for k in _PATH_KEYS if k in props), None)
        o = next((k for k in _OLD_KEYS if k in props), None)
        n = next((k for k in _NEW_KEYS if k in props), None)
        if p and o and n:
            return ToolCall(new_id(), t.name, json.dumps({p: path, o: old, n: new}, ensure_ascii=False))
    if not shown.whole:
        return None
    return _write_call(path, "\n".join(after) + "\n", tools, new_id)


def _write_call(path: str, content: str, tools: Sequence[Tool], new_id: Any) -> ToolCall | None:
    """The whole file written: the agent's write tool (path and content), else a here-document through its
    shell tool."""
    for t in tools:
        props = _props(t)
        p = next((k for k in _PATH_KEYS if k in props), None)
        c = next((k for k in _CONTENT_KEYS if k in props), None)
        if p and c and not set(t.parameters.get("required") or ()) - {p, c}:
            return ToolCall(new_id(), t.name, json.dumps({p: path, c: content}, ensure_ascii=False))
    from edge_ai.tool_calls import shell_tool  # tool_calls reads edit blocks with this module

    shell = shell_tool(tools)
    if shell is None:
        return None
    end = "EOF"
    while end in content.split("\n"):
        end += "_"
    command = f"cat > {shlex.quote(path)} <<'{end}'\n{content}{end}"
    value: Any = ["bash", "-lc", command] if shell.argv else command
    return ToolCall(new_id(), shell.name, json.dumps({shell.param: value}, ensure_ascii=False))


def _edge(op: Any, lines: list[str], block: list[str], leading: bool) -> Any:
    """The block's first (or last) difference from the file, as far as it is part of the edit: file lines
    only on the file's side are lines the block does not show (no edit); a replacement pairs the block's
    lines one for one with the file lines next to the shared part, and is an edit where each pair is alike
    (alike but for a small change: else they are other code, or a label such as "# calc.py"); lines only the block has are an insertion."""
    tag, i1, i2, j1, j2 = op
    if tag == "equal":
        return op
    if tag == "delete" or all(not ln.strip() or _COMMENT.match(ln) for ln in block[j1:j2]):
        return None
    if tag == "replace":
        n = j2 - j1
        i1, i2 = (max(i1, i2 - n), i2) if leading else (i1, min(i2, i1 + n))
        theirs, ours = (lines[i1:i2], block[j2 - (i2 - i1): j2]) if leading else (lines[i1:i2], block[j1: j1 + (i2 - i1)])
        if any(_alike(a, b) < 0.8 for a, b in zip(theirs, ours)):
            return None
        # after the shared part, a file line less indented than the last shared one starts a construct the
        # block does not show ("def sub" after add's body, where the block went on with "def mul")
        anchor = next((ln for ln in reversed(lines[:i1]) if _meaningful(ln)), None)
        if not leading and anchor is not None and any(_indent(a) < _indent(anchor) for a in theirs if a.strip()):
            return None
    return (tag, i1, i2, j1, j2)


def _alike(a: str, b: str) -> float:
    """How alike two lines are, a comment the model added at the end aside ("return a + b  # fixed")."""
    return difflib.SequenceMatcher(None, _TRAILING_COMMENT.sub("", a), _TRAILING_COMMENT.sub("", b)).ratio()


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _meaningful(line: str) -> bool:
    """A line of code that says something: not blank, not a lone bracket, not a comment."""
    return len(line.strip()) > 2 and not _COMMENT.match(line)


def _props(tool: Tool) -> dict[str, Any]:
    props = tool.parameters.get("properties") if isinstance(tool.parameters, dict) else None
    return props if isinstance(props, dict) else {}


def _args(arguments: str) -> dict[str, Any] | None:
    try:
        value = json.loads(arguments or "{}")
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _words(command: Any) -> list[str] | None:
    if isinstance(command, list):  # ["bash", "-lc", "cat calc.py"]
        command = command[-1] if command else ""
    if not isinstance(command, str):
        return None
    try:
        return shlex.split(command)
    except ValueError:
        return None


def _unnumbered(result: str) -> str:
    lines = result.rstrip("\n").split("\n")
    if lines and all(_NUMBERED.match(ln) for ln in lines if ln.strip()):
        return "\n".join(_NUMBERED.sub("", ln, count=1) for ln in lines) + "\n"
    return result
