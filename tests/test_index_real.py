"""int8 + rescoring on real embeddings (MiniLM on SciFact), against exact fp32 search."""

from __future__ import annotations

import json

import numpy as np

from engine import Embedder, Index
from tests.conftest import minilm_folder, shared_data


def test_int8_recall_on_minilm_scifact():
    minilm_folder()
    docs, queries = [], []
    with open(shared_data("scifact", "corpus.jsonl"), encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            docs.append(f"{d['title']} {d['text']}")
            if len(docs) == 400:
                break
    with open(shared_data("scifact", "queries.jsonl"), encoding="utf-8") as f:
        queries = [json.loads(line)["text"] for line in f][:100]
    emb = Embedder("all-MiniLM-L6-v2")
    x, q = emb.encode(docs), emb.encode(queries)
    exact, quant = Index(emb.dim, model=emb.fingerprint), Index(emb.dim, precision="int8", model=emb.fingerprint)
    exact.add(x)
    quant.add(x)
    s_e, i_e = exact.search(q, 10)
    s_q, i_q = quant.search(q, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(i_e, i_q)])
    assert recall >= 0.99, recall
    same = i_e == i_q
    np.testing.assert_allclose(s_q[same], s_e[same], atol=1e-6)  # rescored scores are exact cosines
