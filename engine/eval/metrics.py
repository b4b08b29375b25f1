"""Retrieval and STS metrics: pure functions, no I/O, no models.

Definitions follow BEIR, which calls pytrec_eval (trec_eval), plus BEIR's own MRR@k. For one
query with judgments ``rel(d)`` (missing = 0) and a ranked list ``d_1, d_2, ...``:

* relevant means ``rel(d) > 0`` (trec_eval's default relevance level 1); ``R`` = number of
  relevant judged docs of the query.
* ``nDCG@k = DCG@k / IDCG@k`` with ``DCG@k = sum_{i<=k} rel(d_i) / log2(i + 1)`` (linear graded
  gain, trec_eval's ``ndcg_cut``); IDCG@k is the same sum over the query's judged gains sorted
  descending, i.e. the ideal ranking of *all* judged docs, not only the retrieved ones.
* ``MAP@k = (sum over relevant d_i, i <= k, of P@i) / R``: the denominator is R, the number of
  relevant docs, as in trec_eval's ``map_cut`` and therefore BEIR (not ``min(R, k)``).
* ``recall@k = |relevant in top k| / R``; ``precision@k = |relevant in top k| / k`` (k, even when
  fewer than k docs were retrieved, as trec_eval's ``P_k``).
* ``MRR@k = 1 / i`` for the first relevant ``d_i`` with ``i <= k``, else 0.

Queries whose judgments contain no relevant document (``R = 0``) are excluded from the means and
counted in ``excluded_queries``: every metric is undefined or trivially 0 for them. (SciFact's
test split has none.) A doc id that appears twice in a ranking counts once, at its first rank.
Rankings are taken as given; ``rank_top_k`` builds them from scores with ties broken by
ascending doc id. (trec_eval itself breaks score ties by descending doc id; exact float ties are
rare with embedding scores, and ours are deterministic either way.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

DEFAULT_KS = (1, 3, 5, 10, 100)
METRICS = ("ndcg", "map", "recall", "precision", "mrr")


def _dedup(ranking: Sequence[str]) -> list[str]:
    """``ranking`` with repeated ids dropped after their first rank."""
    seen: set[str] = set()
    out = []
    for d in ranking:
        if d not in seen:
            seen.add(d)
            out.append(d)
    return out


def query_metrics(judged: Mapping[str, float], ranking: Sequence[str], k_values=DEFAULT_KS) -> dict[str, float] | None:
    """All metrics at every k for one query (the module docstring's definitions).

    Args:
        judged: {doc_id: graded relevance} of the query (missing docs: 0).
        ranking: doc ids, best first (a repeated id counts once, at its first rank).
        k_values: the cutoffs, positive integers.

    Returns:
        ``{"ndcg@k", "map@k", "recall@k", "precision@k", "mrr@k"}`` for every k, or None when the
        query has no relevant document.
    """
    gains = sorted((max(float(g), 0.0) for g in judged.values() if g > 0), reverse=True)
    n_rel = len(gains)
    if n_rel == 0:
        return None
    ranking = _dedup(ranking)
    kmax = max(k_values)
    rel = np.array([max(float(judged.get(d, 0)), 0.0) for d in ranking[:kmax]], dtype=np.float64)
    hit = rel > 0
    disc = 1.0 / np.log2(np.arange(2, kmax + 2, dtype=np.float64))
    ideal = np.zeros(kmax)
    ideal[: min(kmax, n_rel)] = gains[:kmax]
    dcg = np.cumsum(np.pad(rel, (0, kmax - len(rel))) * disc)
    idcg = np.cumsum(ideal * disc)
    hits = np.cumsum(np.pad(hit, (0, kmax - len(hit))).astype(np.float64))
    prec_at_hit = np.where(np.pad(hit, (0, kmax - len(hit))), hits / np.arange(1, kmax + 1), 0.0)
    ap_sum = np.cumsum(prec_at_hit)
    first = int(np.argmax(hit)) + 1 if hit.any() else None
    out = {}
    for k in k_values:
        out[f"ndcg@{k}"] = float(dcg[k - 1] / idcg[k - 1])
        out[f"map@{k}"] = float(ap_sum[k - 1] / n_rel)
        out[f"recall@{k}"] = float(hits[k - 1] / n_rel)
        out[f"precision@{k}"] = float(hits[k - 1] / k)
        out[f"mrr@{k}"] = 1.0 / first if first is not None and first <= k else 0.0
    return out


def evaluate_run(
    qrels: Mapping[str, Mapping[str, float]],
    run: Mapping[str, Sequence[str]],
    k_values=DEFAULT_KS,
    per_query: bool = False,
) -> dict:
    """Mean metrics over the judged queries.

    Args:
        qrels: {query_id: {doc_id: graded relevance}}.
        run: {query_id: doc ids best first}; a judged query absent from it scores 0 (it retrieved nothing).
        k_values: the cutoffs, positive integers.
        per_query: also return each query's metrics.

    Returns:
        ``{"ndcg@10": ..., ..., "queries": n, "excluded_queries": m}`` (+ ``"per_query"``): means over
        the n queries with a relevant document; the m without one are left out.

    Raises:
        ValueError: no k, or a k below 1.
    """
    k_values = tuple(sorted({int(k) for k in k_values}))
    if not k_values or k_values[0] < 1:
        raise ValueError(f"k values must be positive integers, got {k_values}")
    sums = {f"{m}@{k}": 0.0 for m in METRICS for k in k_values}
    per, excluded = {}, 0
    for qid, judged in qrels.items():
        m = query_metrics(judged, run.get(qid, ()), k_values)
        if m is None:
            excluded += 1
            continue
        per[qid] = m
        for key, v in m.items():
            sums[key] += v
    n = len(per)
    out: dict = {key: (v / n if n else 0.0) for key, v in sums.items()}
    out["queries"] = n
    out["excluded_queries"] = excluded
    if per_query:
        out["per_query"] = per
    return out


def rank_top_k(scores: np.ndarray, doc_ids: Sequence[str], k: int) -> np.ndarray:
    """Column indices of the k best scores per row, best first; equal scores by ascending doc id.

    Every doc scoring at least the k-th best value is a candidate, so a tie at the cut-off is
    resolved by doc id too, not by where argpartition happened to put it.

    Args:
        scores: (n_queries, n_docs) scores (a 1-d row is one query).
        doc_ids: the docs' ids, for the tie order.
        k: results per row (at most n_docs).

    Returns:
        (n_queries, min(k, n_docs)) int64 column indices.
    """
    scores = np.atleast_2d(np.asarray(scores))
    n = scores.shape[1]
    k = min(int(k), n)
    id_rank = np.empty(n, dtype=np.int64)
    id_rank[np.argsort(np.asarray(doc_ids, dtype=object), kind="stable")] = np.arange(n)
    out = np.empty((scores.shape[0], k), dtype=np.int64)
    for r, row in enumerate(scores):
        thr = np.partition(row, n - k)[n - k] if k < n else -np.inf
        cand = np.flatnonzero(row >= thr)
        order = np.lexsort((id_rank[cand], -row[cand]))[:k]
        out[r] = cand[order]
    return out


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """cos(a_i, b_i) per row (zero rows give 0)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.divide((a * b).sum(axis=1), den, out=np.zeros(len(a)), where=den > 0)


def sts_correlations(a: np.ndarray, b: np.ndarray, gold: np.ndarray) -> dict:
    """Spearman and Pearson correlation of cos(a_i, b_i) with the gold scores (scipy).

    Args:
        a, b: (n, dim) vectors of the pairs' first and second sentences.
        gold: (n,) gold scores.

    Returns:
        ``{"spearman": float, "pearson": float}``.

    Raises:
        ValueError: fewer than 2 pairs, or not one gold score per pair.
    """
    from scipy.stats import pearsonr, spearmanr

    cos = cosine_rows(a, b)
    gold = np.asarray(gold, dtype=np.float64)
    if len(cos) != len(gold) or len(gold) < 2:
        raise ValueError(f"need >= 2 pairs and one gold score per pair, got {len(cos)} pairs and {len(gold)} scores")
    return {"spearman": float(spearmanr(cos, gold).statistic), "pearson": float(pearsonr(cos, gold).statistic)}
