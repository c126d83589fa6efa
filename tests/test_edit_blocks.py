"""A code block that revises a file the conversation has shown is read as the edit it describes
(edge_ai/edit_blocks.py), without a server."""

from __future__ import annotations

import json
import shlex
import subprocess

import pytest

from edge_ai.edit_blocks import workspace
from edge_ai.request import Message, Tool, ToolCall
from edge_ai.tool_calls import CallReader, read_calls

READ = Tool("Read", "", {"type": "object", "properties": {"file_path": {"type": "string"}, "offset": {"type": "number"},
                                                          "limit": {"type": "number"}}, "required": ["file_path"]})
EDIT = Tool("Edit", "", {"type": "object", "properties": {"file_path": {"type": "string"}, "old_string": {"type": "string"},
                                                          "new_string": {"type": "string"}},
                         "required": ["file_path", "old_string", "new_string"]})
WRITE = Tool("Write", "", {"type": "object", "properties": {"file_path": {"type": "string"}, "content": {"type": "string"}},
                           "required": ["file_path", "content"]})
EXEC = Tool("exec_command", "", {"type": "object", "properties": {"cmd": {"type": "string"}, "workdir": {"type": "string"}},
                                 "required": ["cmd"]})

CALC = "import os\n\ndef add(a, b):\n    return a - b\n\ndef sub(a, b):\n    return a - b\n"
NUMBERED = "".join(f"{n:>6}\t{line}\n" for n, line in enumerate(CALC.splitlines(), 1))


def read_turns(result: str = NUMBERED, args: str = '{"file_path": "calc.py"}', tool: str = "Read") -> list[Message]:
    return [Message("user", "In calc.py add() subtracts. Fix it."),
            Message("assistant", "", (ToolCall("t1", tool, args),)),
            Message("tool", result, tool_call_id="t1")]


def edit_of(answer: str, tools: list[Tool], turns: list[Message]) -> tuple[str, list[tuple[str, dict]]]:
    shown, calls = read_calls(answer, tools, shell_blocks=False, workspace=workspace(turns))
    return shown, [(c.name, json.loads(c.arguments)) for c in calls]


FIX = "To fix it, change the operator:\n\n```python\ndef add(a, b):\n    return a + b  # was a - b\n```\n\nSave the file."


def test_a_file_read_is_known_without_its_line_numbers_and_as_later_calls_changed_it():
    assert workspace(read_turns()).shown["calc.py"].content == CALC
    turns = read_turns() + [
        Message("assistant", "", (ToolCall("t2", "Edit", json.dumps({"file_path": "calc.py", "old_string": "import os\n",
                                                                     "new_string": ""})),)),
        Message("tool", "The file calc.py has been updated.", tool_call_id="t2")]
    assert workspace(turns).shown["calc.py"].content == CALC.replace("import os\n", "")
    # a shell command that touched it: its content is no longer known
    turns += [Message("assistant", "", (ToolCall("t3", "exec_command", '{"cmd": "sed -i s/a/b/ calc.py"}'),)),
              Message("tool", "", tool_call_id="t3")]
    assert "calc.py" not in workspace(turns).shown
    # a failed read shows nothing; `cat FILE` shows the file
    assert workspace(read_turns("[error] File does not exist.")).shown == {}
    assert workspace(read_turns(CALC, '{"cmd": "cat calc.py"}', "exec_command")).shown["calc.py"].content == CALC


def test_a_block_revising_a_file_read_earlier_is_an_edit_of_the_changed_lines():
    shown, calls = edit_of(FIX, [READ, EDIT, WRITE], read_turns())
    assert shown == "To fix it, change the operator:"
    # "    return a - b" is in the file twice (add and sub): the old text takes in a line more, to be unique
    assert calls == [("Edit", {"file_path": "calc.py", "old_string": "def add(a, b):\n    return a - b",
                               "new_string": "def add(a, b):\n    return a + b  # was a - b"})]
    after = CALC.replace(calls[0][1]["old_string"], calls[0][1]["new_string"])
    assert "return a + b" in after and after.count("return a - b") == 1 and after.startswith("import os")


