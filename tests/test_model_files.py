"""Packaged models: resolved by name, sha256-checked, never fetched while serving."""

from __future__ import annotations

import shutil

import pytest

from edge_ai.model_files import (DEFAULT_MODEL, QWEN_CODER_15, SMOLLM2, ModelFileError, packaged_gguf, resolve_gguf,
                                 sha256_of)
from tests.conftest import ROOT


def test_the_default_is_the_coding_model_with_a_tool_format_and_fetch_models_put_it_in_place():
    assert DEFAULT_MODEL == "qwen-coder-1.5b"
    path = resolve_gguf("", ROOT / "models")
    assert path.name == QWEN_CODER_15.file and sha256_of(path) == QWEN_CODER_15.sha256


def test_a_missing_packaged_model_names_the_command_that_fetches_it(tmp_path):
    with pytest.raises(ModelFileError, match="edge-ai fetch-models"):
        packaged_gguf("smollm2", tmp_path)


def test_a_damaged_model_file_is_refused(tmp_path):
    bad = tmp_path / SMOLLM2.file
    with open(ROOT / "models" / SMOLLM2.file, "rb") as src:
        bad.write_bytes(src.read(1 << 20))  # the first MiB only: a download cut short
    with pytest.raises(ModelFileError, match="sha256"):
        packaged_gguf("smollm2", tmp_path)


def test_a_gguf_path_is_taken_as_it_is(tmp_path):
    copy = tmp_path / "mine.gguf"
    shutil.copy(ROOT / "models" / SMOLLM2.file, copy)
    assert resolve_gguf(str(copy), tmp_path / "elsewhere") == copy
    with pytest.raises(FileNotFoundError, match="packaged model"):
        resolve_gguf(str(tmp_path / "nope.gguf"), tmp_path)
