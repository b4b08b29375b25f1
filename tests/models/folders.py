"""Model folders for the models tests: tiny families to copy and edit, sentence-transformers as their oracle.

Import as ``tests.models.folders``; the fixtures built from these are in tests/models/conftest.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from engine import Embedder
from engine.errors import UnsupportedModelError
from tests.st_tiny import build_transformer, write_stack

# texts the family tests encode: empty, short, past max_seq_length (24), non-ASCII, URLs, blanks
TEXTS = [
    "",
    "a",
    "Hello, world!",
    "héllo wörld café naïve 日本語 テキスト 🙂",
    "the quick brown fox jumps over the lazy dog " * 12,  # past max_seq_length (24)
    "query: what compiles python loops",
    "x" * 300,
    "https://example.com/a/b?c=d&e=f" * 8,
    "   ",
]
# texts the untrusted-folder tests encode
FOLDER_TEXTS = ["a", "Hello, world!", "the quick brown fox jumps over the lazy dog " * 6]
GELU, TANH, IDENTITY = (
    "torch.nn.modules.activation.GELU",
    "torch.nn.modules.activation.Tanh",
    "torch.nn.modules.linear.Identity",
)


def family_builder(root: Path):
    """``get(family)``: a tiny Transformer folder of that family under ``root``, built on first use."""
    built = {}

    def get(family: str) -> Path:
        if family not in built:
            built[family] = build_transformer(root / family, family)
        return built[family]

    return get


def family_folder(transformers_dir, tmp_path, family, **stack) -> Path:
    """A copy of the family's Transformer folder in ``tmp_path`` with the module stack ``write_stack(**stack)``."""
    folder = shutil.copytree(transformers_dir(family), tmp_path / family)
    return write_stack(folder, **stack)


def st_model(folder):
    """sentence-transformers' own model of ``folder``, on the CPU: the oracle."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cpu")


def rel_diff(ours, ref) -> float:
    """max |ours - ref| / max |ref| (asserting equal shapes and a finite reference)."""
    assert ours.shape == ref.shape
    assert np.isfinite(ref).all()
    return float(np.abs(ours - ref).max() / max(np.abs(ref).max(), 1e-12))


def edit_json(path: Path, **changes) -> None:
    """Update the JSON object in ``path`` with ``changes``."""
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def refused(folder: Path, cache: Path, match: str) -> UnsupportedModelError:
    """The UnsupportedModelError ``Embedder(folder)`` raises (matching ``match``), asserting nothing was exported."""
    with pytest.raises(UnsupportedModelError, match=match) as e:
        Embedder(str(folder), cache_dir=cache)
    assert not list(cache.rglob("model.onnx")), "refused before anything was exported"
    return e.value


def onnx_folder(base_folder: Path, tmp_path: Path, location: str = "model.onnx_data") -> Path:
    """The tiny model as a folder whose weights are an ONNX graph with its tensors in external data."""
    import onnx

    exported = Embedder(str(base_folder), cache_dir=tmp_path / "c0")._exported
    folder = shutil.copytree(base_folder, tmp_path / "onnx-model")
    (folder / "model.safetensors").unlink()
    m = onnx.load(str(exported.onnx_path))
    onnx.save(
        m,
        str(folder / "model.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=location,
        size_threshold=0,
    )
    return folder
