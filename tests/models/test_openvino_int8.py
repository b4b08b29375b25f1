"""models/openvino_int8.py: int8 on OpenVINO, a statically quantized IR built at export.

Oracle: sentence-transformers' fp32 vectors of the same folder; the export's own fp32 graph on
onnxruntime for the gate. Needs openvino and nncf (the openvino and export extras).
"""

from __future__ import annotations

import json
import sys
from importlib import resources

import numpy as np
import pytest

from engine import Embedder, Index
from engine.errors import ExportError, ModelMismatchError
from engine.models import openvino_int8
from engine.models.export import OPENVINO_INT8_IR, load_or_export
from engine.models.quantize import _BF16_CALIBRATION
from tests.conftest import SENTENCES

pytest.importorskip("openvino", reason="the openvino extra is not installed")
pytest.importorskip("nncf", reason="nncf (the export extra) is not installed")

TEXTS = [*SENTENCES, "a longer text about runtimes and kernels " * 6, "x"]


def _cos(a, b):
    return np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_calibration_texts_are_the_demo_corpus_its_concatenations_and_the_gate_sentences():
    lines = resources.files("engine").joinpath("data/sample_corpus.jsonl").read_text("utf-8").splitlines()
    docs = [f"{d['title']} {d['text']}" for d in map(json.loads, lines)]
    texts = openvino_int8.calibration_texts()
    n_joined = -(-len(docs) // openvino_int8.JOINED_DOCS)
    assert len(texts) == len(docs) + n_joined + len(_BF16_CALIBRATION)
    assert texts[: len(docs)] == docs
    assert texts[len(docs)] == " ".join(docs[: openvino_int8.JOINED_DOCS])
    assert tuple(texts[len(docs) + n_joined :]) == _BF16_CALIBRATION


@pytest.mark.parametrize("family", ["bert", "mpnet", "qwen2", "t5"])
def test_static_int8_is_close_to_sentence_transformers(family, tmp_path):
    from sentence_transformers import SentenceTransformer

    from tests.st_tiny import build_transformer, write_stack

    folder = build_transformer(tmp_path / family, family)
    write_stack(folder)
    want = SentenceTransformer(str(folder), device="cpu").encode(TEXTS, convert_to_numpy=True)
    try:
        emb = Embedder(str(folder), cache_dir=tmp_path / "cache", model_precision="int8", runtime="openvino")
    except ExportError as e:  # refused by name at export: allowed, and said
        assert "static int8 quantization" in str(e)
        return
    assert emb.runtime == "openvino" and emb._graph.name == OPENVINO_INT8_IR
    cos = _cos(emb.encode(TEXTS), want)
    # the gate's floor is a mean of 0.98 on its calibration sentences; the real MiniLM keeps 0.997
    # on held-out SciFact / STS (bench/experiments/runtime_choice.md#avx512_bf16)
    assert cos.mean() >= 0.98 and cos.min() >= 0.95, cos


def test_its_own_export_fingerprint_and_model_guard(tiny_model_dir, tmp_path):
    cache = tmp_path / "cache"
    ov = Embedder(str(tiny_model_dir), cache_dir=cache, model_precision="int8", runtime="openvino")
    ort = Embedder(str(tiny_model_dir), cache_dir=cache, model_precision="int8", runtime="onnxruntime")
    assert ov._exported.folder != ort._exported.folder and "int8-openvino" in ov._exported.folder.name
    assert "/int8-openvino/" in ov.fingerprint and ov.fingerprint != ort.fingerprint
    assert ov._exported.precision == "int8" and ov.model_precision == "int8"
    meta = ov._exported.meta
    assert meta["export"]["quantization"]["method"] == "nncf static"
    assert meta["export"]["quantization"]["calibration_texts"] == len(openvino_int8.calibration_texts())
    assert meta["int8_calibration_cosine"]["mean"] >= 0.98
    assert sorted(p.name for p in ov._exported.folder.iterdir()) == sorted(
        ["meta.json", "model.onnx", "tokenizer.json", OPENVINO_INT8_IR, OPENVINO_INT8_IR.replace(".xml", ".bin")]
    )
    # loading again reads the cache, and gives the same vectors
    again = Embedder(str(tiny_model_dir), cache_dir=cache, model_precision="int8", runtime="openvino")
    np.testing.assert_array_equal(again.encode(TEXTS), ov.encode(TEXTS))
    idx = Index(ov.dim, model=ov.fingerprint)
    idx.add(ov.encode(TEXTS), model=ov.fingerprint)
    with pytest.raises(ModelMismatchError):
        idx.search(ort.encode(TEXTS[:1]), 2, model=ort.fingerprint)


def test_a_missing_nncf_names_the_export_extra(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "nncf", None)
    with pytest.raises(ImportError, match=r"pip install 'embed-engine\[export\]'"):
        load_or_export(str(tiny_model_dir), "int8", cache_dir=tmp_path, runtime="openvino")
    assert not [f for f in (tmp_path / "onnx").glob("*int8-openvino*") if (f / "meta.json").is_file()]


def test_the_gate_refuses_a_model_that_loses_too_much(tiny_model_dir, tmp_path, monkeypatch):
    from engine.models import quantize

    monkeypatch.setattr(quantize, "MIN_CALIBRATION_COSINE", 1.01)
    with pytest.raises(ExportError, match=r"static int8 quantization of .* loses too much"):
        Embedder(str(tiny_model_dir), cache_dir=tmp_path, model_precision="int8", runtime="openvino")
    assert not [f for f in (tmp_path / "onnx").glob("*int8-openvino*") if (f / "meta.json").is_file()]


def test_a_missing_or_damaged_ir_is_refused_by_name(tiny_model_dir, tmp_path):
    """The cached IR is read from the cache folder: a deleted one names the folder and the fix, a damaged one
    is a ProviderError naming the file (never a silent fallback to another graph)."""
    from engine.errors import ProviderError

    cache = tmp_path / "cache"
    emb = Embedder(str(tiny_model_dir), cache_dir=cache, model_precision="int8", runtime="openvino")
    ir = emb._exported.folder / OPENVINO_INT8_IR
    xml = ir.read_bytes()
    ir.write_bytes(b"<net>not an IR")
    with pytest.raises(ProviderError, match=r"cannot compile .*model\.cpu\.int8\.xml"):
        Embedder(str(tiny_model_dir), cache_dir=cache, model_precision="int8", runtime="openvino")
    ir.write_bytes(xml)
    ir.unlink()
    with pytest.raises(ExportError, match=r"model\.cpu\.int8\.xml .*missing.*delete"):
        Embedder(str(tiny_model_dir), cache_dir=cache, model_precision="int8", runtime="openvino")