def test_without_a_replacement_tool_the_whole_file_is_written_by_the_write_or_shell_tool(tmp_path):
    _, calls = edit_of(FIX, [READ, WRITE], read_turns())
    assert calls == [("Write", {"file_path": "calc.py", "content": CALC.replace("a - b\n\ndef sub", "a + b  # was a - b\n\ndef sub")})]
    # Codex: only a shell tool; the file was shown by `cat`. The command, run, leaves the fixed file.
    _, calls = edit_of(FIX, [EXEC], read_turns(CALC, '{"cmd": "cat calc.py"}', "exec_command"))
    (name, args), = calls
    assert name == "exec_command"
    (tmp_path / "calc.py").write_text(CALC)
    subprocess.run(["bash", "-c", args["cmd"]], cwd=tmp_path, check=True)
    assert (tmp_path / "calc.py").read_text() == CALC.replace("a - b\n\ndef sub", "a + b  # was a - b\n\ndef sub")
    assert shlex.split(args["cmd"].split("\n")[0])[:3] == ["cat", ">", "calc.py"]


@pytest.mark.parametrize("answer", [
    "It reads:\n```python\ndef add(a, b):\n    return a - b\n```",  # the file as it is: a quote
    "Like this:\n```python\ndef add(a, b):\n    # ... the rest as before\n    return a + b\n```",  # it elides lines
    "For example:\n```python\nprint(add(2, 3))\nx = add(1, 1)\n```",  # code of its own
    "Then the functions are:\n```python\ndef add(a, b):\n    return a - b\n\ndef mul(a, b):\n    return a * b\n```",
    "Run:\n```bash\nsed -i 's/a - b/a + b/' calc.py\n```",  # a shell block is not an edit block
])
def test_a_block_that_is_no_revision_of_a_shown_file_stays_text(answer):
    assert edit_of(answer, [READ, EDIT, WRITE], read_turns()) == (answer, [])


def test_a_usage_example_after_the_code_is_not_written_into_the_file():
    answer = "Fixed:\n```python\ndef add(a, b):\n    return a + b\n\n# Example usage:\nprint(add(3, 5))\n```"
    _, calls = edit_of(answer, [READ, EDIT], read_turns())
    assert calls == [("Edit", {"file_path": "calc.py", "old_string": "def add(a, b):\n    return a - b",
                               "new_string": "def add(a, b):\n    return a + b"})]


def test_an_answer_written_without_the_file_the_request_names_is_replaced_by_a_read_of_it():
    ask = [Message("user", "<system-reminder>See CLAUDE.md</system-reminder>In calc.py add() subtracts. Fix it.")]
    assert edit_of(FIX, [EDIT, READ, WRITE], ask) == ("", [("Read", {"file_path": "calc.py"})])
    guess = [Message("user", "What is the code word written in inventory.txt?")]
    assert edit_of('"inventory_code"', [READ], guess) == ("", [("Read", {"file_path": "inventory.txt"})])
    # streamed: nothing of the blind answer is shown
    reader = CallReader([READ], workspace=workspace(guess))
    assert "".join(reader.feed(ch) for ch in '"inventory_code"') == ""
    assert [c.name for c in reader.finish()[1]] == ["Read"]
    # Codex: no read tool (view_image takes a path, and fails on text), so the shell's cat
    view = Tool("view_image", "", {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]})
    assert edit_of(FIX, [view, EXEC], ask)[1] == [("exec_command", {"cmd": "cat calc.py"})]
    # not: two files named, none, no way to read one, or an answer that is a call already
    assert edit_of(FIX, [READ, EDIT], [Message("user", "Fix add() in calc.py and ops.py.")]) == (FIX, [])
    assert edit_of(FIX, [READ, EDIT], [Message("user", "Write a function add, e.g. in Python.")]) == (FIX, [])
    assert edit_of(FIX, [EDIT, WRITE], ask) == (FIX, [])
    call = '{"name": "Edit", "arguments": {"file_path": "calc.py", "old_string": "-", "new_string": "+"}}'
    assert edit_of(call, [READ, EDIT], ask)[1][0][0] == "Edit"


