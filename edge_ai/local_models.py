"""Which local model serves a client's model name, and how a request becomes its prompt tokens."""

from __future__ import annotations

import json
import logging
from array import array
from dataclasses import dataclass, replace
from pathlib import Path

from edge_ai.chat_template import JinjaTemplate, gemma_prompt
from edge_ai.config import Settings
from edge_ai.engines.llm import LLMEngine, SamplingParams
from edge_ai.engines.priority import CpuTurns
from edge_ai.errors import BadRequest, ContextOverflow, NotFound
from edge_ai.model_files import resolve_gguf
from edge_ai.recent import Recent
from edge_ai.request import Constraint, Message, Request
from edge_ai.tool_calls import CALL_TRIGGERS, compact_request, lazy_call_grammar

log = logging.getLogger("edge_ai.local")

PROMPT_MEMO = 4096  # prompts whose tokens are kept (least recently used go first)
LEAST_ANSWER_SHARE = 4  # a prompt that must be cut to fit leaves this share of the context to the answer
COMPACT_ABOVE = 4096  # an agent's prompt (with tools) longer than this, answer included, is shown compact
SYSTEM_START_SHARE = 8  # a cut system prompt keeps at least this share of the budget, from its start


@dataclass
class Prepared:
    """A request made ready for the engine: its tokens (cut to fit if needed) and its sampling."""

    tokens: list[int]
    params: SamplingParams
    dropped: int = 0  # prompt tokens left out to fit the context


