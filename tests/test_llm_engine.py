"""The continuous-batching core on a real model (SmolLM2-135M-Instruct, the fastest); Gemma 3 270M where its
sliding-window layers are what is tested."""

from __future__ import annotations

import asyncio

import pytest

from edge_ai.chat_template import JinjaTemplate, gemma_prompt
from edge_ai.engines.llm import REUSE_OVER_PACKING, LLMEngine, SamplingParams, Slot, StopMatcher
from edge_ai.errors import ContextOverflow, Overloaded
from edge_ai.model_files import resolve_gguf
from edge_ai.request import Final, Message


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    from tests.conftest import ROOT

    # Without drafts: these tests compare answers bit for bit across batch shapes, and a draft changes a
    # step's shape (on two threads, the last bits of a long context's logits; see the speculation tests).
    eng = LLMEngine(resolve_gguf("smollm2", ROOT / "models"), n_slots=16, n_ctx_slot=512, n_batch=256, max_queue=4,
                    speculate=False)
    yield eng
    eng.close()


def chat(engine: LLMEngine, system: str, messages: list[Message]) -> list[int]:
    template = JinjaTemplate(engine.chat_template, engine.token_text(engine.bos_token), "")
    return template.prompt(engine, system, messages)


def prompt(engine: LLMEngine, text: str) -> list[int]:
    return chat(engine, "", [Message("user", text)])


def run(coro):
    return asyncio.run(coro)


GREEDY = SamplingParams(temperature=0, max_tokens=24)


def test_greedy_output_is_the_same_alone_and_among_15_others(engine):
    questions = [f"Write one sentence about the number {i}." for i in range(16)]

    async def alone() -> str:
        return (await engine.submit(prompt(engine, questions[0]), GREEDY).result()).text

    async def together() -> list[str]:
        tasks = [engine.submit(prompt(engine, q), GREEDY) for q in questions]
        return [f.text for f in await asyncio.gather(*(t.result() for t in tasks))]

    solo = run(alone())
    batch = run(together())
    assert solo.strip()
    assert batch[0] == solo
    assert len(set(batch)) > 1  # the others really were different sequences


def test_prefix_reuse_skips_recomputing_a_shared_prefix(engine):
    system = "You are a meticulous assistant for a hardware store. " * 8

    async def ask(q: str) -> Final:
        return await engine.submit(chat(engine, system, [Message("user", q)]), GREEDY).result()

    first = run(ask("Do you sell hammers?"))
    reused_before = engine.stats.prompt_tokens_reused
    second = run(ask("Do you sell nails?"))
    saved = engine.stats.prompt_tokens_reused - reused_before
    assert saved >= len(engine.tokenize(system)) - 2  # the shared system prompt came from the slot's KV
    assert first.text and second.text


def test_requests_reusing_the_same_prefix_answer_alike(engine):
    """A cold prefill computes the last prompt token inside a chunk, a reused prefix computes it alone:
    the two may differ in the last bits (as in llama.cpp's server with prompt caching). Two requests that
    both reuse the slot's prefix compute it the same way and must agree exactly."""
    msgs = [Message("user", "List three fruits.")]
    async def go() -> str:
        return (await engine.submit(chat(engine, "Be concise.", msgs), GREEDY).result()).text
    run(go())
    reused = engine.stats.prompt_tokens_reused
    assert run(go()) == run(go())
    assert engine.stats.prompt_tokens_reused > reused


def test_stop_string_and_max_tokens(engine):
    async def go(params: SamplingParams) -> Final:
        return await engine.submit(prompt(engine, "Count from 1 to 20 separated by commas."), params).result()

    run(go(SamplingParams(temperature=0, max_tokens=40)))  # leaves the prompt in a slot: the next ones reuse it alike
    full = run(go(SamplingParams(temperature=0, max_tokens=40)))
    assert "5" in full.text
    cut = run(go(SamplingParams(temperature=0, max_tokens=40, stop=("5",))))
    assert cut.finish_reason == "stop" and cut.text == full.text[: full.text.index("5")]
    short = run(go(SamplingParams(temperature=0, max_tokens=3)))
    assert short.finish_reason == "length" and short.completion_tokens == 3


