"""Datasets and evaluation runs: BEIR retrieval and STS, on top of the pure metrics.

BEIR folder layout: ``corpus.jsonl`` (``_id``, ``title``, ``text``), ``queries.jsonl`` (``_id``,
``text``), ``qrels/<split>.tsv`` (header ``query-id corpus-id score``). Corpus and queries are read
by the corpus reader (``engine.corpus.readers``), so documents are embedded as its one title+text
rule gives them, ``(title + " " + text).strip()`` (BEIR's own); only the queries that appear in the
qrels split are embedded. ``embeddings_cache`` arguments name the SQLite embedding cache
(``engine.corpus.cache.encode_cached``).

STS files: tab-separated ``genre file year id score sentence1 sentence2`` (the STS Benchmark csv,
no header) or any tsv whose last three columns are ``score sentence1 sentence2``.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from ..corpus.cache import encode_cached
from ..corpus.readers import Fields, read_documents
from ..errors import InputError
from .metrics import DEFAULT_KS, evaluate_run, rank_top_k


@dataclass
class BeirDataset:
    """A BEIR dataset in memory: corpus order is file order."""

    doc_ids: list[str]
    doc_texts: list[str]
    query_ids: list[str]
    query_texts: list[str]
    qrels: dict[str, dict[str, int]]
    name: str = ""
    extra: dict = field(default_factory=dict)


def load_qrels(path: str | os.PathLike) -> dict[str, dict[str, int]]:
    """``query-id corpus-id score`` tsv (header optional; TREC's 4 columns too) -> {qid: {doc_id: score}}.

    Raises:
        FileNotFoundError: no file at ``path``.
        InputError: a row without 3 (or 4) columns or with a score that is not a number, by line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"qrels file not found: {path}")
    qrels: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            parts = line.rstrip("\n").split("\t")
            if len(parts) == 1 and not parts[0].strip():
                continue
            if n == 1 and parts[-1].strip().lower() == "score":
                continue
            if len(parts) == 4:  # TREC style: qid 0 docid score
                parts = [parts[0], parts[2], parts[3]]
            if len(parts) != 3:
                raise InputError(
                    f"{path}:{n}: expected 3 tab-separated columns 'query-id corpus-id score', got {len(parts)}"
                )
            try:
                score = int(float(parts[2]))
            except ValueError:
                raise InputError(f"{path}:{n}: score {parts[2]!r} is not a number") from None
            qrels.setdefault(parts[0].strip(), {})[parts[1].strip()] = score
    return qrels


def load_beir(
    folder: str | os.PathLike | None, split: str = "test", *, corpus=None, queries=None, qrels=None
) -> BeirDataset:
    """Load a BEIR folder (or explicit corpus/queries/qrels files, which override the folder's).

    Args:
        folder: the BEIR folder, or None when all three files are given.
        split: the qrels split (``qrels/<split>.tsv``).
        corpus, queries, qrels: file paths replacing the folder's.

    Returns:
        The dataset: every document (file order), the queries judged in the split (queries-file order).

    Raises:
        FileNotFoundError: a missing folder or file (a missing split lists the available ones).
        InputError: qrels name a query the queries file lacks, or a file is malformed.
        TypeError: ``folder`` is None and one of the three files is not given.
    """
    if folder is None:
        if not (corpus and queries and qrels):
            raise TypeError("load_beir() without a folder needs all three of corpus, queries and qrels")
        corpus, queries, qrels_path = Path(corpus), Path(queries), Path(qrels)
    else:
        folder = Path(folder)
        corpus = Path(corpus) if corpus else folder / "corpus.jsonl"
        queries = Path(queries) if queries else folder / "queries.jsonl"
        qrels_path = Path(qrels) if qrels else folder / "qrels" / f"{split}.tsv"
    if folder is not None and not folder.is_dir():
        raise FileNotFoundError(f"BEIR folder not found: {folder}")
    if not qrels_path.is_file() and folder is not None and not qrels:
        have = sorted(p.stem for p in (folder / "qrels").glob("*.tsv")) if (folder / "qrels").is_dir() else []
        raise FileNotFoundError(f"qrels split {split!r} not found at {qrels_path}; available splits: {have or 'none'}")
    for path, what in ((corpus, "corpus"), (queries, "queries")):
        if not path.is_file():
            raise FileNotFoundError(
                f"{what} not found: {path} (a BEIR folder holds corpus.jsonl, queries.jsonl, qrels/<split>.tsv)"
            )
    docs = read_documents(corpus)
    qtext = {q.id: q.text for q in read_documents(queries, Fields(title=None))}
    rels = load_qrels(qrels_path)
    missing = [q for q in rels if q not in qtext]
    if missing:
        raise InputError(f"{len(missing)} query ids in {qrels_path} are not in {queries} (e.g. {missing[0]!r})")
    qids = [q for q in qtext if q in rels]  # queries-file order, only those judged in this split
    return BeirDataset(
        doc_ids=[d.id for d in docs],
        doc_texts=[d.text for d in docs],
        query_ids=qids,
        query_texts=[qtext[q] for q in qids],
        qrels={q: rels[q] for q in qids},
        name=(folder.name if folder is not None else corpus.parent.name),
    )


