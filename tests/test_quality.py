"""Full-size quality reproductions (slow: ~5 min per model on 2 CPU cores for SciFact's 5,183 docs).

    pytest -m slow tests/test_quality.py

References: all-MiniLM-L6-v2 nDCG@10 = 0.6451 and recall@100 = 0.925 on SciFact test
(MEASUREMENTS.md, sentence-transformers torch), all-mpnet-base-v2 0.6557 (published). Set
EMBED_EVAL_CACHE=PATH (a SQLite file or a folder) to reuse encoded vectors between runs
(engine.corpus.cache.encode_cached).
"""

from __future__ import annotations

import os

import pytest

from tests.conftest import shared_data

pytestmark = pytest.mark.slow

SCIFACT = {  # model -> (nDCG@10, tolerance)
    "all-MiniLM-L6-v2": (0.6451, 0.002),
    "all-mpnet-base-v2": (0.6557, 0.002),
}


def _embedder(name):
    from engine import Embedder
    from engine.errors import ModelNotFoundError

    try:
        return Embedder(name)
    except ModelNotFoundError as e:
        pytest.skip(f"{name} weights are not installed: {e}")


@pytest.mark.parametrize("model", list(SCIFACT))
def test_scifact_ndcg(model):
    from engine.eval.evaluate import evaluate_beir, load_beir

    ds = load_beir(shared_data("scifact"), "test")
    res = evaluate_beir(_embedder(model), ds, embeddings_cache=os.environ.get("EMBED_EVAL_CACHE"))
    want, tol = SCIFACT[model]
    assert res["queries"] == 300 and res["excluded_queries"] == 0
    assert res["ndcg@10"] == pytest.approx(want, abs=tol)
    if model == "all-MiniLM-L6-v2":
        assert res["recall@100"] == pytest.approx(0.925, abs=0.005)


def test_minilm_sts_dev_spearman():
    from engine.eval.evaluate import evaluate_sts

    res = evaluate_sts(
        _embedder("all-MiniLM-L6-v2"),
        shared_data("stsb", "sts-dev.csv"),
        embeddings_cache=os.environ.get("EMBED_EVAL_CACHE"),
    )
    assert res["pairs"] == 1500
    # measured 0.8672 with this engine (the published 0.8203 is the test split, not dev)
    assert res["spearman"] == pytest.approx(0.8672, abs=0.003)