def test_streamed_deltas_add_up_to_the_final_text(engine):
    async def go() -> tuple[list[str], Final]:
        deltas, final = [], None
        async for ev in engine.submit(prompt(engine, "Describe a sunset."), GREEDY).stream():
            if isinstance(ev, Final):
                final = ev
            else:
                deltas.append(ev)
        return deltas, final

    deltas, final = run(go())
    assert len(deltas) > 1 and "".join(deltas) == final.text


def test_cancel_frees_the_slot(engine):
    async def go() -> None:
        task = engine.submit(prompt(engine, "Tell me a long story."), SamplingParams(temperature=0, max_tokens=400))
        stream = task.stream()
        await stream.__anext__()  # first delta: it is decoding
        await stream.aclose()  # the consumer leaves
        for _ in range(100):
            if engine.load()["slots_busy"] == 0:
                return
            await asyncio.sleep(0.02)
        raise AssertionError("slot not freed after cancel")

    run(go())
    assert engine.stats.generated_tokens > 0


def test_bounded_admission_rejects_past_the_queue(engine):
    async def go() -> int:
        tasks, rejected = [], 0
        prompts = [prompt(engine, f"Story {i}") for i in range(16 + 4 + 3)]  # slots + queue + 3 more
        for p in prompts:
            try:
                tasks.append(engine.submit(p, SamplingParams(temperature=0, max_tokens=4)))
            except Overloaded as exc:
                assert exc.retry_after >= 1
                rejected += 1
        await asyncio.gather(*(t.result() for t in tasks))
        return rejected

    assert run(go()) == 3


def test_context_overflow_is_refused_up_front(engine):
    async def go() -> None:
        engine.submit(prompt(engine, "hi"), SamplingParams(max_tokens=10_000))

    with pytest.raises(ContextOverflow):
        run(go())


def test_seeded_sampling_is_reproducible_among_others(engine):
    p = SamplingParams(temperature=0.8, top_k=40, top_p=0.95, seed=7, max_tokens=16)

    async def go(n: int) -> list[str]:
        tasks = [engine.submit(prompt(engine, "Invent a name for a cat."), p) for _ in range(n)]
        return [f.text for f in await asyncio.gather(*(t.result() for t in tasks))]

    assert len(set(run(go(1)) + run(go(3)))) == 1


def test_a_seeded_request_prefills_its_whole_prompt_again(engine):
    """Reused KV computes the prompt's last token alone, not inside the prefill, and that rounding moved
    about one seeded sample in five over HTTP: a seed must give the same answer, so nothing is reused."""
    p = SamplingParams(temperature=0.9, seed=1234, max_tokens=16)
    tokens = prompt(engine, "Write a short poem about a train.")

    async def ask(params: SamplingParams) -> str:
        return (await engine.submit(tokens, params).result()).text

    first = run(ask(p))
    reused = engine.stats.prompt_tokens_reused
    assert [run(ask(p)) for _ in range(3)] == [first] * 3
    assert engine.stats.prompt_tokens_reused == reused
    run(ask(GREEDY))  # unseeded, the same prompt is reused as before
    assert engine.stats.prompt_tokens_reused > reused


@pytest.mark.parametrize(
    "stops,pieces,expected_emitted,expected_text,stopped",
    [
        (("END",), ["Hello E", "N", "D more"], ["Hello ", "", ""], "Hello ", True),
        (("END",), ["Hello E", "x"], ["Hello ", "Ex"], "Hello Ex", False),
        ((), ["a", "b"], ["a", "b"], "ab", False),
        (("\n\n", "###"), ["one\n", "\ntwo"], ["one", ""], "one", True),
    ],
)
def test_stop_matcher_across_token_boundaries(stops, pieces, expected_emitted, expected_text, stopped):
    m = StopMatcher(stops)
    emitted, was_stopped = [], False
    for p in pieces:
        out, was_stopped = m.feed(p)
        emitted.append(out)
        if was_stopped:
            break
    assert emitted == expected_emitted[: len(emitted)]
    assert m.text == expected_text and was_stopped == stopped


