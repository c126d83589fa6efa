"""Continuous-batching inference over llama.cpp's low-level API.

Named after the concepts of llama.cpp's own server:

- **Task**: one generation request: prompt tokens, sampling parameters, and a channel of events
  (text deltas, then one `Final`) back to the asyncio caller.
- **Slot**: one sequence (`seq_id`) of the shared context. It keeps the tokens whose KV it holds
  after its task ends, so the next task with the same prefix skips recomputing it.
- **Scheduler loop** (one thread): each step builds one `llama_batch` holding the next token of
  every decoding slot plus prompt chunks of newly admitted ones (chunked prefill), runs one
  `llama_decode`, and samples a token for every slot that has logits in that batch. New tasks join
  between steps; a finished or cancelled task frees its slot at once.

- **Draft** (speculation, in the step): a decoding slot may add tokens guessed from its own context
  (engines/draft.py) after its pending token; the step computes logits for all of them, `_verify` keeps
  the run the model itself would have produced and removes the rest from the slot's KV.

Admission is bounded: past `max_queue` waiting tasks, `submit` raises `Overloaded`.
"""

from __future__ import annotations

import asyncio
import codecs
import ctypes
import json
import logging
import os
import re
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import AsyncIterator

import numpy as np

from edge_ai.engines.draft import NgramDraft
from edge_ai.engines.priority import CpuTurns, bound_spinning, lower_priority

bound_spinning()  # before llama.cpp's OpenMP runtime is loaded, which reads its settings once
import llama_cpp as ll  # noqa: E402

from edge_ai.errors import ContextOverflow, Overloaded
from edge_ai.request import Final

log = logging.getLogger("edge_ai.llm")


class EngineError(RuntimeError):
    """llama_decode failed; the tasks in that step are failed, the engine goes on."""


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    repeat_penalty: float = 1.0  # llama.cpp's: divides the logit of a token seen in the last 64
    frequency_penalty: float = 0.0  # OpenAI's: less each time a token was seen
    presence_penalty: float = 0.0  # OpenAI's: less once a token was seen
    dry_multiplier: float = 0.0  # llama.cpp's DRY: penalises continuing a sequence the answer already holds
    seed: int | None = None
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    grammar: str | None = None  # GBNF the answer must match (structured output, forced tool calls)
    # With triggers the grammar is lazy: the answer is free until one of these regexes is found in it, and
    # from the regex's first group on it must match the grammar (a tool call the model chose to begin).
    grammar_triggers: tuple[str, ...] = ()
    # With triggers: a call may open only where the model's probability of opening one (all the tokens a
    # call can begin with, together) is at least this (see LLMEngine._weigh_call)
    call_least: float = 0.0
    # A question with a few answers, each a group of first tokens: the task takes one token, from these
    # groups, and its Final carries each group's probability (choice_weights): the model's judgement,
    # not only its pick
    choices: tuple[tuple[int, ...], ...] = ()

    @property
    def counts_penalised(self) -> bool:
        """A penalty on tokens by how often they were seen (llama.cpp's penalties sampler)."""
        return self.repeat_penalty != 1.0 or self.frequency_penalty != 0.0 or self.presence_penalty != 0.0

    @property
    def penalised(self) -> bool:
        return self.counts_penalised or self.dry_multiplier > 0.0

    @property
    def greedy_under_penalties(self) -> bool:
        """Greedy after penalties that only lower the logits of tokens the answer holds (see _penalised_argmax)."""
        return (
            (self.temperature <= 0.0 or self.top_k == 1) and self.penalised
            and self.repeat_penalty >= 1.0 and self.frequency_penalty >= 0.0 and self.presence_penalty >= 0.0
        )

    @property
    def greedy(self) -> bool:
        """Greedy with nothing to apply first: the engine takes the argmax of the logits itself."""
        return (self.temperature <= 0.0 or self.top_k == 1) and not self.penalised and self.grammar is None


class Task:
    """One request's generation; its events cross from the scheduler thread to the event loop."""

    def __init__(self, tokens: list[int], params: SamplingParams, loop: asyncio.AbstractEventLoop) -> None:
        self.tokens = tokens
        self.params = params
        self.cancelled = False
        self.enqueued_at = time.perf_counter()
        self._loop = loop
        self._events: asyncio.Queue[str | Final | BaseException] = asyncio.Queue()

    def emit(self, event: str | Final | BaseException) -> None:
        self._loop.call_soon_threadsafe(self._events.put_nowait, event)

    def cancel(self) -> None:
        self.cancelled = True  # the scheduler frees the slot before its next step

    async def stream(self) -> AsyncIterator[str | Final]:
        """Yield text deltas, then the final `Final`. Cancels the task if the consumer leaves."""
        try:
            while True:
                event = await self._events.get()
                if isinstance(event, BaseException):
                    raise event
                yield event
                if isinstance(event, Final):
                    return
        finally:
            self.cancel()

    async def result(self) -> Final:
        async for event in self.stream():
            if isinstance(event, Final):
                return event
        raise EngineError("generation ended without a result")


