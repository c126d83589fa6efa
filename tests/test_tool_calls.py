"""How tools are shown to a model and how its calls are read back (edge_ai/tool_calls.py), without a server."""

from __future__ import annotations

import json

import pytest

from edge_ai.chat_template import JinjaTemplate
from edge_ai.request import Message, Tool, ToolCall
from edge_ai.tool_calls import CallReader, lazy_call_grammar, read_calls

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


def test_a_template_without_a_tool_format_gets_them_as_text():
    plain = ("{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}"
             "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    text = render(JinjaTemplate(plain, "", "").prompt(Chars(), "Be brief.", HISTORY, tools=TOOLS))
    assert "<|system|>Be brief.\n\nYou can call these tools." in text and "- read_file: Read a file." in text
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