def test_a_file_is_read_first_once_and_not_after_a_call_that_used_it():
    ask = Message("user", "Create greet.py that prints hello.")
    tried = [ask, Message("assistant", "", (ToolCall("t1", "Read", '{"file_path": "greet.py"}'),)),
             Message("tool", "[error] File does not exist.", tool_call_id="t1")]
    assert workspace(tried).unread == ()  # tried and failed: not again (no loop on a file that is not there)
    assert workspace([ask]).unread == ()  # a file to create is not there to read
    ran = [Message("user", "Fix calc.py."),
           Message("assistant", "", (ToolCall("t1", "exec_command", '{"cmd": "python calc.py"}'),)),
           Message("tool", "Chunk ID: 1\nWall time: 0.0 seconds\nProcess exited with code 0\nOutput:\n", tool_call_id="t1")]
    assert workspace(ran).unread == ("calc.py",)  # running a file does not show it
    failed_edit = [Message("user", "Fix calc.py."),
                   Message("assistant", "", (ToolCall("t1", "Edit", '{"file_path": "calc.py", "old_string": "-", "new_string": "+"}'),)),
                   Message("tool", "[error] File has not been read yet. Read it first.", tool_call_id="t1")]
    assert workspace(failed_edit).unread == ("calc.py",)  # a call that failed did not use it
    grep = [Message("user", "Find the code word in inventory.txt."),
            Message("assistant", "", (ToolCall("t1", "exec_command", '{"cmd": "grep code inventory.txt"}'),)),
            Message("tool", "Chunk ID: 1\nWall time: 0.0 seconds\nProcess exited with code 0\nOutput:\ncode word: X\n", tool_call_id="t1")]
    assert workspace(grep).unread == ()
    # Codex's `cat` output is the file without its header; a command that failed shows nothing
    cat = [grep[0], Message("assistant", "", (ToolCall("t1", "exec_command", '{"cmd": "cat inventory.txt"}'),)),
           Message("tool", "Chunk ID: 1\nWall time: 0.0 seconds\nProcess exited with code 0\nOriginal token count: 3\n"
                           "Output:\ncode word: X\n", tool_call_id="t1")]
    assert workspace(cat).shown["inventory.txt"].content == "code word: X\n"
    missing = [cat[0], cat[1], Message("tool", cat[2].content.replace("code 0", "code 1"), tool_call_id="t1")]
    assert workspace(missing).shown == {} and workspace(missing).unread == ()


def test_a_block_answering_a_request_to_create_one_file_is_that_file():
    """"Create a shell script hello.sh that prints hi" answered with ```bash echo hi```: the file's content,
    not a command to run (which printed hi and left no file)."""
    ask = [Message("user", "<system-reminder>x.py is open</system-reminder>Create a shell script hello.sh that prints hi.")]
    assert workspace(ask).creates == "hello.sh"
    answer = "Here is the script:\n\n```bash\n#!/bin/bash\necho hi\n```"
    assert edit_of(answer, [READ, WRITE], ask)[1] == [("Write", {"file_path": "hello.sh", "content": "#!/bin/bash\necho hi\n"})]
    # Codex: no write tool, so a here-document through the shell; read before the shell-block rule would run it
    shown, calls = read_calls(answer, [EXEC], shell_blocks=True, workspace=workspace(ask))
    assert [c.name for c in calls] == ["exec_command"]
    assert json.loads(calls[0].arguments)["cmd"] == "cat > hello.sh <<'EOF'\n#!/bin/bash\necho hi\nEOF"
    # not the file: a command naming it, a transcript, a diff
    assert edit_of("```bash\nchmod +x hello.sh && ./hello.sh\n```", [WRITE], ask)[1] == []
    assert edit_of("```console\n$ bash hello.sh\nhi\n```", [WRITE], ask)[1] == []
    assert edit_of("```\n$ echo hi\nhi\n```", [WRITE], ask)[1] == []
    # not when two files are named, when nothing is to be created, or once a call named the file
    assert workspace([Message("user", "Create a.sh and b.sh.")]).creates is None
    assert workspace([Message("user", "What does hello.sh print?")]).creates is None
    wrote = ask + [Message("assistant", "", (ToolCall("t1", "exec_command", '{"cmd": "echo \'echo hi\' > hello.sh"}'),)),
                   Message("tool", "Chunk ID: 1\nWall time: 0.0 seconds\nProcess exited with code 0\nOutput:\n", tool_call_id="t1")]
    assert workspace(wrote).creates is None  # the answer after it may show the file without writing it again


def test_no_file_shown_means_no_edit_and_a_part_of_a_file_is_never_written_whole():
    assert edit_of(FIX, [READ, EDIT, WRITE], [Message("user", "Fix add().")]) == (FIX, [])  # and none named
    part = read_turns(NUMBERED, '{"file_path": "calc.py", "offset": 3, "limit": 2}')
    assert edit_of(FIX, [READ, WRITE], part) == (FIX, [])  # Write would lose the lines not shown
    assert edit_of(FIX, [READ, EDIT], part)[1][0][0] == "Edit"  # a replacement of what was shown is safe