def test_prefix_reuse_is_refused_when_the_sliding_window_is_gone():
    """Gemma's sliding-window layers keep only the last window of a sequence; after a long request the
    slot can no longer continue a short shared prefix, and must recompute rather than answer wrongly."""
    from tests.conftest import ROOT

    eng = LLMEngine(resolve_gguf("gemma3-270m", ROOT / "models"), n_slots=1, n_ctx_slot=2048, n_batch=256)
    try:
        system = "You answer questions about the weather in short sentences."
        short = gemma_prompt(eng, system, [Message("user", "Is it sunny?")])
        long = gemma_prompt(eng, system, [Message("user", "Summarise: " + "the rain in Spain falls mainly " * 200)])
        assert len(long) > eng.n_swa + eng.n_batch  # far enough that the early window cells are dropped

        async def go(tokens: list[int]) -> str:
            return (await eng.submit(tokens, SamplingParams(temperature=0, max_tokens=12)).result()).text

        cold = run(go(short))
        run(go(long))
        assert run(go(short)) == cold
    finally:
        eng.close()


def test_requests_pack_into_the_lowest_free_slot_unless_a_long_prefix_waits_elsewhere(engine):
    """Per-slot KV runs a step as one pass only over consecutive sequence ids, so requests fill the lowest
    free slot; another slot is worth it only when its KV saves REUSE_OVER_PACKING prompt tokens."""
    low, far = Slot(2, cache_tokens=[7, 8, 9]), Slot(5, cache_tokens=list(range(400)))
    short_overlap = list(range(REUSE_OVER_PACKING // 2)) + [9999]
    assert engine._place([low, far], short_overlap) == (low, 0)
    long_overlap = list(range(REUSE_OVER_PACKING + 10)) + [9999]
    assert engine._place([low, far], long_overlap) == (far, REUSE_OVER_PACKING + 10)


def test_a_choice_weighs_its_groups_picks_from_them_and_leaves_a_conversations_prefix_alone():
    """A one-token question (SamplingParams.choices): the Final carries each group's probability, the token
    is one of the groups', and the task takes the free slot holding least, not the conversation's."""
    from tests.conftest import ROOT

    engine = LLMEngine(resolve_gguf("smollm2", ROOT / "models"), n_slots=2, n_ctx_slot=512, n_batch=256, speculate=False)
    try:
        _choose_beside_a_conversation(engine)
    finally:
        engine.close()


def _choose_beside_a_conversation(engine: LLMEngine) -> None:
    async def answer(tokens: list[int], params: SamplingParams) -> Final:
        return await engine.submit(tokens, params).result()

    conversation = prompt(engine, "Tell me a short story about a lighthouse keeper and a storm at sea.")
    run(answer(conversation, SamplingParams(temperature=0, max_tokens=8)))
    held = next(s for s in engine.slots if s.cache_tokens[: len(conversation)] == conversation)
    yes, no = engine.tokenize("yes")[:1] + engine.tokenize(" yes")[:1], engine.tokenize("no")[:1] + engine.tokenize(" no")[:1]
    final = run(answer(prompt(engine, "Is the sky blue on a clear day? Answer yes or no."),
                       SamplingParams(temperature=0, max_tokens=1, choices=(tuple(yes), tuple(no)))))
    assert len(final.choice_weights) == 2 and all(0.0 < w < 1.0 for w in final.choice_weights)
    assert sum(final.choice_weights) <= 1.0 + 1e-6
    assert final.completion_tokens == 1 and final.text.strip().lower() in ("yes", "no")
    picked = "yes" if final.choice_weights[0] > final.choice_weights[1] else "no"
    assert final.text.strip().lower() == picked  # greedy: the heavier group's token
    assert held.cache_tokens[: len(conversation)] == conversation  # the conversation's KV is still there
    # and its next turn reuses it
    before = engine.stats.prompt_tokens_reused
    run(answer(conversation + engine.tokenize(" More."), SamplingParams(temperature=0, max_tokens=4)))
    assert engine.stats.prompt_tokens_reused - before >= len(conversation) - 1


def test_a_grammar_request_batched_with_others_is_valid_and_leaves_them_as_they_were(engine):
    """A constrained task samples and checks its token against the grammar in the same step as the others:
    its answer parses, and theirs are what they are without it."""
    import json

    from llama_cpp.llama_grammar import JSON_GBNF

    questions = [f"Write one sentence about the number {i}." for i in range(6)]
    constrained = SamplingParams(temperature=0, max_tokens=60, grammar=JSON_GBNF)

    async def go(with_grammar: bool) -> tuple[list[str], Final | None]:
        tasks = [engine.submit(prompt(engine, q), GREEDY) for q in questions]
        js = engine.submit(prompt(engine, "Describe a cat as a JSON object."), constrained) if with_grammar else None
        texts = [f.text for f in await asyncio.gather(*(t.result() for t in tasks))]
        return texts, (await js.result()) if js else None

    plain, _ = run(go(False))
    mixed, final = run(go(True))
    assert mixed == plain
    # 60 tokens may cut the object short (full JSON validity is tested over HTTP); the grammar's root is an object
    assert final is not None and final.text.lstrip().startswith("{")
    if final.finish_reason == "stop":
        assert isinstance(json.loads(final.text), dict)


def test_answers_are_intact_while_another_thread_detokenizes(engine):
    """The event loop turns tokens into text (a chat template's BOS, a prompt being cut to fit) while the
    scheduler decodes: neither sees the other's text (a shared buffer once turned "The" into "<|i")."""
    import threading

    questions = [f"Write one sentence about the number {i}." for i in range(6)]
    words = engine.tokenize(" zebra quantum xylophone marmalade" * 20)
    expected = engine.detokenize(words)
    wrong: list[str] = []
    done = threading.Event()

    def hammer() -> None:
        while not done.is_set():
            if (text := engine.detokenize(words)) != expected:
                wrong.append(text)

    async def go() -> list[str]:
        tasks = [engine.submit(prompt(engine, q), GREEDY) for q in questions]
        return [f.text for f in await asyncio.gather(*(t.result() for t in tasks))]

    plain = run(go())
    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        mixed = run(go())
    finally:
        done.set()
        thread.join()
    assert mixed == plain
    assert wrong == []


def _longest_repeat(engine: LLMEngine, text: str) -> int:
    """The longest run of tokens that occurs twice in `text`, not crossing DRY's breakers."""
    tokens = engine.tokenize(text)
    breaks = [any(c in engine.token_text(t) for c in '\n:"*') for t in tokens]
    best = 0
    for i in range(len(tokens)):
        for j in range(i + 1, len(tokens)):
            k = 0
            while j + k < len(tokens) and tokens[i + k] == tokens[j + k] and not breaks[i + k]:
                k += 1
            best = max(best, k)
    return best


def test_dry_penalty_breaks_a_loop(engine):
    """Greedy on a repetitive text loops; DRY (a strong multiplier) leaves no repeat past a few tokens, where
    the 64-token repeat penalty could not see a loop longer than its window."""
    looping = engine.tokenize(" apple banana cherry" * 8)

    async def go(dry: float) -> str:
        return (await engine.submit(looping, SamplingParams(temperature=0, max_tokens=60, dry_multiplier=dry)).result()).text

    assert _longest_repeat(engine, run(go(0.0))) >= 20  # the model loops without it
    assert _longest_repeat(engine, run(go(2.0))) <= 6  # continuing a repeat of 6 costs 2 x 1.75^4 = 19 logits


def test_a_request_gets_the_default_penalties_unless_it_sets_them_or_has_a_grammar(engine):
    from edge_ai.local_models import LocalModel
    from edge_ai.request import Constraint, Request

    model = LocalModel(engine, SamplingParams(temperature=0, repeat_penalty=1.2, dry_multiplier=0.5))
    ask = (Message("user", "hi"),)
    plain = model.sampling(Request(model="m", messages=ask), 64)
    assert (plain.repeat_penalty, plain.dry_multiplier, plain.greedy) == (1.2, 0.5, False)
    own = model.sampling(Request(model="m", messages=ask, repeat_penalty=1.0, dry_multiplier=0.0), 64)
    assert (own.repeat_penalty, own.dry_multiplier, own.greedy) == (1.0, 0.0, True)  # an argmax again
    # a JSON answer repeats keys and quotes by nature
    structured = model.sampling(Request(model="m", messages=ask, constraint=Constraint("json")), 64)
    assert (structured.repeat_penalty, structured.dry_multiplier) == (1.0, 0.0) and structured.grammar


def test_greedy_under_penalties_picks_what_the_chain_picks_over_the_whole_vocabulary(engine):
    """The few-candidate pick (the answer's own tokens and the best other one) equals the llama.cpp chain
    run over every token, step after step, also where a penalty is what decides."""
    import ctypes

    import llama_cpp as ll
    import numpy as np

    from edge_ai.engines.llm import _penalised_argmax

    rng = np.random.default_rng(7)
    for params in (SamplingParams(temperature=0, repeat_penalty=1.2, dry_multiplier=0.5),
                   SamplingParams(temperature=0, repeat_penalty=1.3, frequency_penalty=0.4, presence_penalty=0.2),
                   SamplingParams(temperature=0, dry_multiplier=2.0)):
        fast, full = (engine._sampler_for(params) for _ in range(2))  # the second DRY one is a clone
        seen: set[int] = set()
        picked_seen = overruled = 0
        for step in range(300):
            logits = rng.normal(0, 2, engine.n_vocab).astype(np.float32)
            recent = list(seen)
            if recent:  # tokens of the answer often lead: the penalties must decide against them
                lead = rng.choice(recent, min(len(recent), 4))
                logits[lead] = logits.max() + rng.uniform(-0.5, 2.0, len(lead))
            if step % 40 < 12:  # and the answer repeats itself, so DRY has sequences to see
                logits[[11, 12, 13, 14][step % 4]] += 20
            cands = engine._candidates(logits)
            ll.llama_sampler_apply(full, ctypes.byref(cands))
            expected = int(cands.data[cands.selected].id)
            got = _penalised_argmax(fast, logits.copy(), seen)
            assert got == expected, (params, step)
            picked_seen += got in seen
            overruled += got != int(logits.argmax())
            for chain in (fast, full):
                ll.llama_sampler_accept(chain, got)
            seen.add(got)
        assert picked_seen > 20 and overruled > 20  # answer tokens were picked, and penalties overruled the argmax
        for chain in (fast, full):
            ll.llama_sampler_free(chain)


def test_penalties_and_min_p_are_applied(engine):
    """A repeat penalty changes a greedy answer that repeats itself; a min-p chain samples an answer."""
    p = prompt(engine, "Repeat the word cat ten times.")

    async def go(params: SamplingParams) -> str:
        return (await engine.submit(p, params).result()).text

    plain = run(go(SamplingParams(temperature=0, max_tokens=30)))
    penalised = run(go(SamplingParams(temperature=0, max_tokens=30, repeat_penalty=1.5)))
    assert plain != penalised
    assert run(go(SamplingParams(temperature=0.7, min_p=0.1, top_k=40, seed=3, max_tokens=8))).strip()


# ---- speculative decoding ---------------------------------------------------------------------------

CODE = "\n".join(f"def helper_{i}(value):\n    total = value * {i} + {i * 3}\n    return WidgetFactory.build(total, "
                 f"name='w{i}')\n" for i in range(8))
REWRITE = f"Rewrite this Python code with the class WidgetFactory renamed to PartFactory. Output only the code.\n\n{CODE}"


@pytest.fixture(scope="module")
def engines():
    """The same model with and without drafts, on one thread each: one thread computes a row of a step's
    logits the same whether the step holds one token of its sequence or several (on two, llama.cpp splits
    a lone row's attention over the threads, and long contexts then differ in the last bits, as a reused
    prefix does), so the answers must agree token for token."""
    from tests.conftest import ROOT

    path = resolve_gguf("smollm2", ROOT / "models")
    plain = LLMEngine(path, n_slots=2, n_ctx_slot=2048, n_batch=256, n_threads=1, speculate=False)
    drafting = LLMEngine(path, n_slots=2, n_ctx_slot=2048, n_batch=256, n_threads=1, speculate=True)
    yield plain, drafting
    plain.close()
    drafting.close()


def drafted(engine: LLMEngine) -> tuple[int, int]:
    s = engine.stats
    return s.drafted_from_prompt + s.drafted_from_answer, s.accepted_from_prompt + s.accepted_from_answer


@pytest.mark.parametrize("params", [
    SamplingParams(temperature=0, max_tokens=200),
    SamplingParams(temperature=0, max_tokens=200, repeat_penalty=1.1, dry_multiplier=0.5),  # the chain, in order
], ids=["greedy", "greedy-under-penalties"])
def test_speculation_gives_the_same_answer_token_for_token(engines, params):
    plain, drafting = engines
    before = drafted(drafting)

    async def ask(engine: LLMEngine) -> Final:
        return await engine.submit(prompt(engine, REWRITE), params).result()

    want, got = run(ask(plain)), run(ask(drafting))
    n_drafted, n_accepted = (a - b for a, b in zip(drafted(drafting), before))
    assert got.text == want.text and got.completion_tokens == want.completion_tokens
    assert n_drafted > 0 and n_accepted > 0  # drafts were decoded and some kept: speculation really ran
    assert (got.drafted, got.accepted) == (n_drafted, n_accepted) and want.drafted == 0  # counted per answer


def test_a_grammar_constrained_answer_with_drafts_is_the_same(engines):
    """A forced call quoting the code: each draft token is checked against the grammar as it is picked."""
    from edge_ai.local_models import grammar_for
    from edge_ai.request import Constraint, Tool

    edit = Tool("Edit", "Replace text in a file.", {"type": "object", "required": ["old_string", "new_string"], "properties": {
        "old_string": {"type": "string"}, "new_string": {"type": "string"}}})
    params = SamplingParams(temperature=0, max_tokens=120, grammar=grammar_for(Constraint("tool", tools=(edit,))))
    plain, drafting = engines
    ask = f"Call Edit to rename helper_2 to helper_two in this code.\n\n{CODE}"

    async def go(engine: LLMEngine) -> str:
        return (await engine.submit(prompt(engine, ask), params).result()).text

    before = drafted(drafting)[0]
    assert run(go(drafting)) == run(go(plain))
    assert drafted(drafting)[0] > before


def test_rejected_drafts_leave_the_kv_as_if_never_decoded(engines):
    """The next request reuses the slot's prefix (the first answer's context, drafts removed from its KV
    where rejected): its answer must be the one the plain engine gives after the same first request."""
    plain, drafting = engines
    follow = SamplingParams(temperature=0, max_tokens=60)

    async def two(engine: LLMEngine) -> tuple[str, int]:
        first = await engine.submit(prompt(engine, REWRITE), SamplingParams(temperature=0, max_tokens=120)).result()
        history = [Message("user", REWRITE), Message("assistant", first.text), Message("user", "Now add a docstring to helper_0.")]
        reused = engine.stats.prompt_tokens_reused
        second = await engine.submit(chat(engine, "", history), follow).result()
        return second.text, engine.stats.prompt_tokens_reused - reused

    (want, _), (got, reused) = run(two(plain)), run(two(drafting))
    assert reused > len(prompt(drafting, REWRITE)) // 2  # the second request did build on the first one's KV
    assert got == want


def test_drafts_are_found_in_the_context_and_rest_after_misses():
    from edge_ai.engines.draft import DRAFT_FIRST, DRAFT_MAX, MISSES_TO_REST, REST_TOKENS, NgramDraft

    d = NgramDraft()
    d.reset(prompt_len=12)
    context = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1, 2, 3, 4, 5, 6]
    assert d.propose(context, limit=3) == ([7, 8, 9][:DRAFT_FIRST], "prompt")  # what followed 1..6 the last time
    chance = NgramDraft()
    chance.reset(prompt_len=8)
    assert chance.propose([1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2, 3], limit=3) == ([], "")  # three tokens: by chance
    d.settle(drafted=DRAFT_FIRST, accepted=DRAFT_FIRST)
    assert d.length == min(2 * DRAFT_FIRST, DRAFT_MAX)  # longer after a whole draft was kept
    for _ in range(MISSES_TO_REST):
        d.settle(drafted=2, accepted=0)
    assert all(d.propose(context, limit=3) == ([], "") for _ in range(REST_TOKENS))
    assert d.propose(context, limit=3)[0]  # drafting again after the rest


def test_a_slot_whose_drafts_were_never_kept_probes_briefly_and_rests_longer_each_time():
    from edge_ai.engines.draft import DRAFT_FIRST, REST_TOKENS, NgramDraft

    d = NgramDraft()
    d.reset(prompt_len=12)
    context = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 1, 2, 3, 4, 5, 6]
    for rest in (REST_TOKENS, 2 * REST_TOKENS, 4 * REST_TOKENS):
        draft, _ = d.propose(context, limit=64)
        assert len(draft) == DRAFT_FIRST  # a probe, not a long guess
        d.settle(drafted=len(draft), accepted=0)  # one miss is enough to rest
        assert d.resting == rest
        d.resting = 0
    d.settle(drafted=DRAFT_FIRST, accepted=DRAFT_FIRST)  # a copy after all: the draft grows, rests are short again
    assert d.length == 2 * DRAFT_FIRST and d.rests == 0