def subsample(ds: BeirDataset, max_docs: int, seed: int = 0, max_queries: int | None = None) -> BeirDataset:
    """A smaller dataset: sampled queries keep all their judged docs, random others fill to max_docs.

    Queries are drawn (in random order) while their judged docs still fit in ``max_docs``.

    Args:
        ds: the dataset.
        max_docs: documents to keep (at most).
        seed: the sampling seed.
        max_queries: queries to keep (at most); None: as many as fit.

    Returns:
        ``ds`` itself when it already fits, else a new dataset in the original orders.

    Raises:
        InputError: ``max_docs`` cannot hold the judged documents of any query.
    """
    if max_docs >= len(ds.doc_ids) and max_queries is None:
        return ds
    rng = np.random.default_rng(seed)
    pos = {d: i for i, d in enumerate(ds.doc_ids)}
    keep: set[int] = set()
    qsel: list[int] = []
    for qi in rng.permutation(len(ds.query_ids)):
        if max_queries is not None and len(qsel) >= max_queries:
            break
        judged = {pos[d] for d in ds.qrels[ds.query_ids[qi]] if d in pos}
        if len(keep | judged) > max_docs:
            continue
        keep |= judged
        qsel.append(int(qi))
    if not qsel:
        raise InputError(f"max_docs={max_docs} is too small to hold the judged documents of any query; raise it")
    unjudged = [i for i in rng.permutation(len(ds.doc_ids)) if i not in keep]
    others = np.array(unjudged[: max(0, max_docs - len(keep))], dtype=int)
    docs = sorted(keep | set(others.tolist()))
    qsel.sort()
    return BeirDataset(
        doc_ids=[ds.doc_ids[i] for i in docs],
        doc_texts=[ds.doc_texts[i] for i in docs],
        query_ids=[ds.query_ids[i] for i in qsel],
        query_texts=[ds.query_texts[i] for i in qsel],
        qrels={ds.query_ids[i]: ds.qrels[ds.query_ids[i]] for i in qsel},
        name=f"{ds.name}[{len(docs)} docs, {len(qsel)} queries, seed {seed}]",
    )


# -- vectors ----------------------------------------------------------------------------------
def truncate(vecs: np.ndarray, dim: int | None, metric: str = "cosine") -> np.ndarray:
    """Matryoshka: first ``dim`` components, re-normalized (the kernels' truncate_normalize), except
    for ``metric`` "dot": sentence-transformers' encode(truncate_dim=) keeps the raw components of a
    dot model, and dot products of those are what it ranks by."""
    if dim is None or dim >= vecs.shape[1]:
        return vecs
    if metric == "dot":
        return np.ascontiguousarray(vecs[:, :dim])
    from ..kernels import truncate_normalize

    return truncate_normalize(vecs, dim)


