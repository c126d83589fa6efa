"""Which local model serves a client's model name, and how a request becomes its prompt tokens."""

from __future__ import annotations

from array import array
from pathlib import Path

from edge_ai.chat_template import JinjaTemplate, gemma_prompt
from edge_ai.config import Settings
from edge_ai.engines.llm import LLMEngine, SamplingParams
from edge_ai.errors import ContextOverflow, NotFound
from edge_ai.model_files import resolve_gguf
from edge_ai.recent import Recent
from edge_ai.request import Request

PROMPT_MEMO = 4096  # prompts whose tokens are kept (least recently used go first)


class LocalModel:
    def __init__(self, engine: LLMEngine) -> None:
        self.engine = engine
        self.name = engine.path.stem
        self._memo = Recent(PROMPT_MEMO)  # prompt fields -> tokens
        source = engine.chat_template
        self._template = (
            JinjaTemplate(source, engine.token_text(engine.bos_token), "") if source else None
        )

    def prompt_tokens(self, req: Request) -> list[int]:
        """Memoised: tokenizing a chat prompt costs ~0.6 ms here (several llama.cpp tokenizer calls over a
        262k-token vocabulary), which was most of an exact cache hit's CPU; exact hits are by definition
        prompts seen before. Kept as int32 arrays: 4 bytes a token."""
        key = (req.kind, req.prompt, req.system, req.messages, req.prefill)
        tokens = self._memo.recall(key)
        if tokens is None:
            tokens = array("i", self._tokenize(req))
            self._memo.remember(key, tokens)
        return tokens.tolist()

    def _tokenize(self, req: Request) -> list[int]:
        if req.kind == "completion":
            return self.engine.tokenize(req.prompt, add_bos=True)
        if self._template is not None:
            return self._template.prompt(self.engine, req.system, req.messages, req.prefill)
        return gemma_prompt(self.engine, req.system, req.messages, req.prefill)

    def sampling(self, req: Request, n_prompt: int, default_max_tokens: int) -> SamplingParams:
        room = self.engine.n_ctx_slot - n_prompt
        max_tokens = req.max_tokens
        if max_tokens is not None and req.clamp_max_tokens:
            max_tokens = min(max_tokens, room)
        if max_tokens is not None and max_tokens > room:
            raise ContextOverflow(
                f"this model's context is {self.engine.n_ctx_slot} tokens; the prompt uses {n_prompt}, "
                f"so max_tokens can be at most {max(room, 0)} (got {max_tokens})"
            )
        if room < 1:
            raise ContextOverflow(f"the prompt ({n_prompt} tokens) fills this model's context")
        return SamplingParams(
            temperature=1.0 if req.temperature is None else req.temperature,
            top_p=1.0 if req.top_p is None else req.top_p,
            top_k=req.top_k or 0,
            seed=req.seed,
            max_tokens=max_tokens if max_tokens is not None else min(default_max_tokens, room),
            stop=req.stop,
        )


class LocalModels:
    """Engines by GGUF file; client names map to them (unknown names use the default unless strict)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.strict = settings.strict_models
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
            )
            self._by_path[key] = LocalModel(engine)
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
