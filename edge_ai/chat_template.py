"""Turn a conversation into prompt tokens for the local model.

The GGUF's own Jinja template is used when the file has one. Without one (the packaged Gemma 3 file
has none) Gemma's turn format is applied. Template markup is tokenized with special tokens parsed;
message text is tokenized without, so a user cannot forge a turn boundary.
"""

from __future__ import annotations

import json
from typing import Protocol, Sequence

import jinja2.sandbox

from edge_ai.request import Message, Tool
from edge_ai.tool_calls import (
    WHEN_TO_CALL,
    as_text_turns,
    openai_tools,
    template_knows_tools,
    template_messages,
)


class Tokenizer(Protocol):
    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = False) -> list[int]: ...

    @property
    def bos_token(self) -> int: ...

    def token_text(self, token: int) -> str: ...


def gemma_prompt(tok: Tokenizer, system: str, messages: Sequence[Message], prefill: str = "") -> list[int]:
    """<bos><start_of_turn>user\\n{system}\\n\\n{text}<end_of_turn>\\n<start_of_turn>model\\n ...

    Gemma has no system role: the system prompt opens the first user turn. It has no tool format either, so
    it is offered no tools (see `AnswerPolicy.answer`); calls and results of earlier turns are written into
    the turns as text.
    """
    messages = as_text_turns(messages)
    if system and not any(m.role == "user" for m in messages):  # the system prompt alone still counts
        messages = [Message("user", system), *messages]
        system = ""
    tokens = [tok.bos_token]
    first_user = True
    for m in messages:
        role = "model" if m.role == "assistant" else "user"
        text = m.content
        if role == "user" and first_user:
            first_user = False
            if system:
                text = f"{system}\n\n{text}"
        tokens += tok.tokenize(f"<start_of_turn>{role}\n", special=True)
        tokens += tok.tokenize(text)
        tokens += tok.tokenize("<end_of_turn>\n", special=True)
    tokens += tok.tokenize("<start_of_turn>model\n", special=True)
    return tokens + (tok.tokenize(prefill) if prefill else [])


class JinjaTemplate:
    """A GGUF `tokenizer.chat_template`, rendered in a sandbox."""

    def __init__(self, source: str, bos: str, eos: str) -> None:
        env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise
        # as Hugging Face renders templates: plain JSON (Jinja's own tojson escapes <, > and & for HTML)
        env.filters["tojson"] = lambda value, indent=None: json.dumps(value, ensure_ascii=False, indent=indent)
        self._template = env.from_string(source)
        self._bos, self._eos = bos, eos
        self.knows_tools = template_knows_tools(source)

    def prompt(self, tok: Tokenizer, system: str, messages: Sequence[Message], prefill: str = "",
               tools: Sequence[Tool] = ()) -> list[int]:
        """`tools` only where the template knows them (`knows_tools`): the answer policy offers no tools to
        a model without a tool format."""
        extra = {}
        if self.knows_tools:  # tools, calls and results in the template's own format
            turns = template_messages(messages)
            if tools:
                extra["tools"] = openai_tools(tools)
                system = "\n\n".join(filter(None, [system, WHEN_TO_CALL]))
        else:  # calls and results of earlier turns (another model's, or the cloud's) as text
            turns = [{"role": m.role, "content": m.content} for m in as_text_turns(messages)]
        msgs = ([{"role": "system", "content": system}] if system else []) + turns
        text = self._template.render(
            messages=msgs, bos_token=self._bos, eos_token=self._eos, add_generation_prompt=True, **extra
        )
        tokens = tok.tokenize(text, add_bos=not text.startswith(self._bos), special=True)
        return tokens + (tok.tokenize(prefill) if prefill else [])


def _raise(message: str) -> None:
    raise ValueError(message)