# -- retrieval ------------------------------------------------------------------------------
def index_metric_of(embedder) -> str:
    """The ``Index`` metric for ``embedder``'s vectors as eval gets them (``encode_cached``): its
    ``similarity_fn_name`` through the one rule, ``engine.corpus.shards.metric_for`` ("cosine",
    "dot"; "euclidean" ranks as "cosine" when the vectors are unit length: models configured with
    cosine, whose stored vectors are normalized, or ending in an untruncated Normalize module).
    Raises the Index's InputError, which says what to do instead, for a similarity no Index metric
    ranks by (euclidean on raw vectors, manhattan), before anything is embedded."""
    from ..corpus.shards import metric_for
    from ..index.index import Index

    stack = getattr(embedder, "stack", None)
    if stack is None:  # a duck-typed embedder (.encode, .dim, ...): cosine, as encode_cached assumes
        return "cosine"
    unit = stack.similarity_fn_name == "cosine" or (stack.normalizes and stack.truncate_dim is None)
    metric = metric_for(embedder.similarity_fn_name, unit)
    Index(1, metric=metric)  # refuses what it cannot rank by
    return metric


class _Retriever:
    """``doc_vecs`` (row j = ``doc_ids[j]``) held as ``index_precision`` and scored by ``metric``:
    built once, searched at any k (``top_k``); see ``retrieve``."""

    def __init__(self, doc_vecs: np.ndarray, doc_ids: list[str], index_precision: str, metric: str):
        from ..index.index import PRECISIONS, Index

        if index_precision not in PRECISIONS:
            raise InputError(f"index_precision must be one of {', '.join(PRECISIONS)}, got {index_precision!r}")
        # the Index refuses a metric it cannot rank by (euclidean, manhattan) with what to do instead
        index = Index(doc_vecs.shape[1], precision=index_precision, metric=metric)
        self.doc_ids, self.metric = doc_ids, metric
        # exactly one of the two is set
        self.index: Index | None = None
        self.docs: np.ndarray | None = None
        if index_precision == "fp32":  # exact scores in numpy (every query against every doc)
            self.docs = _as_scored(doc_vecs, metric)
        else:
            index.add(doc_vecs, ids=np.arange(len(doc_ids), dtype=np.int64))
            self.index = index

    def top_k(self, query_vecs: np.ndarray, k: int) -> dict[str, list]:
        doc_ids = self.doc_ids
        k = min(k, len(doc_ids))
        if self.index is None:
            assert self.docs is not None  # __init__ sets docs when it sets no index
            scores = _as_scored(query_vecs, self.metric) @ self.docs.T
            idx = rank_top_k(scores, doc_ids, k)
            top = np.take_along_axis(scores, idx, axis=1)
        else:
            top, idx = self.index.search(query_vecs, k=k)
            top = np.asarray(top, dtype=np.float32)
            idx = np.asarray(idx, dtype=np.int64)

            def rank_key(r, j):  # score descending, ties by doc id, empty slots (-1) last
                return (-top[r, j], doc_ids[idx[r, j]] if idx[r, j] >= 0 else "\uffff")

            order = np.array(
                [sorted(range(k), key=partial(rank_key, r)) for r in range(len(idx))], dtype=np.int64
            ).reshape(idx.shape)
            idx = np.take_along_axis(idx, order, axis=1)
            top = np.take_along_axis(top, order, axis=1)
        return {
            "ids": [[doc_ids[j] for j in row if j >= 0] for row in idx],
            "scores": [list(map(float, row)) for row in top],
        }


def _as_scored(x: np.ndarray, metric: str) -> np.ndarray:
    """x as the Index scores it: unit rows for "cosine" (x itself when they are unit already, as
    ``encode_cached`` gives them for cosine models; zero rows stay zero), x for "dot"."""
    if metric != "cosine" or np.allclose(np.einsum("ij,ij->i", x, x), 1, atol=1e-4):
        return x
    from ..kernels import l2_normalize

    return l2_normalize(x)