class LocalModel:
    def __init__(self, engine: LLMEngine, defaults: SamplingParams = SamplingParams(), default_system: str = "",
                 compact_tools: str = "auto", check_calls: bool = False) -> None:
        self.engine = engine
        self.compact_tools = compact_tools  # "auto" | "always" | "never" (Settings.compact_tools)
        self.check_calls = check_calls  # a call answering the user's own turn is checked (call_need)
        self.default_system = default_system  # for requests that send no system prompt
        self.defaults = defaults  # for what a request does not set
        self.name = engine.path.stem
        self._memo = Recent(PROMPT_MEMO)  # prompt fields -> tokens
        source = engine.chat_template
        self._template = (
            JinjaTemplate(source, engine.token_text(engine.bos_token), "") if source else None
        )

    @property
    def knows_tools(self) -> bool:
        """Its chat template shows tools, calls and results in a format of its own (Qwen2.5's)."""
        return self._template is not None and self._template.knows_tools

    def prompt_tokens(self, req: Request) -> list[int]:
        """Memoised: tokenizing a chat prompt costs ~0.6 ms here (several llama.cpp tokenizer calls over a
        262k-token vocabulary), which was most of an exact cache hit's CPU; exact hits are by definition
        prompts seen before. Kept as int32 arrays: 4 bytes a token."""
        key = (req.kind, req.prompt, req.system, req.messages, req.prefill, _instruction(req.constraint), _tools_key(req))
        tokens = self._memo.recall(key)
        if tokens is None:
            tokens = array("i", self._tokenize(req))
            self._memo.remember(key, tokens)
        return tokens.tolist()

    def chat_tokens(self, system: str, messages: tuple[Message, ...]) -> list[int]:
        """A plain chat's prompt, no tools: for a question the server asks the model itself (call_need)."""
        return self._tokenize(Request(model=self.name, system=system, messages=messages))

    def _tokenize(self, req: Request) -> list[int]:
        if req.kind == "completion":
            return self.engine.tokenize(req.prompt, add_bos=True)
        system = "\n\n".join(filter(None, [req.system or self.default_system, _instruction(req.constraint)]))
        if self._template is not None:
            return self._template.prompt(self.engine, system, req.messages, req.prefill, req.tools)
        return gemma_prompt(self.engine, system, req.messages, req.prefill)

    def answer_room(self, req: Request, default_max_tokens: int) -> tuple[int, int]:
        """(the max_tokens asked for, the room an answer gets at least), without tokenizing the prompt.
        Raises ContextOverflow for a max_tokens the client means exactly that leaves no room for a prompt."""
        n_ctx = self.engine.n_ctx_slot
        want = req.max_tokens if req.max_tokens is not None else default_max_tokens
        if req.max_tokens is not None and not req.clamp_max_tokens:  # a limit the client means exactly
            if want > n_ctx - min(256, n_ctx // 2):
                raise ContextOverflow(
                    f"max_tokens ({want}) leaves no room for a prompt in this model's context of {n_ctx} tokens"
                )
            return want, want
        return want, min(want, n_ctx // LEAST_ANSWER_SHARE)  # a default or a ceiling: at least a share

    def prepare(self, req: Request, default_max_tokens: int) -> Prepared:
        """Tokens and sampling for `req`. A prompt too long for a slot is cut to fit (see `_fit`), never
        refused for its length; only a max_tokens that leaves no room for any prompt is refused."""
        n_ctx = self.engine.n_ctx_slot
        want, answer = self.answer_room(req, default_max_tokens)
        if req.tools and self.compact_tools == "always":
            req = compact_request(req)
        tokens = self.prompt_tokens(req)
        dropped = 0
        if req.tools and self.compact_tools == "auto" and len(tokens) + answer > min(n_ctx, COMPACT_ABOVE):
            # a long agent request: what a small model can use and two cores prefill in time (compact_request)
            full = len(tokens)
            req = compact_request(req)
            tokens = self.prompt_tokens(req)
            dropped = full - len(tokens)
        if len(tokens) + answer > n_ctx:
            before = len(tokens)
            # memoised too: an agent resends the same long prompt, and cutting costs several tokenizations
            key = ("fit", req.kind, req.prompt, req.system, req.messages, req.prefill, _instruction(req.constraint), _tools_key(req),
                   n_ctx - answer)
            cut = self._memo.recall(key)
            if cut is None:
                cut = array("i", self._fit(req, n_ctx - answer))
                self._memo.remember(key, cut)
            tokens = cut.tolist()
            dropped += before - len(tokens)
            log.info("prompt of %d tokens cut to %d to fit the context of %d (%d dropped)",
                     before, len(tokens), n_ctx, dropped)
        room = n_ctx - len(tokens)
        max_tokens = answer if req.max_tokens is not None and not req.clamp_max_tokens else min(want, room)
        return Prepared(tokens, self.sampling(req, max_tokens), dropped)

    def _fit(self, req: Request, budget: int) -> list[int]:
        """Cut a prompt to `budget` tokens, as an agent's context is best kept: the start of the system
        prompt (instructions, tools) and the latest turns stay; whole messages in between go first, oldest
        first, in user/assistant pairs; then the system prompt's tail, down to its start; then the last
        tools; then the middle of the last message."""
        if req.kind == "completion":
            tokens = self._tokenize(req)
            return tokens[:1] + tokens[len(tokens) - budget + 1 :]  # BOS, then the end of the text
        history = len(req.messages) - 1  # the last message is the question: never dropped whole
        fits = lambda r: len(self._tokenize(r)) <= budget  # noqa: E731
        lo, hi = 0, history // 2  # least pairs to drop: binary search, each probe one tokenization
        if not fits(replace(req, messages=req.messages[2 * hi :])):
            lo = hi
        while lo < hi:
            mid = (lo + hi) // 2
            if fits(replace(req, messages=req.messages[2 * mid :])):
                hi = mid
            else:
                lo = mid + 1
        cut = replace(req, messages=req.messages[2 * lo :])
        if fits(cut):
            return self._tokenize(cut)
        cut = replace(cut, messages=cut.messages[-1:])
        over = len(self._tokenize(cut)) - budget
        if over > 0 and req.system:
            sys_tokens = self.engine.tokenize(req.system)
            # a re-tokenized cut may merge differently: a margin; and the system prompt's start (who the
            # agent is, its first rules) outlasts the last tools: an eighth of the budget at least
            keep = max(min(len(sys_tokens), budget // SYSTEM_START_SHARE), len(sys_tokens) - over - 8)
            cut = replace(cut, system=self.engine.detokenize(sys_tokens[:keep]))
            over = len(self._tokenize(cut)) - budget
        if over > 0 and cut.tools:  # more tools than a small context holds: the first ones (agents list the
            lo, hi = 0, len(cut.tools)  # core ones first) as many as fit, then none
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if fits(replace(cut, tools=cut.tools[:mid])):
                    lo = mid
                else:
                    hi = mid - 1
            cut = replace(cut, tools=cut.tools[:lo])
            over = len(self._tokenize(cut)) - budget
        if over > 0:  # the question alone is too long: keep its start and its end
            q = self.engine.tokenize(cut.messages[-1].content)
            keep = max(0, len(q) - over - 8)
            text = self.engine.detokenize(q[: keep // 2]) + "\n[...]\n" + self.engine.detokenize(q[len(q) - keep // 2 :])
            cut = replace(cut, messages=(replace(cut.messages[-1], content=text),))
        tokens = self._tokenize(cut)
        if len(tokens) > budget:  # nothing left to drop (an enormous prefill): the context decides
            raise ContextOverflow(f"the prompt cannot be cut to fit this model's context of {self.engine.n_ctx_slot} tokens")
        return tokens

    def sampling(self, req: Request, max_tokens: int) -> SamplingParams:
        d = self.defaults
        grammar = grammar_for(req.constraint) if req.constraint is not None else None
        # a structured answer repeats keys and quotes by nature: no default penalty under a grammar; a lazy
        # one (tools the model may call) leaves the text answer free, and the penalties keep it from looping
        structured = grammar is not None
        triggers: tuple[str, ...] = ()
        if grammar is None and req.tools:  # a call the model begins is finished under the tools' grammar
            try:
                grammar, triggers = lazy_call_grammar(grammar_for(Constraint("tool", tools=req.tools))), CALL_TRIGGERS
            except BadRequest as exc:  # a schema the converter cannot take: calls are still read, unconstrained
                log.warning("tools offered without a call grammar: %s", exc.message)
        return SamplingParams(
            temperature=d.temperature if req.temperature is None else req.temperature,
            top_p=d.top_p if req.top_p is None else req.top_p,
            top_k=d.top_k if req.top_k is None else req.top_k,
            min_p=d.min_p if req.min_p is None else req.min_p,
            repeat_penalty=(1.0 if structured else d.repeat_penalty) if req.repeat_penalty is None else req.repeat_penalty,
            frequency_penalty=req.frequency_penalty or 0.0,
            presence_penalty=req.presence_penalty or 0.0,
            dry_multiplier=(0.0 if structured else d.dry_multiplier) if req.dry_multiplier is None else req.dry_multiplier,
            seed=req.seed,
            max_tokens=max_tokens,
            stop=req.stop if not structured else (),  # a stop string could cut valid JSON short
            grammar=grammar,
            grammar_triggers=triggers,
            call_least=d.call_least if triggers else 0.0,
        )


def _tools_key(req: Request) -> str:
    """The offered tools as a memo key (their schemas are dicts: not hashable)."""
    if not req.tools:
        return ""
    return json.dumps([[t.name, t.description, t.parameters] for t in req.tools], sort_keys=True)


def _instruction(c: Constraint | None) -> str:
    """What the model is told of the shape its answer must take (the grammar enforces it; this makes the
    values sensible)."""
    if c is None:
        return ""
    if c.kind == "json":
        if c.schema is None:
            return "Answer with a single JSON object."
        return "Answer with a single JSON value matching this JSON schema:\n" + json.dumps(c.schema)
    lines = ["Answer by calling one of these tools. Reply with a JSON object {\"name\": tool name, \"arguments\": "
             "its arguments}."]
    for t in c.tools:
        lines.append(f"- {t.name}: {t.description} Arguments schema: {json.dumps(t.parameters)}")
    return "\n".join(lines)


def call_schema(c: Constraint) -> dict:
    """The JSON schema of a tool call's answer: {"name": one of the tools, "arguments": valid for it}."""
    calls = [
        {"type": "object", "properties": {"name": {"const": t.name}, "arguments": _object_schema(t.parameters)},
         "required": ["name", "arguments"]}
        for t in c.tools
    ]
    return calls[0] if len(calls) == 1 else {"anyOf": calls}


def _object_schema(schema: dict) -> dict:
    return schema if schema.get("type") == "object" or "properties" in schema else {"type": "object"}


_GRAMMARS: dict[str, str] = {}
# Keywords that describe a value and constrain nothing. llama.cpp's converter refuses a schema made only
# of them ({"description": "…"}: any value, as JSON Schema has it), and one such parameter among Claude
# Code's tools left every call of the request without a grammar.
_ANNOTATIONS = frozenset({"description", "title", "examples", "default", "$comment", "deprecated", "readOnly", "writeOnly"})
_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"})
_SCHEMA_LISTS = frozenset({"anyOf", "oneOf", "allOf", "prefixItems"})
_SCHEMA_ONE = frozenset({"items", "additionalProperties", "not", "if", "then", "else", "contains", "propertyNames"})


def constraints_only(schema: object) -> object:
    """The schema without its annotations, at every depth (a property *named* "description" stays)."""
    if not isinstance(schema, dict):
        return schema
    out: dict = {}
    for key, value in schema.items():
        if key in _ANNOTATIONS:
            continue
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: constraints_only(sub) for name, sub in value.items()}
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            out[key] = [constraints_only(sub) for sub in value]
        elif key in _SCHEMA_ONE:
            out[key] = constraints_only(value)
        else:
            out[key] = value
    return out


def grammar_for(c: Constraint) -> str:
    """GBNF for a constraint (memoised by its schema's text: agents resend the same tools). Properties keep
    the client's order, and a call writes its name first: the order a model writes them in."""
    from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

    if c.kind == "json" and c.schema is None:
        return JSON_GBNF
    schema = constraints_only(c.schema if c.kind == "json" else call_schema(c))
    key = json.dumps(schema)
    gbnf = _GRAMMARS.get(key)
    if gbnf is None:
        try:
            gbnf = json_schema_to_gbnf(key, prop_order=["name", "arguments"])
        except Exception as exc:  # an unsupported or malformed schema: the client's to fix
            raise BadRequest(f"the JSON schema cannot be turned into a grammar: {exc}", param="response_format") from exc
        if len(_GRAMMARS) > 256:
            _GRAMMARS.clear()
        _GRAMMARS[key] = gbnf
    return gbnf


class LocalModels:
    """Engines by GGUF file; client names map to them (unknown names use the default unless strict)."""

    def __init__(self, settings: Settings, turns: CpuTurns | None = None) -> None:
        self.settings = settings
        self.strict = settings.strict_models
        self.turns = turns  # shared with the embedder: its passes go before the next decode step
        self._by_path: dict[Path, LocalModel] = {}
        self.default = self._load(resolve_gguf(settings.model, settings.models_dir))
        self.aliases = {name: self._load(resolve_gguf(p, settings.models_dir)) for name, p in settings.model_map.items()}

    def _load(self, path: Path) -> LocalModel:
        key = path.resolve()
        if key not in self._by_path:
            s = self.settings
            engine = LLMEngine(
                key,
                n_slots=s.n_slots,
                n_ctx_slot=s.n_ctx_slot,
                n_batch=s.n_batch,
                n_threads=s.n_threads,
                n_gpu_layers=s.n_gpu_layers,
                max_queue=s.max_queue,
                kv_unified=s.kv_unified,
                kv_budget_bytes=s.kv_budget_mb << 20,
                extra_buffers=s.extra_buffers,
                nice=s.decode_nice,
                prefix_dir=Path(s.cache_dir) / "prefixes" / key.stem if s.keep_prefixes else None,
                speculate=s.speculate,
                turns=self.turns,
            )
            defaults = SamplingParams(temperature=s.temperature, top_p=s.top_p, top_k=s.top_k, min_p=s.min_p,
                                      repeat_penalty=s.repeat_penalty, dry_multiplier=s.dry_multiplier,
                                      call_least=s.call_least)
            self._by_path[key] = LocalModel(engine, defaults, s.default_system, s.compact_tools, s.check_calls)
        return self._by_path[key]

    def get(self, name: str) -> LocalModel:
        if name in self.aliases:
            return self.aliases[name]
        if self.strict:
            raise NotFound(f"The model '{name}' does not exist", param="model", code="model_not_found")
        return self.default

    def names(self) -> list[str]:
        return list(self.aliases) if self.strict else [self.default.name, *self.aliases]

    def all(self) -> list[LocalModel]:
        return list(self._by_path.values())

    def close(self) -> None:
        for model in self._by_path.values():
            model.engine.close()