class StopMatcher:
    """Finds stop strings across token boundaries; holds back text that may be a stop's beginning."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = tuple(s for s in stops if s)
        self.text = ""
        self.sent = 0
        self.matched: str | None = None

    def feed(self, piece: str) -> tuple[str, bool]:
        """Add generated text; return (text safe to emit now, stopped)."""
        start = max(0, len(self.text) - max((len(s) for s in self.stops), default=0))
        self.text += piece
        if not self.stops:
            return self._emit(len(self.text)), False
        found = [(i, s) for s in self.stops if (i := self.text.find(s, start)) >= 0]
        if found:
            cut, self.matched = min(found)
            self.text = self.text[:cut]
            return self._emit(cut), True
        hold = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(self.text)), hold, -1):
                if self.text.endswith(s[:k]):
                    hold = k
                    break
        return self._emit(len(self.text) - hold), False

    def flush(self) -> str:
        return self._emit(len(self.text))

    def _emit(self, upto: int) -> str:
        upto = max(upto, self.sent)
        out, self.sent = self.text[self.sent : upto], upto
        return out


# A request goes to a slot away from the packed low ones only when that slot's KV saves at least this
# many prompt tokens: an extra ubatch costs ~20% of a step for the request's whole life, 64+ steps here.
REUSE_OVER_PACKING = 128

@dataclass
class Slot:
    id: int
    cache_tokens: list[int] = field(default_factory=list)  # tokens whose KV this sequence holds
    task: Task | None = None
    n_prefilled: int = 0
    pending: int | None = None  # sampled token not yet decoded
    n_generated: int = 0
    sampler: ctypes.c_void_p | None = None
    grammar: ctypes.c_void_p | None = None  # checked apart from the sampler chain (see _sample_constrained)
    seen: set[int] | None = None  # tokens generated so far, when only they can be penalised (_penalised_argmax)
    call_begins: re.Pattern[str] | None = None  # a lazy grammar's triggers: where a tool call begins
    in_call: bool = False  # the answer has begun a call: decoded greedy without penalties from here
    call_belief: float | None = None  # the model's highest probability of opening a call (see _weigh_call)
    choice_weights: tuple[float, ...] = ()  # a choice task's groups' probabilities (SamplingParams.choices)
    line_start: bool = True  # the answer so far is empty or ends a line (spaces aside): a call may open here
    drafted: int = 0  # this answer's draft tokens decoded, and those kept
    accepted: int = 0
    decoder: codecs.IncrementalDecoder | None = None
    matcher: StopMatcher | None = None
    started: int = 0  # admission order, for fair prefill
    drafts: NgramDraft = field(default_factory=NgramDraft)
    draft: list[int] = field(default_factory=list)  # tokens guessed after `pending` in this step
    draft_source: str = ""  # where they were found: "prompt" or "answer"

    @property
    def free(self) -> bool:
        return self.task is None


@dataclass
class EngineStats:
    steps: int = 0
    prompt_tokens: int = 0  # prompt tokens computed
    prompt_tokens_reused: int = 0  # prompt tokens taken from a slot's KV instead
    generated_tokens: int = 0
    rejected: int = 0
    decode_s: float = 0.0  # time inside llama_decode
    batch_tokens: int = 0  # tokens over all steps (batch fill = batch_tokens / steps)
    drafted_from_prompt: int = 0  # draft tokens decoded, found in the prompt
    accepted_from_prompt: int = 0  # of those, the ones the model would have produced
    drafted_from_answer: int = 0  # the same, for drafts found in the answer so far
    accepted_from_answer: int = 0


_log_callback = None

PREFIX_LEAST = 256  # shorter prompt prefixes are cheap to compute again: not kept across a restart
PREFIXES_KEPT = 4  # SmolLM2 at 3,000 tokens: ~70 MB each on disk
# How many drafted tokens a step may take: DRAFT_STEP_TOKENS less DRAFT_ROW_COST for each decoding slot.
# A CPU step of a few tokens costs little more than one (the weights are read once either way); past ~16
# each token costs ~13 ms (Qwen2.5-Coder-1.5B). Alone, a slot's step of one costs 76 ms, so a drafted
# token pays when 1 in 6 is kept, and a long draft (NgramDraft's lengths grow only while kept whole) pays
# most: a one-client rewrite went 2.6x -> 3.5x with 64 against 16 (BENCHMARKS.md). With 16 slots decoding
# the step is compute-bound: a drafted token pays only when 7 in 10 are kept, and 48 tokens of room there
# measured 0.96x on the same rewrite. So the room shrinks as the step fills, and is gone at 16.
DRAFT_STEP_TOKENS = 64
DRAFT_ROW_COST = 4
CALL_TRIGGER_SPAN = 256  # longer than any text a tool call's trigger pattern matches (a fence or tag, "{", a name)


def _silence_llama_logs() -> None:
    """llama.cpp logs every load detail to stderr; keep it quiet unless EDGE_AI_LLAMA_LOG is set."""
    global _log_callback
    if os.environ.get("EDGE_AI_LLAMA_LOG") or _log_callback is not None:
        return

    @ll.llama_log_callback
    def _quiet(level, text, user_data):  # noqa: ANN001
        return None

    _log_callback = _quiet
    ll.llama_log_set(_log_callback, ctypes.c_void_p())


class LLMEngine:
    """One GGUF model, one context with `n_slots` sequences, one scheduler thread."""

    def __init__(
        self,
        path: str | Path,
        *,
        n_slots: int = 16,
        n_ctx_slot: int | None = None,
        kv_budget_bytes: int = 4 << 30,
        n_batch: int = 512,
        n_threads: int = 0,
        n_gpu_layers: int = 0,
        max_queue: int = 64,
        kv_unified: bool = False,
        extra_buffers: bool = False,
        nice: int = 0,
        prefix_dir: str | Path | None = None,
        speculate: bool = False,
        turns: CpuTurns | None = None,
    ) -> None:
        _silence_llama_logs()
        ll.llama_backend_init()
        self.path = Path(path)
        self.n_slots = n_slots
        self.n_batch = n_batch
        self.max_queue = max_queue
        self.kv_unified = kv_unified
        self.nice = nice
        # a decode on the CPU waits for the embedder's passes (CpuTurns); one on a GPU shares no cores with it
        self.turns = turns if n_gpu_layers == 0 else None
        threads = n_threads or os.cpu_count() or 1

        mparams = ll.llama_model_default_params()
        mparams.n_gpu_layers = n_gpu_layers if n_gpu_layers >= 0 else 999
        # llama.cpp's extra CPU weight layouts (AMX tiles, repacked Q4_0/Q4_K): AMX dies with SIGILL on VMs
        # whose CPU reports AMX that the kernel does not enable (seen on this project's CI machines), and
        # repacked weights run one kernel for one row and another for four, so a sequence's logits would
        # depend on how many others share its step. Plain layouts keep every row's arithmetic its own.
        mparams.use_extra_bufts = extra_buffers
        self.model = ll.llama_model_load_from_file(str(self.path).encode(), mparams)
        if not self.model:
            raise RuntimeError(f"could not load GGUF model {self.path}")
        self.vocab = ll.llama_model_get_vocab(self.model)
        self.n_vocab = ll.llama_vocab_n_tokens(self.vocab)
        self.n_ctx_train = ll.llama_model_n_ctx_train(self.model)
        self.n_ctx_slot = n_ctx_slot or self._fit_context(kv_budget_bytes)

        cparams = ll.llama_context_default_params()
        cparams.n_ctx = self.n_ctx_slot * n_slots
        cparams.n_batch = n_batch
        cparams.n_ubatch = n_batch
        cparams.n_seq_max = n_slots
        cparams.n_threads = threads
        cparams.n_threads_batch = threads
        # Per-slot KV buffers (the default) keep each sequence's arithmetic independent of the others:
        # greedy output is identical alone or in a batch. They need each step's sequences consecutive
        # and in order to run as one ubatch (see _place and _step); then a unified buffer, whose results
        # depend on the batch in the last bits, is no faster (BENCHMARKS.md).
        cparams.kv_unified = kv_unified
        # Sliding-window layers keep only their window: ~14% faster decoding at 16 slots than keeping
        # everything. A prefix is then reusable only while its window is still held (see _admit).
        cparams.swa_full = False
        cparams.no_perf = True
        self.ctx = ll.llama_init_from_model(self.model, cparams)
        if not self.ctx:
            raise RuntimeError("could not create the llama.cpp context")
        self.mem = ll.llama_get_memory(self.ctx)
        self.n_swa = ll.llama_model_n_swa(self.model)
        # not with sliding-window layers: a draft's cells push the window on, and removing rejected ones
        # cannot bring back the cells it pushed out
        self.speculate = speculate and self.n_swa <= 0

        self.batch = ll.llama_batch_init(n_batch, 0, 1)
        self._b_token = np.ctypeslib.as_array(self.batch.token, shape=(n_batch,))
        self._b_pos = np.ctypeslib.as_array(self.batch.pos, shape=(n_batch,))
        self._b_logits = np.ctypeslib.as_array(self.batch.logits, shape=(n_batch,))
        self._b_seq = [np.ctypeslib.as_array(self.batch.seq_id[i], shape=(1,)) for i in range(n_batch)]
        np.ctypeslib.as_array(self.batch.n_seq_id, shape=(n_batch,))[:] = 1

        self.slots = [Slot(i) for i in range(n_slots)]
        self._dry_templates: dict[float, ctypes.c_void_p] = {}  # DRY multiplier -> a sampler to clone (_dry)
        self.stats = EngineStats()
        self._waiting: deque[Task] = deque()
        self._cond = threading.Condition()
        self._admitted = 0
        self._stopping = False
        self._pieces = threading.local()  # one buffer per thread: the scheduler and the event loop both detokenize
        self.prefix_dir = Path(prefix_dir) if prefix_dir is not None and self.n_swa <= 0 else None
        if self.prefix_dir is not None:
            self._restore_prefixes()
        self._thread = threading.Thread(target=self._run, name=f"llm-{self.path.stem}", daemon=True)
        self._thread.start()

    # ---- model facts and tokenizer -------------------------------------------------------

    def kv_bytes_per_token(self) -> int:
        """f16 K and V over all layers: what one token of context costs in every slot."""
        arch = self.meta("general.architecture") or ""
        n_embd, n_head = ll.llama_model_n_embd(self.model), max(ll.llama_model_n_head(self.model), 1)
        k = int(self.meta(f"{arch}.attention.key_length") or n_embd // n_head)
        v = int(self.meta(f"{arch}.attention.value_length") or n_embd // n_head)
        return ll.llama_model_n_layer(self.model) * ll.llama_model_n_head_kv(self.model) * (k + v) * 2

    def _fit_context(self, budget: int) -> int:
        """The context the model was trained for, cut (to a multiple of 256) to what the budget holds."""
        fits = budget // (self.n_slots * self.kv_bytes_per_token()) // 256 * 256
        return max(256, min(self.n_ctx_train or 4096, fits))

    def meta(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(1 << 16)
        n = ll.llama_model_meta_val_str(self.model, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8", "replace") if n >= 0 else None

    @property
    def chat_template(self) -> str | None:
        return self.meta("tokenizer.chat_template")

    def token_text(self, token: int) -> str:
        return self._piece(token, special=True).decode("utf-8", "replace")

    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = False) -> list[int]:
        data = text.encode("utf-8")
        n_max = len(data) + 8
        buf = (ll.llama_token * n_max)()
        n = ll.llama_tokenize(self.vocab, data, len(data), buf, n_max, add_bos, special)
        if n < 0:
            buf = (ll.llama_token * -n)()
            n = ll.llama_tokenize(self.vocab, data, len(data), buf, -n, add_bos, special)
        return list(buf[:n])

    def detokenize(self, tokens: list[int]) -> str:
        return b"".join(self._piece(t) for t in tokens).decode("utf-8", "replace")

    def _piece(self, token: int, special: bool = False) -> bytes:
        # A buffer shared across threads let an event-loop call (a chat template's BOS text, a prompt being
        # cut) overwrite a decoding slot's piece between the write and the read: "The" came out as "<|i".
        buf = getattr(self._pieces, "buf", None)
        if buf is None:
            buf = self._pieces.buf = ctypes.create_string_buffer(256)
        n = ll.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        if n < 0:
            big = ctypes.create_string_buffer(-n)
            n = ll.llama_token_to_piece(self.vocab, token, big, -n, 0, special)
            return big.raw[:n]
        return buf.raw[:n]

    @property
    def bos_token(self) -> int:
        return ll.llama_vocab_bos(self.vocab)

    # ---- admission ------------------------------------------------------------------------

    def submit(self, tokens: list[int], params: SamplingParams) -> Task:
        """Queue a generation. Raises ContextOverflow or Overloaded; never blocks."""
        if not tokens:
            raise ContextOverflow("the prompt is empty")
        if len(tokens) + params.max_tokens > self.n_ctx_slot:
            raise ContextOverflow(
                f"prompt ({len(tokens)} tokens) plus max_tokens ({params.max_tokens}) exceeds the "
                f"context of {self.n_ctx_slot} tokens"
            )
        task = Task(tokens, params, asyncio.get_running_loop())
        with self._cond:
            self._check_room()
            self._waiting.append(task)
            self._cond.notify()
        return task

    def check_room(self) -> None:
        """Raise Overloaded now if a generation submitted now would be: a caller can refuse before it pays
        for a prompt (tokenizing one costs about a millisecond of the event loop)."""
        with self._cond:
            self._check_room()

    def _check_room(self) -> None:
        if sum(1 for s in self.slots if not s.free) + len(self._waiting) >= self.n_slots + self.max_queue:
            self.stats.rejected += 1
            raise Overloaded("all local model slots are busy and the queue is full", retry_after=1)

    def load(self) -> dict[str, object]:
        with self._cond:
            return {
                "slots": self.n_slots,
                "slots_busy": sum(1 for s in self.slots if not s.free),
                "queue_depth": len(self._waiting),
                "queue_limit": self.max_queue,
                **asdict(self.stats),
            }

    def close(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout=30)
        if self.prefix_dir is not None and not self._thread.is_alive():
            try:
                self._save_prefixes()
            except OSError as exc:  # a full or read-only disk: the next start is cold, nothing more
                log.warning("prompt prefixes not kept: %s", exc)
        for template in self._dry_templates.values():
            ll.llama_sampler_free(template)
        ll.llama_batch_free(self.batch)
        ll.llama_free(self.ctx)
        ll.llama_model_free(self.model)

    # ---- prefixes kept across a restart ----------------------------------------------------
    # An agent resends a prefix of thousands of tokens (system prompt, tools) with every request; cold,
    # it costs ~18 s of prefill here, reused ~0.5 s (BENCHMARKS.md). At shutdown the longest prefixes the
    # slots hold are saved with their KV (llama.cpp's sequence state files), and loaded into slots at
    # start when the model file and the slot layout are the same. Not for sliding-window models: their
    # caches keep only the window.

    def _identity(self) -> dict[str, object]:
        st = self.path.stat()
        return {"model": str(self.path), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "n_ctx_slot": self.n_ctx_slot,
                "kv_unified": self.kv_unified, "n_slots": self.n_slots}

    def _save_prefixes(self) -> int:
        assert self.prefix_dir is not None
        chosen: list[list[int]] = []
        for slot in sorted(self.slots, key=lambda s: -len(s.cache_tokens)):
            toks = slot.cache_tokens
            if len(toks) < PREFIX_LEAST or any(_common_prefix(c, toks) == len(toks) for c in chosen):
                continue
            chosen.append(toks)
            path = self.prefix_dir / f"prefix-{len(chosen) - 1}.bin"
            self.prefix_dir.mkdir(parents=True, exist_ok=True)
            arr = (ll.llama_token * len(toks))(*toks)
            if not ll.llama_state_seq_save_file(self.ctx, str(path).encode(), slot.id, arr, len(toks)):
                chosen.pop()
                path.unlink(missing_ok=True)  # a part-written file is never loaded: no manifest names it
            if len(chosen) == PREFIXES_KEPT:
                break
        if chosen:
            manifest = {**self._identity(), "prefixes": [len(c) for c in chosen]}
            (self.prefix_dir / "prefixes.json").write_text(json.dumps(manifest))
            log.info("kept %d prompt prefixes (%s tokens) for the next start", len(chosen), [len(c) for c in chosen])
        return len(chosen)

    def _restore_prefixes(self) -> int:
        assert self.prefix_dir is not None
        manifest_path = self.prefix_dir / "prefixes.json"
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError):
            return 0
        manifest_path.unlink()  # used once: the next shutdown writes what the slots hold then
        counts = manifest.pop("prefixes", [])
        if manifest != self._identity():
            return 0  # another model file or slot layout: the KV would be wrong
        restored = 0
        for i, _ in enumerate(counts[: self.n_slots]):
            path = self.prefix_dir / f"prefix-{i}.bin"
            out = (ll.llama_token * self.n_ctx_slot)()
            n = ctypes.c_size_t(0)
            if ll.llama_state_seq_load_file(self.ctx, str(path).encode(), i, out, self.n_ctx_slot, ctypes.byref(n)):
                self.slots[i].cache_tokens = list(out[: n.value])
                restored += 1
            else:
                ll.llama_memory_seq_rm(self.mem, i, 0, -1)
        if restored:
            log.info("restored %d prompt prefixes (%s tokens)", restored, [len(s.cache_tokens) for s in self.slots[:restored]])
        return restored

    # ---- scheduler loop (engine thread) ----------------------------------------------------

    def _run(self) -> None:
        lower_priority(self.nice)  # its OpenMP workers, started by its first decode, inherit it
        while True:
            with self._cond:
                while not self._stopping and not self._waiting and all(s.free for s in self.slots):
                    self._cond.wait()
                if self._stopping:
                    break
                self._admit()
            self._drop_cancelled()
            if any(not s.free for s in self.slots):
                if self.turns is not None:
                    self.turns.before_step()
                try:
                    self._step()
                except Exception as exc:  # never let one bad step kill the engine thread
                    log.exception("decode step failed")
                    for slot in self.slots:
                        if slot.task is not None:
                            self._release(slot, error=EngineError(str(exc)))
        for slot in self.slots:
            if slot.task is not None:
                self._release(slot, error=EngineError("engine stopped"))

    def _admit(self) -> None:
        """Move waiting tasks into free slots (see _place), reusing the KV of the prefix they share."""
        while self._waiting:
            free = [s for s in self.slots if s.free]
            if not free:
                return
            task = self._waiting.popleft()
            if task.cancelled:
                continue
            # A seed promises the same answer again. Reused KV changes how the prompt's last token is
            # computed (one row instead of inside the prefill, another kernel, other rounding), which
            # moved one seeded sample in five: a seeded task takes the lowest free slot and prefills it all.
            if task.params.seed is not None:
                slot, keep = free[0], 0
            elif task.params.choices:
                # a choice lives one step: it takes the free slot holding least, not a conversation's
                # prefix that the conversation's next turn would have to prefill again
                slot = min(free, key=lambda s: len(s.cache_tokens))
                keep = min(_common_prefix(slot.cache_tokens, task.tokens), len(task.tokens) - 1)
            else:
                slot, keep = self._place(free, task.tokens)
            if not self._window_held(slot.id, keep) or not ll.llama_memory_seq_rm(self.mem, slot.id, keep, -1):
                ll.llama_memory_seq_rm(self.mem, slot.id, 0, -1)
                keep = 0
            del slot.cache_tokens[keep:]
            self.stats.prompt_tokens_reused += keep
            self._admitted += 1
            slot.task, slot.n_prefilled, slot.pending, slot.n_generated = task, keep, None, 0
            slot.started = self._admitted
            slot.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            slot.matcher = StopMatcher(task.params.stop)
            slot.sampler = slot.grammar = None
            slot.seen = set() if task.params.greedy_under_penalties else None
            triggers = task.params.grammar_triggers
            slot.call_begins, slot.in_call = (re.compile("|".join(triggers)) if triggers else None), False
            slot.call_belief, slot.choice_weights, slot.line_start, slot.drafted, slot.accepted = None, (), True, 0, 0
            slot.drafts.reset(len(task.tokens))
            slot.draft, slot.draft_source = [], ""
            try:  # a sampler that cannot be made fails its task, never the engine thread
                slot.sampler = None if task.params.greedy else self._sampler_for(task.params)
                if task.params.grammar:
                    slot.grammar = _make_grammar(self.vocab, task.params.grammar, task.params.grammar_triggers)
            except Exception as exc:
                self._release(slot, error=exc if isinstance(exc, EngineError) else EngineError(str(exc)))

    def _place(self, free: list[Slot], tokens: list[int]) -> tuple[Slot, int]:
        """The lowest free slot, unless another one holds a prefix long enough to be worth more.

        With per-slot KV, llama.cpp runs a step as one ubatch only over consecutive sequence ids
        (`split_equal(sequential)`): every gap in the busy slots costs one more pass through the whole
        model on every step of the request's life. Packing requests into the lowest slots keeps the
        busy set contiguous; a slot elsewhere is taken only for a long reusable prefix (earlier turns)."""
        reuse = [min(_common_prefix(s.cache_tokens, tokens), len(tokens) - 1) for s in free]  # last token re-runs for logits
        best = max(range(len(free)), key=lambda i: reuse[i])
        if self.kv_unified or reuse[best] >= reuse[0] + REUSE_OVER_PACKING:
            return free[best], reuse[best]
        return free[0], reuse[0]

    def _window_held(self, seq: int, keep: int) -> bool:
        """A sliding-window cache drops old cells; continuing at `keep` needs the window before it."""
        if keep == 0 or self.n_swa <= 0:
            return True
        return 0 <= ll.llama_memory_seq_pos_min(self.mem, seq) <= max(0, keep - self.n_swa)

    def _sampler_for(self, p: SamplingParams) -> ctypes.c_void_p:
        return _make_sampler(p, self.n_vocab, self._dry(p.dry_multiplier) if p.dry_multiplier > 0.0 else None)

    def _dry(self, multiplier: float) -> ctypes.c_void_p:
        """A fresh DRY sampler. Making one scans the vocabulary for its breakers (~14 ms, on the scheduler
        thread, for every request); a clone of one made before costs ~0.03 ms."""
        template = self._dry_templates.get(multiplier)
        if template is not None:
            return ll.llama_sampler_clone(template)
        breakers = (ctypes.c_char_p * len(DRY_BREAKERS))(*DRY_BREAKERS)
        made = ll.llama_sampler_init_dry(
            self.vocab, multiplier, DRY_BASE, DRY_ALLOWED_LENGTH, self.n_ctx_slot, breakers, len(DRY_BREAKERS))
        if not made:
            raise EngineError("the DRY sampler could not be made")
        if len(self._dry_templates) >= DRY_TEMPLATES_KEPT:  # clients can send any multiplier: keep a few
            return made
        self._dry_templates[multiplier] = made
        return ll.llama_sampler_clone(made)

    def _drop_cancelled(self) -> None:
        for slot in self.slots:
            if slot.task is not None and slot.task.cancelled:
                self._release(slot)

    def _step(self) -> None:
        # what each busy slot puts into this step: its pending token (and a draft after it), or a prompt
        # chunk (the token budget goes to the oldest admissions first)
        work: list[tuple[Slot, list[int], int]] = []  # (slot, tokens, first position)
        budget = self.n_batch
        active = sorted((s for s in self.slots if not s.free), key=lambda s: s.started)
        decoding = [s for s in active if s.pending is not None]
        # no drafts beside a prompt being prefilled: that step is compute-bound already, and each drafted
        # token costs what a prompt token does (16 clients: 0.89x with them, BENCHMARKS.md)
        prefilling = any(s.task is not None and s.n_prefilled < len(s.task.tokens) for s in active)
        spare = DRAFT_STEP_TOKENS - DRAFT_ROW_COST * len(decoding) if self.speculate and not prefilling else 0
        for slot in decoding:
            assert slot.pending is not None and slot.task is not None
            slot.draft, slot.draft_source = [], ""
            if spare > 0:
                room = min(spare, self.n_ctx_slot - len(slot.cache_tokens) - 2,
                           slot.task.params.max_tokens - slot.n_generated - 1)
                slot.draft, slot.draft_source = slot.drafts.propose(slot.cache_tokens + [slot.pending], room,
                                                                    shared=len(decoding) > 1)
                spare -= len(slot.draft)
            work.append((slot, [slot.pending, *slot.draft], len(slot.cache_tokens)))
            slot.pending = None
            budget -= 1 + len(slot.draft)
        for slot in active:
            assert slot.task is not None
            todo = len(slot.task.tokens) - slot.n_prefilled
            if todo <= 0 or budget <= 0:
                continue
            take = min(todo, budget)
            work.append((slot, slot.task.tokens[slot.n_prefilled : slot.n_prefilled + take], slot.n_prefilled))
            slot.n_prefilled += take
            self.stats.prompt_tokens += take
            budget -= take
        # written in sequence-id order: llama.cpp groups consecutive ids into one ubatch
        n = 0
        rows: list[tuple[Slot, int]] = []  # (slot, its first row with logits)
        for slot, tokens, pos0 in sorted(work, key=lambda w: w[0].id):
            take = len(tokens)
            self._b_token[n : n + take] = tokens
            self._b_pos[n : n + take] = np.arange(pos0, pos0 + take)
            self._b_logits[n : n + take] = 0
            for i in range(n, n + take):
                self._b_seq[i][0] = slot.id
            slot.cache_tokens.extend(tokens)
            n += take
            assert slot.task is not None
            if len(slot.cache_tokens) >= len(slot.task.tokens):  # a generated token, or the prompt's last chunk
                first = n - 1 - len(slot.draft)  # the pending token's row, then one per draft token
                self._b_logits[first:n] = 1
                rows.append((slot, first))
        if n == 0:
            return
        self.batch.n_tokens = n
        t0 = time.perf_counter()
        rc = ll.llama_decode(self.ctx, self.batch)
        self.stats.decode_s += time.perf_counter() - t0
        self.stats.steps += 1
        self.stats.batch_tokens += n
        if rc != 0:
            raise EngineError(f"llama_decode returned {rc}")
        for slot, row in rows:
            if slot.draft:
                self._verify(slot, row)
            else:
                self._sample(slot, row)

    def _sample(self, slot: Slot, row: int) -> None:
        token = self._pick(slot, row)
        if self._take(slot, token, len(slot.cache_tokens)):
            slot.pending = token

    def _verify(self, slot: Slot, row: int) -> None:
        """The slot's pending token and draft were decoded at rows row, row+1, …: pick a token from each
        row as `_sample` would, in order, while the pick is the draft's next token. The first pick that is
        not (or the pick after the whole draft) becomes the pending token; the draft tokens after it are
        removed from the KV. Each pick sees the sampler state of the picks before it, exactly as without
        a draft, so the answer is the same (greedy: token for token)."""
        draft, source = slot.draft, slot.draft_source
        slot.draft, slot.draft_source = [], ""
        base = len(slot.cache_tokens) - len(draft)  # context length up to and with the pending token
        accepted = 0
        slot.drafted += len(draft)  # counted before a pick can end the answer (its Final carries the counts)
        for i in range(len(draft) + 1):
            token = self._pick(slot, row + i)
            hit = i < len(draft) and token == draft[i]
            accepted += hit
            slot.accepted += hit
            going = self._take(slot, token, base + i)
            if not hit or not going:
                keep = base + i + hit  # an accepted draft token's KV is the answer's; the rest is removed
                ll.llama_memory_seq_rm(self.mem, slot.id, keep, -1)
                del slot.cache_tokens[keep:]
                if going:
                    slot.pending = token
                break
        slot.drafts.settle(len(draft), accepted)
        if source == "prompt":
            self.stats.drafted_from_prompt += len(draft)
            self.stats.accepted_from_prompt += accepted
        else:
            self.stats.drafted_from_answer += len(draft)
            self.stats.accepted_from_answer += accepted

    def _pick(self, slot: Slot, row: int) -> int:
        """The next token from batch row `row`'s logits, under the slot's sampler and grammar."""
        if slot.n_generated == 0:
            # An empty answer answers nothing: Qwen2.5-Coder-1.5B, shown Codex's failed attempt to create a
            # file, ended its turn at once (end-of-turn 0.30, a new turn's tag 0.29), and the agent stopped
            # with no file and no word. Its first token is never an end (nor a control token).
            self._logits(row)[self._no_start()] = -np.inf
            if slot.task is not None and slot.task.params.choices:
                self._weigh_choices(slot, row)
        if slot.call_begins is not None and not slot.in_call and slot.line_start and slot.matcher is not None \
                and slot.matcher.text.count("```") % 2 == 0:  # not inside a code block (nor after a call's fence)
            self._weigh_call(slot, row)
        if slot.grammar is not None:
            return self._sample_constrained(slot, row)
        if slot.sampler is None:
            return int(self._logits(row).argmax())
        if slot.seen is not None:
            token = _penalised_argmax(slot.sampler, self._logits(row), slot.seen)
            ll.llama_sampler_accept(slot.sampler, token)
            slot.seen.add(token)
            return token
        return ll.llama_sampler_sample(slot.sampler, self.ctx, row)

    def _weigh_choices(self, slot: Slot, row: int) -> None:
        """Each group's share of the probability; then only the groups' tokens may be picked."""
        assert slot.task is not None
        logits = self._logits(row)
        weights = np.exp(logits - logits.max())
        total = float(weights.sum())
        groups = [np.fromiter(set(g), dtype=np.int64) for g in slot.task.params.choices]
        slot.choice_weights = tuple(float(weights[g].sum()) / total for g in groups)
        allowed = np.zeros(len(logits), dtype=bool)
        for g in groups:
            allowed[g] = True
        logits[~allowed] = -np.inf

    def _weigh_call(self, slot: Slot, row: int) -> None:
        """With tools offered, at the answer's start and at a line's start outside a code block where its
        likeliest next token would open a call: the model's probability of opening one there (the tokens a
        call can begin with, a fence, a tag, `{` or `[`, together). Below the task's call_least no call
        opens there: those tokens are ruled out of this pick. Greedy takes the single likeliest token, and
        a call opens with one of a few tokens while an answer in words spreads over many, so a model unsure
        whether to call would call (Qwen2.5-Coder-1.5B opened one for "tell me facts about octopuses" at
        0.28; BENCHMARKS.md). Elsewhere in a line, or inside a code block, those tokens are code in the
        text (or a call's own `{` after its fence): not weighed. The highest probability weighed is the
        answer's call_belief."""
        assert slot.task is not None
        logits = self._logits(row)
        starts, opener = self._call_starts()
        if slot.n_generated > 0 and not opener[int(logits.argmax())]:
            return  # the model is not about to open a call: nothing to weigh (one argmax, ~30 us)
        weights = np.exp(logits - logits.max())
        belief = float(weights[starts].sum() / weights.sum())
        slot.call_belief = belief if slot.call_belief is None else max(slot.call_belief, belief)
        if belief < slot.task.params.call_least:
            logits[starts] = -np.inf  # llama.cpp's buffer: every sampling path below reads this row

    def _no_start(self) -> np.ndarray:
        """The tokens an answer may not begin with: ends of generation and control tokens (a call's tag,
        such as Qwen2.5's <tool_call>, is not one)."""
        if getattr(self, "_no_start_ids", None) is None:
            self._no_start_ids = np.array([t for t in range(self.n_vocab) if ll.llama_vocab_is_eog(self.vocab, t)
                                           or ll.llama_vocab_is_control(self.vocab, t)], dtype=np.int64)
        return self._no_start_ids

    def _call_starts(self) -> tuple[np.ndarray, np.ndarray]:
        """The tokens a tool call can begin with (after spaces): a fence, a tool tag, `{` or `[`, or the first
        part of one (ruled out, "```" alone came back as "``" then "`"); as ids and as a mask by id. Built
        on the first request with tools: ~0.35 s for Qwen2.5's 152k-token vocabulary, once."""
        if getattr(self, "_call_start_ids", None) is None:
            opens = (b"{", b"[", b"```", b"<tool_call>", b"<tools>")

            def opens_call(piece: bytes) -> bool:
                piece = piece.lstrip(b" \t\r\n")
                return bool(piece) and (piece.startswith(opens) or any(o.startswith(piece) for o in opens))

            mask = np.array([opens_call(self._piece(t, special=True)) for t in range(self.n_vocab)], dtype=bool)
            self._call_start_ids, self._call_opener = np.flatnonzero(mask), mask
        return self._call_start_ids, self._call_opener

    def _take(self, slot: Slot, token: int, decoded: int) -> bool:
        """Add a picked token to the slot's answer (`decoded`: the context tokens whose KV precedes it);
        False when the answer ends with it."""
        task = slot.task
        assert task is not None and slot.decoder is not None and slot.matcher is not None
        slot.n_generated += 1
        self.stats.generated_tokens += 1
        if ll.llama_vocab_is_eog(self.vocab, token):
            self._finish(slot, "stop")
            return False
        piece = self._piece(token)
        delta, stopped = slot.matcher.feed(slot.decoder.decode(piece))
        if delta:
            task.emit(delta)
        if slot.call_begins is not None and not slot.in_call:  # only an answer that may still open a call
            if b"\n" in piece:  # needs to know where its lines start (see _weigh_call)
                slot.line_start = not piece.rsplit(b"\n", 1)[1].strip(b" \t")
            elif piece.strip(b" \t"):
                slot.line_start = False
            # a trigger ends at the newest token: search the answer's tail, not all of it on every token
            # (`^` still matches only at the answer's start)
            text = slot.matcher.text
            slot.in_call = slot.call_begins.search(text, max(0, len(text) - CALL_TRIGGER_SPAN)) is not None
        if stopped:
            self._finish(slot, "stop")
            return False
        if slot.n_generated >= task.params.max_tokens or decoded + 1 >= self.n_ctx_slot:
            self._finish(slot, "length")
            return False
        return True

    def _sample_constrained(self, slot: Slot, row: int) -> int:
        """Sample as usual, then check that one token against the grammar; only when it is refused is the
        grammar applied to the whole vocabulary and the sample drawn again. Checking a grammar over 49k-262k
        candidates on every step would hold up every other slot's step (llama.cpp's server does the same)."""
        assert slot.sampler is not None and slot.grammar is not None
        logits = self._logits(row)
        if slot.seen is not None and not slot.in_call:  # greedy under lowering penalties: the answer's own
            token = _penalised_argmax(slot.sampler, logits, slot.seen)  # tokens and the best other
        elif slot.seen is not None:  # greedy inside a tool call: a call copies paths and strings from the
            token = int(logits.argmax())  # context, which penalties on repeats would mangle
        else:
            cands = self._candidates(logits)
            ll.llama_sampler_apply(slot.sampler, ctypes.byref(cands))
            token = int(cands.data[cands.selected].id)
        one = (ll.llama_token_data * 1)(ll.llama_token_data(token, 0.0, 0.0))
        single = ll.llama_token_data_array(one, 1, -1, False)
        ll.llama_sampler_apply(slot.grammar, ctypes.byref(single))
        if not np.isfinite(one[0].logit):  # refused: constrain the whole distribution, then sample it
            cands = self._candidates(logits)
            ll.llama_sampler_apply(slot.grammar, ctypes.byref(cands))
            ll.llama_sampler_apply(slot.sampler, ctypes.byref(cands))
            token = int(cands.data[cands.selected].id)
        ll.llama_sampler_accept(slot.grammar, token)
        ll.llama_sampler_accept(slot.sampler, token)
        if slot.seen is not None:
            slot.seen.add(token)
        return token

    def _logits(self, row: int) -> np.ndarray:
        """The last step's logits of batch row `row`, in place (llama.cpp's buffer, rewritten by each decode)."""
        return np.ctypeslib.as_array(ll.llama_get_logits_ith(self.ctx, row), shape=(self.n_vocab,))

    def _candidates(self, logits: np.ndarray) -> "ll.llama_token_data_array":
        if getattr(self, "_cand_buf", None) is None:
            self._cand_buf = (ll.llama_token_data * self.n_vocab)()
            self._cand_np = np.frombuffer(self._cand_buf, _TOKEN_DATA)
            self._cand_ids = np.arange(self.n_vocab, dtype=np.int32)
        self._cand_np["id"] = self._cand_ids  # samplers sort and cut the buffer in place: refill it all
        self._cand_np["logit"] = logits
        self._cand_np["p"] = 0.0
        return ll.llama_token_data_array(self._cand_buf, self.n_vocab, -1, False)

    def _finish(self, slot: Slot, reason: str) -> None:
        task, matcher, decoder = slot.task, slot.matcher, slot.decoder
        assert task is not None and matcher is not None and decoder is not None
        if reason == "length":  # text held back for a possible stop string is answer after all
            matcher.feed(decoder.decode(b"", final=True))
            tail = matcher.flush()
            if tail:
                task.emit(tail)
        task.emit(Final(matcher.text, reason, len(task.tokens), slot.n_generated, matcher.matched,
                        call_belief=slot.call_belief, drafted=slot.drafted, accepted=slot.accepted,
                        choice_weights=slot.choice_weights))
        self._release(slot)

    def _release(self, slot: Slot, error: BaseException | None = None) -> None:
        if error is not None and slot.task is not None:
            slot.task.emit(error)
        if slot.sampler is not None:
            ll.llama_sampler_free(slot.sampler)
        if slot.grammar is not None:
            ll.llama_sampler_free(slot.grammar)
        if error is not None:  # a failed step leaves the sequence's KV unknown: forget it
            ll.llama_memory_seq_rm(self.mem, slot.id, 0, -1)
            slot.cache_tokens.clear()
        slot.task, slot.sampler, slot.grammar, slot.pending, slot.decoder, slot.matcher = None, None, None, None, None, None
        slot.seen = None


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


# llama-server's DRY settings apart from the multiplier: a repeat of 2 tokens is free, each further token
# multiplies the penalty by 1.75, and a match does not run across a line break, colon, quote or asterisk.
DRY_BASE, DRY_ALLOWED_LENGTH = 1.75, 2
DRY_BREAKERS = (b"\n", b":", b'"', b"*")
DRY_TEMPLATES_KEPT = 4


def _make_sampler(p: SamplingParams, n_vocab: int, dry: ctypes.c_void_p | None = None) -> ctypes.c_void_p:
    """llama-server's order: penalties, DRY (`dry`, which the chain then owns), top-k, top-p, min-p,
    temperature, then the draw (or greedy)."""
    chain = ll.llama_sampler_chain_init(ll.llama_sampler_chain_default_params())
    if p.counts_penalised:
        ll.llama_sampler_chain_add(
            chain, ll.llama_sampler_init_penalties(n_vocab, 64, p.repeat_penalty, p.frequency_penalty, p.presence_penalty)
        )
    if dry is not None:
        ll.llama_sampler_chain_add(chain, dry)
    if p.temperature <= 0.0 or p.top_k == 1:
        ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_greedy())
        return chain
    if p.top_k > 0:
        ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_top_k(p.top_k))
    if p.top_p < 1.0:
        ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_top_p(p.top_p, 1))
    if p.min_p > 0.0:
        ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_min_p(p.min_p, 1))
    ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_temp(p.temperature))
    seed = p.seed if p.seed is not None else int.from_bytes(os.urandom(4), "little")
    ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_dist(seed & 0xFFFFFFFF))
    return chain