def retrieve(
    doc_vecs: np.ndarray,
    query_vecs: np.ndarray,
    doc_ids: list[str],
    k: int = 100,
    index_precision: str = "fp32",
    metric: str = "dot",
) -> dict[str, list]:
    """Top-k documents per query, best first, ties by ascending doc id.

    Args:
        doc_vecs: (n_docs, dim) vectors, row j for ``doc_ids[j]``.
        query_vecs: (n_queries, dim) vectors.
        doc_ids: the documents' ids.
        k: results per query (at most ``len(doc_ids)``).
        index_precision: ``fp32``: exact scores in numpy. ``int8`` / ``binary``:
            ``engine.index.Index`` with that precision and metric (its first-stage scan for
            k * oversample candidates, then exact rescoring), then the same deterministic tie order.
        metric: "dot" (inner products of the vectors as given) or "cosine" (of the vectors made
            unit length), the ``Index`` metrics; ``index_metric_of(embedder)`` is the model's.

    Returns:
        ``{"ids": [[doc id, ...] per query], "scores": [[float, ...] per query]}``.

    Raises:
        InputError: an unknown index precision, or a metric the Index cannot rank by.
    """
    return _Retriever(doc_vecs, doc_ids, index_precision, metric).top_k(query_vecs, k)


def beir_scores(
    ds: BeirDataset,
    doc_vecs: np.ndarray,
    query_vecs: np.ndarray,
    *,
    k_values=DEFAULT_KS,
    index_precision: str = "fp32",
    truncate_dim: int | None = None,
    metric: str = "dot",
) -> dict:
    """Metrics for precomputed full vectors, truncated and searched here.

    The metrics at each cutoff k come from a search for k, as ``Index.search(q, k)`` answers it:
    an int8 or binary index rescores k * oversample candidates, so the top 10 of one k=100 search
    (10x the candidates) would overstate a k=10 search. fp32 is exact: one search for the largest
    k gives every cutoff.

    Args:
        ds: the dataset (doc ids, query ids, qrels).
        doc_vecs: (n_docs, dim) vectors, row j for ``ds.doc_ids[j]``.
        query_vecs: (n_queries, dim) vectors, row i for ``ds.query_ids[i]``.
        k_values: the cutoffs.
        index_precision: "fp32", "int8" or "binary" (as in ``retrieve``).
        truncate_dim: Matryoshka truncation (``truncate``), None: the full vectors.
        metric: "dot" or "cosine" (as in ``retrieve``).

    Returns:
        ``evaluate_run``'s means at every cutoff, with ``queries`` and ``excluded_queries``.
    """
    d, q = truncate(doc_vecs, truncate_dim, metric), truncate(query_vecs, truncate_dim, metric)
    retriever = _Retriever(d, ds.doc_ids, index_precision, metric)
    ks = sorted({int(k) for k in k_values})
    res: dict = {}
    for cut in [ks] if index_precision == "fp32" else [[k] for k in ks]:
        run = retriever.top_k(q, max(cut))
        res.update(evaluate_run(ds.qrels, dict(zip(ds.query_ids, run["ids"])), cut))
    return res


def evaluate_beir(
    embedder,
    ds: BeirDataset,
    *,
    k_values=DEFAULT_KS,
    index_precision: str = "fp32",
    truncate_dim: int | None = None,
    batch_size: int = 32,
    embeddings_cache=None,
) -> dict:
    """Embed corpus and queries with ``embedder``, retrieve with the model's metric, score.

    Args:
        embedder: an ``Embedder`` (or anything with ``encode``, ``dim``, ``name``, ``precision``,
            ``fingerprint``).
        ds: the dataset.
        k_values: the cutoffs.
        index_precision: "fp32", "int8" or "binary" (``retrieve``).
        truncate_dim: Matryoshka truncation in [1, embedder.dim]; None: the full vectors.
        batch_size: ``encode``'s batch size.
        embeddings_cache: a SQLite file or folder for ``encode_cached``, or None.

    Returns:
        A JSON-able dict: ``beir_scores``'s metrics plus model, precision, index_precision, metric,
        dim, dataset and docs.

    Raises:
        InputError: ``truncate_dim`` out of range, or a similarity no Index metric ranks by
            (``index_metric_of``), before anything is embedded.
    """
    if truncate_dim is not None and not 1 <= truncate_dim <= embedder.dim:
        raise InputError(f"truncate_dim must be in [1, {embedder.dim}] for {embedder.name}, got {truncate_dim}")
    metric = index_metric_of(embedder)
    docs = encode_cached(embedder, ds.doc_texts, embeddings_cache, batch_size)
    queries = encode_cached(embedder, ds.query_texts, embeddings_cache, batch_size)
    res = beir_scores(
        ds, docs, queries, k_values=k_values, index_precision=index_precision, truncate_dim=truncate_dim, metric=metric
    )
    res.update(
        model=embedder.name,
        precision=embedder.precision,
        index_precision=index_precision,
        metric=metric,
        dim=truncate_dim or embedder.dim,
        dataset=ds.name,
        docs=len(ds.doc_ids),
    )
    return res


