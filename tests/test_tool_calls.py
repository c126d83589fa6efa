"""How tools are shown to a model and how its calls are read back (edge_ai/tool_calls.py), without a server."""

from __future__ import annotations

import json

import pytest

from edge_ai.chat_template import JinjaTemplate
from edge_ai.request import Message, Tool, ToolCall
from edge_ai.tool_calls import CallReader, lazy_call_grammar, read_calls, shell_tool

READ = Tool("read_file", "Read a file.", {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]})
WRITE = Tool("write_file", "Write a file.", {"type": "object", "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
                                             "required": ["path", "content"]})
TOOLS = [READ, WRITE]


def calls_of(text: str) -> tuple[str, list[tuple[str, dict]]]:
    shown, calls = read_calls(text, TOOLS)
    return shown, [(c.name, json.loads(c.arguments)) for c in calls]


@pytest.mark.parametrize("answer", [
    '<tool_call>\n{"name": "read_file", "arguments": {"path": "a.txt"}}\n</tool_call>',
    '<tools>\n{"name": "read_file", "parameters": {"path": "a.txt"}}\n</tools>',
    '```json\n{\n  "name": "read_file",\n  "arguments": {\n    "path": "a.txt"\n  }\n}\n```',
    '```\n{"name": "read_file", "arguments": {"path": "a.txt"}}\n```',
    '{"name": "read_file", "arguments": {"path": "a.txt"}}',
    '{"name": "read_file", "arguments": "{\\"path\\": \\"a.txt\\"}"}',  # arguments as JSON text
    '{"type": "function", "function": {"name": "read_file", "arguments": {"path": "a.txt"}}}',
    '[{"name": "read_file", "arguments": {"path": "a.txt"}}]',
    '<tool_call>\n{"name": "read_file", "arguments": {"path": "a.txt"}}',  # the closing tag never came
])
def test_a_call_is_read_in_every_form_small_models_write(answer):
    assert calls_of(answer) == ("", [("read_file", {"path": "a.txt"})])


def test_text_before_a_call_stays_text_and_several_calls_are_several():
    text = ('I will read both files.\n\n```json\n{"name": "read_file", "arguments": {"path": "a"}}\n```\n'
            '```json\n{"name": "write_file", "arguments": {"path": "b", "content": "x"}}\n```\nThat should do it.')
    assert calls_of(text) == ("I will read both files.", [("read_file", {"path": "a"}), ("write_file", {"path": "b", "content": "x"})])
    tagged = ('<tool_call>\n{"name": "read_file", "arguments": {"path": "a"}}\n</tool_call>\n'
              '<tool_call>\n{"name": "read_file", "arguments": {"path": "b"}}\n</tool_call>')
    assert [a for _, a in calls_of(tagged)[1]] == [{"path": "a"}, {"path": "b"}]


@pytest.mark.parametrize("answer", [
    "The capital of France is Paris.",
    "Use this:\n```python\nprint({'name': 1})\n```\nIt prints a dict.",  # code is text
    '```json\n{"name": "Ada", "age": 36}\n```',  # JSON that calls nothing
    '{"name": "delete_everything", "arguments": {}}',  # a tool that was not offered
    "{name} is a placeholder\n[1] a footnote",
    '{"name": "read_file", "arguments": [1, 2]}',  # arguments that are no object
])
def test_what_is_not_a_call_of_an_offered_tool_is_text(answer):
    assert calls_of(answer) == (answer, [])


@pytest.mark.parametrize("answer", [
    'Reading it now.\n```json\n{"name": "read_file", "arguments": {"path": "a { } \\" ]"}}\n```',
    "Plain text that ends in a newline\n\n",
    "Code:\n```python\nx = 1\n```\n{not json} and <tool partial",
    '<tool_call>{"name": "write_file", "arguments": {"path": "g.py", "content": "print(\\"hi\\")\\n"}}</tool_call>',
])
def test_a_stream_read_a_character_at_a_time_gives_the_same_answer(answer):
    reader = CallReader(TOOLS)
    shown = "".join(reader.feed(ch) for ch in answer)
    rest, calls = reader.finish()
    whole_text, whole_calls = read_calls(answer, TOOLS)
    assert shown + rest == whole_text
    assert [(c.name, c.arguments) for c in calls] == [(c.name, c.arguments) for c in whole_calls]