_TOKEN_DATA = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])


def _penalised_argmax(chain: ctypes.c_void_p, logits: np.ndarray, seen: set[int]) -> int:
    """What a greedy chain of lowering penalties (repeat >= 1, DRY, positive frequency/presence) picks from
    the whole vocabulary, found among a few candidates. Such penalties touch only tokens the answer already
    holds (`seen`), so the pick is one of those or the best of all the others. The chain over all 49k-262k
    tokens cost ~0.5 ms a slot a step (BENCHMARKS.md); this is the same answer for a fraction of that."""
    held = np.fromiter(seen, np.int32, len(seen))
    kept = logits[held]
    logits[held] = -np.inf
    best_other = int(logits.argmax())
    logits[held] = kept
    ids = np.sort(np.append(held, np.int32(best_other)))  # in id order, as the full array: ties go the same way
    buf = (ll.llama_token_data * len(ids))()
    view = np.frombuffer(buf, _TOKEN_DATA)
    view["id"], view["logit"], view["p"] = ids, logits[ids], 0.0
    cands = ll.llama_token_data_array(buf, len(ids), -1, False)
    ll.llama_sampler_apply(chain, ctypes.byref(cands))
    return int(cands.data[cands.selected].id)


def _make_grammar(vocab: ctypes.c_void_p, grammar: str, triggers: tuple[str, ...] = ()) -> ctypes.c_void_p:
    if triggers:
        patterns = (ctypes.c_char_p * len(triggers))(*(t.encode() for t in triggers))
        sampler = ll.llama_sampler_init_grammar_lazy_patterns(vocab, grammar.encode(), b"root", patterns, len(triggers), None, 0)
    else:
        sampler = ll.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
    if not sampler:
        raise EngineError("the grammar did not parse")
    return sampler