def test_an_edit_block_streamed_a_character_at_a_time_is_read_the_same():
    reader = CallReader([READ, EDIT], shell_blocks=False, workspace=workspace(read_turns()))
    streamed = "".join(reader.feed(ch) for ch in FIX)
    rest, calls = reader.finish()
    assert streamed + rest == "To fix it, change the operator:"
    assert [c.name for c in calls] == ["Edit"]


def test_the_answer_policy_reads_a_local_answer_with_the_requests_files():
    """Wiring: the files come from the request the local answer is for (the model's text is scripted)."""
    import asyncio

    from edge_ai.policy import AnswerPolicy
    from edge_ai.request import CacheControl, Final, Request

    class Scripted:  # an engine task whose answer is the text of the fixed function
        async def stream(self):
            yield FIX
            yield Final(FIX, "stop", 10, 20)

    req = Request(model="local", kind="chat", messages=tuple(read_turns()) + (Message("user", "Go on."),), tools=(READ, EDIT),
                  cache=CacheControl(read=False, write=False))

    async def answer():
        policy = AnswerPolicy(cache=None, models=None, default_max_tokens=64)  # type: ignore[arg-type]
        return [e async for e in policy._local(req, Scripted(), None)]  # type: ignore[arg-type]

    *text, final = asyncio.run(answer())
    assert "".join(text) == "To fix it, change the operator:"
    assert final.finish_reason == "tool_calls" and [c.name for c in final.tool_calls] == ["Edit"]


def test_a_failed_call_is_told_from_its_result():
    from edge_ai.edit_blocks import failed, last_results_failed

    head = "Chunk ID: 1\nWall time: 0.0 seconds\nProcess exited with code {}\nOutput:\n"
    assert failed("[error] File has not been read yet.") and failed(head.format(1) + "cat: x: No such file or directory")
    assert failed(" unable to process image: invalid data") and not failed(head.format(0) + "error: is in the file")
    assert failed("write_stdin failed: Unknown process id 1") and not failed("2 failed, 3 passed")
    assert failed("cat: notes.txt: No such file or directory") and not failed("notes: see the file")
    assert not failed("1\tdef add(a, b):")
    call = Message("assistant", "", (ToolCall("t1", "exec_command", '{"cmd": "cat greet.py"}'),))
    assert last_results_failed([Message("user", "Create greet.py"), call, Message("tool", head.format(1), tool_call_id="t1")])
    assert not last_results_failed([Message("user", "Create greet.py"), call, Message("tool", head.format(0), tool_call_id="t1")])
    assert not last_results_failed([Message("user", "[error] is not a result")])


def test_an_answer_that_only_repeats_a_call_whose_result_is_here_is_asked_again_without_calls():
    import asyncio

    from edge_ai.edit_blocks import repeats
    from edge_ai.policy import AnswerPolicy
    from edge_ai.request import CacheControl, Request
    from tests.conftest import Scripted

    again_asked: list[bool] = []

    def again():
        again_asked.append(True)
        return Scripted("add() returns a - b.")

    turns = tuple(read_turns())
    req = Request(model="local", kind="chat", messages=turns, tools=(READ, EDIT), cache=CacheControl(read=False, write=False))
    policy = AnswerPolicy(cache=None, models=None, default_max_tokens=64)  # type: ignore[arg-type]

    async def answer(text: str):
        return [e async for e in policy._local(req, Scripted(text), None, again)]  # type: ignore[arg-type]

    same = '{"name": "Read", "arguments": {"file_path": "calc.py"}}'
    *text, final = asyncio.run(answer(same))
    assert again_asked == [True] and "".join(text) == "add() returns a - b." and final.tool_calls == ()
    # text sent before the repeated call stays, and the answer asked again follows it
    *text, final = asyncio.run(answer("I will read it.\n" + same))
    assert "".join(text) == final.text == "I will read it.\n\nadd() returns a - b." and final.tool_calls == ()
    again_asked.clear()
    other = '{"name": "Read", "arguments": {"file_path": "ops.py"}}'  # a new call goes out as it is
    *_, final = asyncio.run(answer(other))
    assert again_asked == [] and [c.name for c in final.tool_calls] == ["Read"]
    failed = turns[:2] + (Message("tool", "[error] no such file", tool_call_id="t1"),)
    assert not repeats([ToolCall("x", "Read", '{"file_path": "calc.py"}')], failed)  # a failed call may be retried