def test_a_stream_shows_text_as_it_comes_and_holds_only_a_possible_call():
    reader = CallReader(TOOLS)
    assert reader.feed("Let me look") == "Let me look"
    assert reader.feed(" at it.\n") == " at it."  # the newline may open a call: held
    assert reader.feed("```js") == ""
    assert reader.feed('on\n{"name": "read_file", "arguments": {"path": "x"}}') == ""
    assert reader.feed("\n```") == ""  # a call: nothing after it is text
    assert reader.finish()[1][0].name == "read_file"


BASH = Tool("Bash", "Runs a shell command.", {"type": "object", "properties": {"command": {"type": "string"},
                                                                     "timeout": {"type": "number"}}, "required": ["command"]})
EXEC = Tool("exec_command", "Runs a command.", {"type": "object", "properties": {"cmd": {"type": "string"}, "workdir": {"type": "string"}}})
ARGV = Tool("shell", "Runs a command.", {"type": "object", "properties": {"command": {"type": "array", "items": {"type": "string"}}},
                                         "required": ["command"]})


def test_the_tool_that_runs_shell_commands_is_found_by_its_command_parameter():
    assert shell_tool([READ, BASH]).name == "Bash" and not shell_tool([READ, BASH]).argv
    assert shell_tool([EXEC]).param == "cmd" and shell_tool([ARGV]).argv
    assert shell_tool(TOOLS) is None
    assert shell_tool([Tool("run", "", {"type": "object", "properties": {"command": {"type": "string"}, "host": {"type": "string"}},
                                        "required": ["command", "host"]})]) is None  # it needs more than a command


@pytest.mark.parametrize("tools, expected", [
    ([READ, BASH], ("Bash", {"command": "ls src/"})),
    ([EXEC], ("exec_command", {"cmd": "ls src/"})),
    ([ARGV], ("shell", {"command": ["bash", "-lc", "ls src/"]})),
])
def test_a_shell_block_after_a_short_lead_in_is_a_call_of_the_shell_tool(tools, expected):
    answer = "To list the files in src/, run:\n```bash\n$ ls src/\n```\nThis shows every file."
    shown, calls = read_calls(answer, tools)
    assert shown == "To list the files in src/, run:"
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [expected]
    reader = CallReader(tools)  # the same, streamed
    streamed = "".join(reader.feed(ch) for ch in answer)
    rest, got = reader.finish()
    assert streamed + rest == shown and [(c.name, json.loads(c.arguments)) for c in got] == [expected]


@pytest.mark.parametrize("answer", [
    "To list the files, run:\n```python\nimport os\nprint(os.listdir())\n```",  # not a shell block
    "Shells differ. " * 20 + "\n```bash\nls -la\n```",  # an explanation with a command in it
    "First:\n```bash\nls\n```\nthen:\n```bash\npwd\n```",  # the first block is read, never a later one
    "```bash\n" + "echo step\n" * 12 + "```",  # a script to read, not a command to run
    "```bash\n\n```",
])
def test_other_shell_blocks_stay_text(answer):
    shown, calls = read_calls(answer, [READ, BASH])
    if "then:" in answer:
        assert [json.loads(c.arguments) for c in calls] == [{"command": "ls"}]
    else:
        assert (shown, calls) == (answer, [])
    assert read_calls("Run:\n```bash\nls\n```", TOOLS) == ("Run:\n```bash\nls\n```", [])  # no shell tool offered
    # an answer to tool results reports what was run: its block stays text
    assert read_calls("Done:\n```bash\nls\n```", [BASH], shell_blocks=False) == ("Done:\n```bash\nls\n```", [])


QWEN_LIKE = (  # a template in the shape of Qwen2.5's: tools in the system turn, calls and results in their own tags
    "{% if tools %}<|im_start|>system\n{{ messages[0].content if messages[0].role == 'system' else 'Assistant.' }}\n<tools>"
    "{% for t in tools %}\n{{ t | tojson }}{% endfor %}\n</tools><|im_end|>\n{% endif %}"
    "{% for m in messages %}{% if m.role == 'system' %}{% if not tools %}<|im_start|>system\n{{ m.content }}<|im_end|>\n{% endif %}"
    "{% elif m.role == 'tool' %}<|im_start|>user\n<tool_response>\n{{ m.content }}\n</tool_response><|im_end|>\n"
    "{% elif m.tool_calls %}<|im_start|>assistant{% for c in m.tool_calls %}\n<tool_call>\n"
    '{"name": "{{ c.function.name }}", "arguments": {{ c.function.arguments | tojson }}}\n</tool_call>{% endfor %}<|im_end|>\n'
    "{% else %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class Chars:
    """A tokenizer that keeps the text: one token a character."""

    bos_token = 0

    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = False) -> list[int]:
        return ([0] if add_bos else []) + [ord(c) for c in text]

    def token_text(self, token: int) -> str:
        return chr(token)


