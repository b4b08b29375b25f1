"""SciFact (BEIR) nDCG@10 of one model at one precision: a small, self-contained check.

Corpus docs are embedded as ``title + " " + text``; queries are those of qrels/test.tsv (300);
retrieval is exact cosine top-10; nDCG@10 uses gain = qrel score, discount log2(rank + 1) and the
ideal ranking from the qrels. (The full metrics suite belongs in engine/eval; this stays minimal.)

Run: .venv/bin/python bench/scifact_ndcg.py --model all-MiniLM-L6-v2 --precision int8
Writes bench/results/scifact_<model>_<precision>.json and prints the same JSON.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"


def load_scifact(root: Path = DATA) -> tuple[list[str], list[str], list[str], list[str], dict[str, dict[str, int]]]:
    """(doc_ids, doc_texts, query_ids, query_texts, qrels) with queries restricted to the test qrels."""
    if not (root / "corpus.jsonl").is_file():
        raise SystemExit(f"SciFact not found at {root} (expected corpus.jsonl, queries.jsonl, qrels/test.tsv)")
    doc_ids, docs = [], []
    with open(root / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            doc_ids.append(str(d["_id"]))
            docs.append((d.get("title") or "") + " " + (d.get("text") or ""))
    qrels: dict[str, dict[str, int]] = {}
    with open(root / "qrels" / "test.tsv", encoding="utf-8") as f:
        rows = csv.reader(f, delimiter="\t")
        next(rows)  # header: query-id corpus-id score
        for qid, did, score in rows:
            qrels.setdefault(qid, {})[did] = int(score)
    qtext = {}
    with open(root / "queries.jsonl", encoding="utf-8") as f:
        for line in f:
            q = json.loads(line)
            qtext[str(q["_id"])] = q["text"]
    qids = [q for q in qtext if q in qrels]
    return doc_ids, docs, qids, [qtext[q] for q in qids], qrels


def ndcg_at_k(ranked: list[str], rels: dict[str, int], k: int = 10) -> float:
    """sum_r rel(r) / log2(r + 1) over the top k, divided by the same sum for the ideal order."""
    dcg = sum(rels.get(d, 0) / math.log2(r + 2) for r, d in enumerate(ranked[:k]))
    ideal = sorted(rels.values(), reverse=True)[:k]
    idcg = sum(g / math.log2(r + 2) for r, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def top_k(q: np.ndarray, d: np.ndarray, k: int = 10) -> np.ndarray:
    """Indices of the k highest cosine scores per query row (vectors are unit length)."""
    scores = q @ d.T
    part = np.argpartition(-scores, k, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, 1), axis=1, kind="stable")
    return np.take_along_axis(part, order, 1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="all-MiniLM-L6-v2")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "int8", "fp16"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--out", default=None, help="JSON path (default bench/results/scifact_<model>_<precision>.json)")
    args = ap.parse_args(argv)

    from engine import Embedder

    doc_ids, docs, qids, queries, qrels = load_scifact()
    emb = Embedder(args.model, device=args.device, precision=args.precision, threads=args.threads)
    t0 = time.perf_counter()
    dv = emb.encode(docs, batch_size=args.batch_size)
    t_docs = time.perf_counter() - t0
    qv = emb.encode(queries, batch_size=args.batch_size)
    top = top_k(qv, dv, 10)
    per_query = [ndcg_at_k([doc_ids[j] for j in row], qrels[q]) for q, row in zip(qids, top)]
    result = {
        "model": emb.name,
        "precision": args.precision,
        "fingerprint": emb.fingerprint,
        "docs": len(docs),
        "queries": len(qids),
        "ndcg@10": round(float(np.mean(per_query)), 4),
        "docs_per_s": round(len(docs) / t_docs, 2),
        "threads": emb.threads,
    }
    out = Path(args.out or f"bench/results/scifact_{emb.name}_{args.precision}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
