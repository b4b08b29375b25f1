"""Fixtures of the models tests: tiny sentence-transformers folders, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.models.folders import GELU, family_folder
from tests.st_tiny import build_transformer, write_stack


@pytest.fixture
def bert_folder(transformers_dir, tmp_path):
    """A tiny BERT with Pooling, one GELU Dense and Normalize, in this test's tmp_path."""
    return family_folder(transformers_dir, tmp_path, "bert", dense=[(16, GELU, True)])


@pytest.fixture(scope="session")
def base_folder(tmp_path_factory) -> Path:
    """A tiny BERT with Pooling, one Dense and Normalize, built once (copy it before editing)."""
    folder = build_transformer(tmp_path_factory.mktemp("mf") / "bert", "bert")
    return write_stack(folder, dense=[(16, GELU, True)])