def render(tokens: list[int]) -> str:
    return "".join(chr(t) for t in tokens if t)


HISTORY = (
    Message("user", "What is in a.txt?"),
    Message("assistant", "", tool_calls=(ToolCall("call_1", "read_file", '{"path": "a.txt"}'),)),
    Message("tool", "code word: <kiwi>", tool_call_id="call_1"),
)


def test_a_template_that_knows_tools_gets_them_calls_and_results_in_its_own_format():
    text = render(JinjaTemplate(QWEN_LIKE, "", "").prompt(Chars(), "Be brief.", HISTORY, tools=TOOLS))
    assert '"name": "read_file"' in text and '"description": "Read a file."' in text  # offered, as JSON
    assert '<tool_call>\n{"name": "read_file", "arguments": {"path": "a.txt"}}\n</tool_call>' in text  # the call, parsed
    assert "<tool_response>\ncode word: <kiwi>\n</tool_response>" in text  # the result; tojson did not HTML-escape
    assert "Be brief." in text and text.endswith("<|im_start|>assistant\n")


def test_a_template_without_a_tool_format_gets_earlier_calls_and_results_as_text():
    plain = ("{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}"
             "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    template = JinjaTemplate(plain, "", "")
    assert not template.knows_tools  # so the answer policy offers it no tools
    text = render(template.prompt(Chars(), "Be brief.", HISTORY))
    assert "<|system|>Be brief.\n" in text
    assert '<|assistant|>{"name": "read_file", "arguments": {"path": "a.txt"}}' in text
    assert "<|user|>[tool result]\ncode word: <kiwi>" in text


def test_the_lazy_call_grammar_is_accepted_by_llama_cpp():
    """The composed grammar (the calls' JSON, closing fences and tags, more calls) parses, as a lazy grammar
    with the call triggers, against a real vocabulary."""
    import llama_cpp.llama_cpp as ll

    from edge_ai.engines.llm import _make_grammar
    from edge_ai.local_models import grammar_for
    from edge_ai.model_files import default_gguf
    from edge_ai.request import Constraint
    from edge_ai.tool_calls import CALL_TRIGGERS

    ll.llama_backend_init()
    params = ll.llama_model_default_params()
    params.vocab_only = True
    model = ll.llama_model_load_from_file(str(default_gguf("models")).encode(), params)
    try:
        todo = Tool("TodoWrite", "Update the task list.", {  # nested arrays, enums, a string format, $schema
            "$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "additionalProperties": False,
            "required": ["todos"], "properties": {"todos": {"type": "array", "items": {
                "type": "object", "required": ["content", "status"], "additionalProperties": False,
                "properties": {"content": {"type": "string", "minLength": 1}, "url": {"type": "string", "format": "uri"},
                               "status": {"type": "string", "enum": ["pending", "in_progress", "completed"]}}}}}})
        gbnf = lazy_call_grammar(grammar_for(Constraint("tool", tools=(*TOOLS, todo))))
        assert "root ::= edge-call" in gbnf and "space ::= [ \\t\\n]{0,20}" in gbnf
        sampler = _make_grammar(ll.llama_model_get_vocab(model), gbnf, CALL_TRIGGERS)
        assert sampler
        ll.llama_sampler_free(sampler)
    finally:
        ll.llama_model_free(model)


def test_the_compact_form_keeps_name_first_sentence_and_what_a_valid_call_needs():
    from edge_ai.tool_calls import compact_tools

    long = Tool("Edit", "Performs exact string replacements in files. Usage: read the file first. " * 10, {
        "$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "additionalProperties": False,
        "required": ["file_path", "mode"],
        "properties": {"file_path": {"type": "string", "description": "The absolute path " * 20},
                       "mode": {"type": "string", "enum": ["a", "b"], "title": "Mode"},
                       "edits": {"type": "array", "items": {"type": "object", "description": "one edit",
                                                            "properties": {"old": {"type": "string", "description": "x"}}}}}})
    (small,) = compact_tools([long])
    assert small.name == "Edit" and small.description == "Performs exact string replacements in files."
    assert small.parameters == {
        "type": "object", "additionalProperties": False, "required": ["file_path", "mode"],
        "properties": {"file_path": {"type": "string"}, "mode": {"type": "string", "enum": ["a", "b"]},
                       "edits": {"type": "array", "items": {"type": "object", "properties": {"old": {"type": "string"}}}}}}
    assert len(json.dumps(small.__dict__)) < len(json.dumps(long.__dict__)) / 4


def test_the_call_grammar_ends_the_answer_after_one_call():
    """A small model left to go on writes the same call again and again (five, ever more mangled, until
    max_tokens): after one call and its closing fence the grammar allows only the end of the answer."""
    import ctypes

    import llama_cpp.llama_cpp as ll
    import numpy as np

    from edge_ai.engines.llm import _make_grammar
    from edge_ai.local_models import grammar_for
    from edge_ai.model_files import default_gguf
    from edge_ai.request import Constraint

    ll.llama_backend_init()
    params = ll.llama_model_default_params()
    params.vocab_only = True
    model = ll.llama_model_load_from_file(str(default_gguf("models")).encode(), params)
    vocab = ll.llama_model_get_vocab(model)

    def tokens(text: str) -> list[int]:
        buf = (ll.llama_token * 256)()
        n = ll.llama_tokenize(vocab, text.encode(), len(text.encode()), buf, 256, False, False)
        return list(buf[:n])

    def allowed(grammar, candidates: list[int]) -> list[int]:
        data = (ll.llama_token_data * len(candidates))(*(ll.llama_token_data(t, 0.0, 0.0) for t in candidates))
        arr = ll.llama_token_data_array(data, len(candidates), -1, False)
        ll.llama_sampler_apply(grammar, ctypes.byref(arr))
        return [data[i].id for i in range(len(candidates)) if np.isfinite(data[i].logit)]

    try:
        grammar = _make_grammar(vocab, lazy_call_grammar(grammar_for(Constraint("tool", tools=tuple(TOOLS)))))
        for t in tokens('{"name": "read_file", "arguments": {"path": "a.txt"}}\n```'):
            ll.llama_sampler_accept(grammar, t)
        eos, newline, brace = ll.llama_vocab_eos(vocab), tokens("\n")[0], tokens("{")[0]
        assert allowed(grammar, [eos, newline, brace]) == [eos]
        ll.llama_sampler_free(grammar)
    finally:
        ll.llama_model_free(model)


def test_the_compact_form_keeps_where_the_agent_works_and_drops_harness_notes():
    from dataclasses import replace

    from edge_ai.request import Request
    from edge_ai.tool_calls import COMPACT_SYSTEM_CHARS, compact_request

    system = ("You are a coding agent.\n\n" + "Memory: save notes under /home/u/.agent/memory/.\n" * 80 +
              "\n# Environment\n - Primary working directory: /work/project\n - Platform: linux\n\n# Style\nBe terse.\n")
    note = "<system-reminder>\nToday's date is 2026-12-05. Skills: a, b, c.\n</system-reminder>\n\n"
    req = Request(model="m", system=system, messages=(Message("user", note + "Fix calc.py."),), tools=tuple(TOOLS))
    small = compact_request(req)
    assert small.system.startswith("You are a coding agent.") and len(small.system) < COMPACT_SYSTEM_CHARS + 200
    assert "Primary working directory: /work/project" in small.system and "Be terse." not in small.system
    assert small.messages[0].content == "Fix calc.py."
    only_a_note = replace(req, messages=(Message("user", note),))
    assert compact_request(only_a_note).messages[0].content == note  # nothing but a note: kept


def test_the_compact_form_keeps_the_rules_a_call_must_follow():
    from edge_ai.tool_calls import compact_tools

    edit = Tool("Edit", "Performs exact string replacement in a file.\n\n- You must Read the file before editing, or the "
                "call will fail.\n- Prefer small edits.\n- `old_string` must match the file exactly.", {"type": "object"})
    (small,) = compact_tools([edit])
    assert small.description == ("Performs exact string replacement in a file. You must Read the file before editing, "
                                 "or the call will fail. `old_string` must match the file exactly.")


def test_results_are_followed_by_a_turn_to_use_them_unless_a_call_failed_or_the_client_speaks():
    from edge_ai.tool_calls import FAILED, USE_RESULTS, template_messages

    call = Message("assistant", "", tool_calls=(ToolCall("c1", "read_file", '{"path": "a.txt"}'),))
    ask = Message("user", "What does a.txt say?")
    ok = Message("tool", "code word: kiwi", tool_call_id="c1")
    turns = template_messages([ask, call, ok])
    # the request restated, then what to do with the results
    assert turns[-1] == {"role": "user", "content": f"The request: What does a.txt say?\n{USE_RESULTS}"}
    assert turns[-2]["role"] == "tool"
    noted = Message("user", "<system-reminder>Working directory: /w</system-reminder>\nWhat does a.txt say?")
    assert template_messages([noted, call, ok])[-1] == turns[-1]  # a harness's notes are not the request
    failed = Message("tool", FAILED + "no such file", tool_call_id="c1")
    assert template_messages([ask, call, failed])[-1]["role"] == "tool"
    assert template_messages([ask, call, ok, Message("user", "thanks")])[-1] == {"role": "user", "content": "thanks"}
    assert sum(t["content"].endswith(USE_RESULTS) for t in template_messages([ask, call, ok, call, ok])) == 2


def test_a_call_written_as_an_array_is_decoded_under_the_grammar_and_read_back():
    """`[{"name": …}]` opening a line begins a call as a bare object does: the trigger's group starts at the
    object, so the grammar holds its arguments, and the grammar's close allows the array's `]`."""
    import re

    from edge_ai.tool_calls import CALL_TRIGGERS, lazy_call_grammar

    trigger = re.compile(CALL_TRIGGERS[0])
    for answer in ('[{"name": "read_file"', 'Reading it.\n[ {"name": "read_file"', '```json\n[{"name": "read_file"'):
        found = trigger.search(answer)
        assert found and found.group(1).startswith('{"name"'), answer
    assert '"]"' in lazy_call_grammar('root ::= "{}"\nspace ::= " "?')
    text, calls = read_calls('[{"name": "read_file", "arguments": {"path": "a.txt"}}]', TOOLS)
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("read_file", {"path": "a.txt"})] and text == ""


