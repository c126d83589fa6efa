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
    help="edge-ai: a local OpenAI-compatible server that keeps answering when the cloud AI API is down, "
    "from a semantic cache of earlier answers or a quantized local GGUF model.",
    no_args_is_help=True,
    add_completion=False,
)


def _env(name: str) -> str:
    return ENV_PREFIX + name.upper()


@app.command()
def serve(
    host: Optional[str] = typer.Option(None, help="Interface to listen on.", envvar=_env("host"), show_default="127.0.0.1"),
    port: Optional[int] = typer.Option(None, help="TCP port.", envvar=_env("port"), show_default="8088"),
    config: Optional[Path] = typer.Option(
        None, help="TOML file with any of these settings (flags and env variables override it).", envvar="EDGE_AI_CONFIG"
    ),
    model: Optional[str] = typer.Option(
        None, help="GGUF file of the default local model [default: packaged Gemma 3 270M Q4_K_M].", envvar=_env("model")
    ),
    embedder: Optional[str] = typer.Option(
        None,
        help="sentence-transformers model directory [default: packaged all-MiniLM-L6-v2].",
        envvar=_env("embedder"),
    ),
    cache_dir: Optional[str] = typer.Option(None, help="On-disk cache directory.", envvar=_env("cache_dir"), show_default="cache"),
    cache_threshold: Optional[float] = typer.Option(
        None, help="Cosine similarity a cached prompt needs to answer a new one.", envvar=_env("cache_threshold"), show_default="0.90"
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
    strict_models: Optional[bool] = typer.Option(
        None,
        "--strict-models/--any-model",
        help="Only serve model names listed in model_map (TOML); others get 404 model_not_found.",
        envvar=_env("strict_models"),
        show_default="--any-model",
    ),
    log_level: str = typer.Option("info", help="Log level.", envvar=_env("log_level")),
) -> None:
    """Start the server. Model names in requests are echoed back; every name uses the default local
    model unless model_map (TOML) maps it to another GGUF file."""
    import uvicorn

    from edge_ai.app import create_app

    settings = Settings.load(
        config,
        host=host,
        port=port,
        model=model,
        embedder=embedder,
        cache_dir=cache_dir,
        cache_threshold=cache_threshold,
        cache_ttl=cache_ttl,
        n_slots=n_slots,
        n_ctx_slot=n_ctx_slot,
        n_threads=n_threads,
        n_gpu_layers=n_gpu_layers,
        max_queue=max_queue,
        strict_models=strict_models,
    )
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=log_level.lower())


@app.command()
def drill(
    failure: str = typer.Option("status", help="How the cloud fails: status (HTTP --code), reset, slow, cut, garbage."),
    code: int = typer.Option(529, help="HTTP status the cloud returns when --failure status."),
    phase_seconds: float = typer.Option(8.0, help="Length of each phase: healthy, outage, recovery."),
    clients: int = typer.Option(4, help="Concurrent clients (a mix of Anthropic/OpenAI, streaming or not)."),
    model: Optional[str] = typer.Option(None, help="GGUF for local answers [default: packaged model]."),
) -> None:
    """Run an outage drill: a fake cloud on loopback goes down and recovers while edge-ai (gateway mode)
    serves traffic. Prints requests, client-visible failures (goal: 0), time to open the breaker, time to
    recover and answers by source; exits non-zero if any client saw a failure."""
    from edge_ai.drill import run_drill

    report = run_drill(failure=failure, code=code, phase_s=phase_seconds, clients=clients, model=model)
    for line in report.lines():
        typer.echo(line)
    raise typer.Exit(1 if report.failures else 0)


@app.command("fetch-models")
def fetch_models(models_dir: Path = typer.Option(Path("models"), help="Where to assemble the default GGUF.")) -> None:
    """Assemble the packaged default GGUF (sha256-checked) and print both default model paths."""
    from edge_ai.model_files import default_gguf, resolve_embedder

    typer.echo(f"model:    {default_gguf(models_dir)}")
    typer.echo(f"embedder: {resolve_embedder('')}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
