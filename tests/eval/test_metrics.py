"""engine.eval.metrics against hand-computed values and a plain reference implementation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.eval.metrics import evaluate_run, query_metrics, rank_top_k, sts_correlations

L3 = math.log2(3)  # discount at rank 2
L5 = math.log2(5)  # discount at rank 4

# q1: graded (d1 = 2, d2 = 1), a judged non-relevant d3 and an unjudged d4 in the ranking
# q2: judged, but nothing relevant -> excluded from the means
# q3: one relevant doc, found at rank 1
QRELS = {"q1": {"d1": 2, "d2": 1, "d3": 0}, "q2": {"d9": 0}, "q3": {"d5": 1}}
RUN = {"q1": ["d3", "d1", "d4", "d2"], "q2": ["d9", "d1"], "q3": ["d5"]}

# q1 by hand: rel by rank = 0, 2, 0, 1; R = 2; ideal gains 2, 1
Q1 = {
    "ndcg@1": 0.0,
    "ndcg@3": (2 / L3) / (2 + 1 / L3),
    "ndcg@5": (2 / L3 + 1 / L5) / (2 + 1 / L3),
    "map@1": 0.0,
    "map@3": (1 / 2) / 2,  # hit at rank 2: P@2 = 1/2; divided by R = 2
    "map@5": (1 / 2 + 2 / 4) / 2,  # + hit at rank 4: P@4 = 2/4
    "recall@1": 0.0,
    "recall@3": 0.5,
    "recall@5": 1.0,
    "precision@1": 0.0,
    "precision@3": 1 / 3,
    "precision@5": 2 / 5,
    "mrr@1": 0.0,
    "mrr@3": 0.5,
    "mrr@5": 0.5,
}
Q3 = {
    **{f"{m}@{k}": 1.0 for m in ("ndcg", "map", "recall", "mrr") for k in (1, 3, 5)},
    "precision@1": 1.0,
    "precision@3": 1 / 3,
    "precision@5": 1 / 5,
}


@pytest.mark.parametrize("key", sorted(Q1), ids=str)
def test_hand_computed_query(key):
    got = query_metrics(QRELS["q1"], RUN["q1"], (1, 3, 5))
    assert got[key] == pytest.approx(Q1[key], abs=1e-12)


def test_mean_excludes_queries_without_relevant_docs():
    res = evaluate_run(QRELS, RUN, k_values=(1, 3, 5))
    assert res["queries"] == 2 and res["excluded_queries"] == 1
    for key, want in Q1.items():
        assert res[key] == pytest.approx((want + Q3[key]) / 2, abs=1e-12), key
    assert query_metrics(QRELS["q2"], RUN["q2"]) is None


def test_missing_query_in_run_scores_zero_and_duplicates_count_once():
    res = evaluate_run({"a": {"x": 1}}, {}, k_values=(10,))
    assert res["ndcg@10"] == 0.0 and res["recall@10"] == 0.0 and res["queries"] == 1
    # x twice: the second copy is ignored, y stays at rank 2 -> MRR 1, recall 1, P@2 = 1
    m = query_metrics({"x": 1, "y": 1}, ["x", "x", "y"], (2,))
    assert m["precision@2"] == 1.0 and m["recall@2"] == 1.0 and m["ndcg@2"] == pytest.approx(1.0)


def test_map_denominator_is_number_of_relevant_not_k():
    # 5 relevant docs, one found at rank 1: AP@1 = 1/5 (BEIR/trec_eval), not 1/min(5, 1) = 1
    m = query_metrics({f"d{i}": 1 for i in range(5)}, ["d0"], (1,))
    assert m["map@1"] == pytest.approx(0.2)
    assert m["ndcg@1"] == pytest.approx(1.0)  # ideal DCG@1 also has a single doc


def test_ideal_dcg_uses_unretrieved_judged_docs():
    # the grade-3 doc is never retrieved; IDCG@2 still counts it first
    m = query_metrics({"a": 3, "b": 1}, ["b", "z"], (2,))
    assert m["ndcg@2"] == pytest.approx(1.0 / (3 + 1 / L3))


def test_rank_top_k_breaks_ties_by_doc_id():
    scores = np.array([[0.5, 0.9, 0.5, 0.9]], dtype=np.float32)
    ids = ["c", "b", "a", "d"]
    assert rank_top_k(scores, ids, 3).tolist() == [[1, 3, 2]]  # b, d (0.9), then a before c
    # a tie straddling the cut-off is resolved by id, not by partition order
    assert rank_top_k(np.ones((1, 3)), ["z", "y", "x"], 2).tolist() == [[2, 1]]
    assert rank_top_k(np.array([[3.0, 1.0, 2.0]]), ["a", "b", "c"], 10).tolist() == [[0, 2, 1]]


# -- a plain, obviously-correct nDCG to compare against --------------------------------------
def ref_ndcg(judged: dict, ranking: list, k: int) -> float:
    dcg = 0.0
    for i, d in enumerate(ranking[:k], start=1):
        dcg += max(judged.get(d, 0), 0) / math.log2(i + 1)
    ideal = sorted((g for g in judged.values() if g > 0), reverse=True)
    idcg = sum(g / math.log2(i + 1) for i, g in enumerate(ideal[:k], start=1))
    return dcg / idcg


@settings(max_examples=200, deadline=None)
@given(
    grades=st.lists(st.integers(0, 3), min_size=1, max_size=12),
    perm_seed=st.integers(0, 2**16),
    k=st.sampled_from([1, 3, 5, 10]),
)
def test_ndcg_matches_reference(grades, perm_seed, k):
    judged = {f"d{i}": g for i, g in enumerate(grades)}
    if not any(g > 0 for g in grades):
        assert query_metrics(judged, list(judged)) is None
        return
    pool = list(judged) + [f"u{i}" for i in range(5)]  # plus unjudged docs
    ranking = [pool[i] for i in np.random.default_rng(perm_seed).permutation(len(pool))]
    got = query_metrics(judged, ranking, (k,))[f"ndcg@{k}"]
    assert got == pytest.approx(ref_ndcg(judged, ranking, k), abs=1e-12)
    assert 0.0 <= got <= 1.0 + 1e-12


def test_perfect_ranking_scores_one():
    judged = {"a": 3, "b": 2, "c": 1}
    m = query_metrics(judged, ["a", "b", "c", "x"], (3,))
    assert m["ndcg@3"] == pytest.approx(1.0) and m["map@3"] == 1.0 and m["recall@3"] == 1.0


def test_sts_correlations():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((30, 6))
    b = a + rng.standard_normal((30, 6)) * np.linspace(0.01, 3, 30)[:, None]
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    res = sts_correlations(a, b, cos**3)  # a monotone map: Spearman exactly 1
    assert res["spearman"] == pytest.approx(1.0)
    assert res["pearson"] == pytest.approx(np.corrcoef(cos, cos**3)[0, 1])
    assert sts_correlations(a, b, -cos)["spearman"] == pytest.approx(-1.0)