def test_the_compact_form_leaves_out_tools_the_agent_reserves_for_an_explicit_request():
    from edge_ai.request import Request
    from edge_ai.tool_calls import compact_request

    goal = Tool("create_goal", "Create a goal only when explicitly requested by the user. Sets a budget.", {"type": "object"})
    ask = Tool("request_user_input", "Ask the user questions. This tool is only available in Plan mode.", {"type": "object"})
    shell = Tool("exec_command", "Runs a command.", {"type": "object"})
    req = Request(model="m", messages=(Message("user", "Create a file greet.py."),), tools=(goal, ask, shell))
    assert [t.name for t in compact_request(req).tools] == ["exec_command"]
    named = Request(model="m", messages=(Message("user", "Use create_goal for this."),), tools=(goal, shell))
    assert [t.name for t in compact_request(named).tools] == ["create_goal", "exec_command"]
    assert compact_request(req).tools != req.tools and len(req.tools) == 3  # only what the model sees changes


def test_a_shell_result_is_shown_to_the_model_without_codexs_header():
    from edge_ai.tool_calls import template_messages

    head = "Chunk ID: 202a7b\nWall time: 0.0000 seconds\nProcess exited with code {}\nOriginal token count: 9\nOutput:\n"
    call = Message("assistant", "", tool_calls=(ToolCall("c1", "exec_command", '{"cmd": "cat settings.ini"}'),))
    ask = Message("user", "Which port?")
    turns = template_messages([ask, call, Message("tool", head.format(0) + "port = 8731\n", tool_call_id="c1")])
    assert turns[2]["content"] == "port = 8731\n"
    turns = template_messages([ask, call, Message("tool", head.format(1) + "cat: x: No such file\n", tool_call_id="c1")])
    assert turns[2]["content"] == "(exit code 1)\ncat: x: No such file\n"
    assert template_messages([ask, call, Message("tool", "plain", tool_call_id="c1")])[2]["content"] == "plain"


def test_a_parameter_with_only_a_description_gets_a_grammar_and_a_property_named_description_stays():
    """{"description": "…"} is any value in JSON Schema; llama.cpp's converter refused it, and one such
    parameter in an agent's tools left every call of the request without a grammar."""
    from edge_ai.local_models import constraints_only, grammar_for
    from edge_ai.request import Constraint

    params = {"type": "object", "description": "a workflow", "properties": {
        "args": {"description": "any JSON value, passed through"},
        "description": {"type": "string", "title": "Description", "description": "what it does"},
        "steps": {"type": "array", "items": {"type": "string", "description": "one step"}},
    }, "required": ["description"]}
    assert constraints_only(params) == {"type": "object", "properties": {
        "args": {}, "description": {"type": "string"}, "steps": {"type": "array", "items": {"type": "string"}}},
        "required": ["description"]}
    gbnf = grammar_for(Constraint("tool", tools=(Tool("Workflow", "", params),)))
    assert '\\"description\\"' in gbnf and '\\"args\\"' in gbnf