# -- STS ------------------------------------------------------------------------------------
def load_sts(path: str | os.PathLike) -> tuple[list[str], list[str], np.ndarray]:
    """(sentences1, sentences2, gold scores as float64) from an STS tsv; quotes are literal text.

    Raises:
        FileNotFoundError: no file at ``path``.
        InputError: a row with fewer than 3 columns or a score that is not a number (a first-line
            header excepted), or no pairs at all.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"STS file not found: {path}")
    s1, s2, gold = [], [], []
    with open(path, encoding="utf-8", newline="") as f:
        for n, row in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), 1):
            if not row or not any(c.strip() for c in row):
                continue
            if len(row) < 3:
                raise InputError(
                    f"{path}:{n}: expected tab-separated '... score sentence1 sentence2', got {len(row)} columns"
                )
            # STS Benchmark rows may carry extra source columns after sentence2
            if len(row) >= 7:
                score, a, b = row[4], row[5], row[6]
            else:
                score, a, b = row[-3], row[-2], row[-1]
            try:
                g = float(score)
            except ValueError:
                if n == 1:
                    continue  # a header
                raise InputError(f"{path}:{n}: score {score!r} is not a number") from None
            s1.append(a)
            s2.append(b)
            gold.append(g)
    if not gold:
        raise InputError(f"{path}: no sentence pairs found")
    return s1, s2, np.asarray(gold, dtype=np.float64)


def evaluate_sts(
    embedder, path: str | os.PathLike, batch_size: int = 32, embeddings_cache=None, truncate_dim: int | None = None
) -> dict:
    """Spearman and Pearson correlation between the pairs' cosine similarity and the gold scores.

    Args:
        embedder: an ``Embedder`` (as in ``evaluate_beir``).
        path: an STS tsv (``load_sts``).
        batch_size: ``encode``'s batch size.
        embeddings_cache: a SQLite file or folder for ``encode_cached``, or None.
        truncate_dim: Matryoshka truncation (re-normalized); None: the full vectors.

    Returns:
        ``{"spearman", "pearson", "model", "precision", "dim", "dataset", "pairs"}``.
    """
    from .metrics import sts_correlations

    s1, s2, gold = load_sts(path)
    a = truncate(encode_cached(embedder, s1, embeddings_cache, batch_size), truncate_dim)
    b = truncate(encode_cached(embedder, s2, embeddings_cache, batch_size), truncate_dim)
    res = sts_correlations(a, b, gold)
    res.update(
        model=embedder.name,
        precision=embedder.precision,
        dim=truncate_dim or embedder.dim,
        dataset=Path(path).name,
        pairs=len(gold),
    )
    return res


def format_table(rows: list[dict], columns: list[str], floatfmt: str = ".4f") -> str:
    """A plain aligned text table (also valid Markdown)."""

    def cell(v):
        return format(v, floatfmt) if isinstance(v, float) else ("" if v is None else str(v))

    body = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(b[i]) for b in body)) if body else len(c) for i, c in enumerate(columns)]
    line = lambda xs: "| " + " | ".join(x.ljust(w) for x, w in zip(xs, widths)) + " |"
    return "\n".join([line(columns), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, body)])