def test_beside_other_slots_a_probe_needs_a_long_match_until_a_draft_is_kept():
    """A draft beside other decoding slots is a pass of its own (llama.cpp's equal split): a slot that has
    kept nothing yet probes there only where the context's end matches LEAST_MATCH_SHARED tokens."""
    from edge_ai.engines.draft import LEAST_MATCH, LEAST_MATCH_SHARED, NgramDraft

    head = list(range(100, 100 + LEAST_MATCH_SHARED + 4))
    short = list(range(1, 40)) + head[-LEAST_MATCH:] + [7, 8] + [0] + head[-LEAST_MATCH:]  # 6 tokens repeat
    long = head + [7, 8] + [0] + head  # the whole run of LEAST_MATCH_SHARED + 4 repeats
    for context, shared_ok in ((short, False), (long, True)):
        d = NgramDraft()
        d.reset(prompt_len=len(context) - 1)
        assert d.propose(context, limit=8)[0][:1] == [7]  # alone: what followed the match last time
        d = NgramDraft()
        d.reset(prompt_len=len(context) - 1)
        assert bool(d.propose(context, limit=8, shared=True)[0]) == shared_ok
    d = NgramDraft()
    d.reset(prompt_len=len(short) - 1)
    d.settle(drafted=2, accepted=2)  # a draft was kept: the slot is copying, the usual match will do
    assert d.propose(short, limit=8, shared=True)[0]


