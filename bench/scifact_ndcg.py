"""SciFact (BEIR) nDCG@10 of one model at one precision: a small check on top of engine.eval.evaluate.

Corpus docs are embedded as ``title + " " + text``; queries are those of qrels/test.tsv (300);
retrieval is exact cosine top-k; the metrics are ``engine.eval.metrics`` (gain = qrel score, discount
log2(rank + 1), ideal ranking from the qrels) - the same code as ``embed eval``.

Run: .venv/bin/python bench/scifact_ndcg.py --model all-MiniLM-L6-v2 --precision int8 [--data DIR]
Writes bench/results/scifact_<model>_<precision>.json and prints the same JSON (environment left out).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="all-MiniLM-L6-v2")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "int8", "fp16"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument(
        "--data",
        type=Path,
        default=None,
        help="SciFact: corpus.jsonl, queries.jsonl, qrels/test.tsv "
        "(default scifact/ in $EMBED_DATA_DIR, else ../shared/data)",
    )
    ap.add_argument("--out", default=None, help="JSON path (default bench/results/scifact_<model>_<precision>.json)")
    args = ap.parse_args(argv)

    from engine import Embedder
    from engine.benchmark.chip import environment
    from engine.benchmark.data import data_dir
    from engine.eval.evaluate import beir_scores, index_metric_of, load_beir

    try:
        ds = load_beir(args.data or data_dir("scifact"), "test")
    except FileNotFoundError as e:
        sys.exit(f"scifact_ndcg: {e}; pass --data DIR")
    emb = Embedder(args.model, device=args.device, model_precision=args.precision, threads=args.threads)
    t0 = time.perf_counter()
    dv = emb.encode(ds.doc_texts, batch_size=args.batch_size)
    t_docs = time.perf_counter() - t0
    qv = emb.encode(ds.query_texts, batch_size=args.batch_size)
    scores = beir_scores(ds, dv, qv, k_values=(10,), metric=index_metric_of(emb))  # encode gives raw vectors
    docs, qids = ds.doc_ids, ds.query_ids
    result = {
        "model": emb.name,
        "precision": args.precision,
        "fingerprint": emb.fingerprint,
        "docs": len(docs),
        "queries": len(qids),
        "ndcg@10": round(float(scores["ndcg@10"]), 4),
        "docs_per_s": round(len(docs) / t_docs, 2),
        "threads": emb.threads,
    }
    print(json.dumps(result, indent=2))
    result["environment"] = environment()
    out = Path(args.out or Path(__file__).parent / "results" / f"scifact_{emb.name}_{args.precision}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