def test_a_miss_meeting_a_full_queue_is_refused_before_its_prompt_is_tokenized_and_a_hit_is_still_served(engine):
    from types import SimpleNamespace

    from edge_ai.cache import Hit, Lookup
    from edge_ai.engines.store import Entry
    from edge_ai.local_models import LocalModel
    from edge_ai.policy import AnswerPolicy
    from edge_ai.request import CacheControl, Request

    model = LocalModel(engine, SamplingParams(temperature=0))
    tokenized: list[Request] = []
    real_tokenize = model._tokenize
    model._tokenize = lambda req: tokenized.append(req) or real_tokenize(req)  # type: ignore[method-assign]
    cached = Entry(id="e", scope_key="s", scope={}, query="What is 2+2?", answer="4", finish_reason="stop",
                   completion_tokens=1, max_tokens=None, source="import")

    async def lookup(req: Request) -> Lookup:
        return Lookup(Hit(cached, 1.0, True) if req.messages[0].content == "What is 2+2?" else None, None)

    policy = AnswerPolicy(SimpleNamespace(lookup=lookup), SimpleNamespace(get=lambda name: model), 16)  # type: ignore[arg-type]
    ask = lambda text: Request(model="m", messages=(Message("user", text),), cache=CacheControl(write=False))  # noqa: E731

    async def go() -> None:
        busy = [engine.submit(prompt(engine, f"Count to a thousand, {i}."), SamplingParams(temperature=0, max_tokens=400))
                for i in range(engine.n_slots + engine.max_queue)]  # every slot and the whole queue
        try:
            rejected = engine.stats.rejected
            with pytest.raises(Overloaded):
                await policy.answer(ask("Name a new colour."))
            assert tokenized == [] and engine.stats.rejected == rejected + 1  # refused, its prompt never tokenized
            reply = await policy.answer(ask("What is 2+2?"))  # the cache still answers
            assert reply.source == "cache" and (await reply.collect()).text == "4"
        finally:
            for task in busy:
                task.cancel()
            while engine.load()["slots_busy"] or engine.load()["queue_depth"]:  # freed before this loop closes
                await asyncio.sleep(0.02)

    run(go())
