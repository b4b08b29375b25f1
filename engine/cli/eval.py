"""``embed eval`` (BEIR retrieval / STS metrics), ``embed compare`` (the model lab) and
``embed select`` (pick a configuration on your own data). Logic lives in engine.eval.evaluate,
engine.eval.lab and engine.eval.select; this module parses arguments and prints."""

from __future__ import annotations

import json
from pathlib import Path

from ..precisions import INDEX_PRECISIONS
from . import add_model_precision

CACHE_HELP = (
    "SQLite embedding cache file (a folder, existing or ending in '/': PATH/embeddings.sqlite in it); "
    "vectors are reused by model fingerprint, precision and exact text, shared with 'embed encode --cache'"
)
RETRIEVAL_COLUMNS = [
    "model",
    "precision",
    "index",
    "dim",
    "ndcg@10",
    "map@10",
    "recall@10",
    "recall@100",
    "mrr@10",
    "precision@10",
    "queries",
]


def _dims(values):
    """``--dims`` values as truncations: integers, None for "full" (or "none", "0")."""
    out = []
    for v in values:
        if str(v).lower() in ("full", "none", "0"):
            out.append(None)
        else:
            try:
                out.append(int(v))
            except ValueError:
                raise SystemExit(f"embed: --dims takes integers or 'full', got {v!r}") from None
    return out


def register(sub) -> None:
    """Add ``embed eval``, ``embed compare`` and ``embed select`` to the subparsers ``sub``."""
    p = sub.add_parser("eval", help="retrieval metrics on a BEIR folder and/or STS correlations")
    p.add_argument("--beir", metavar="DIR", help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv")
    p.add_argument("--split", default="test", help="qrels split (default: test)")
    p.add_argument("--sts", metavar="FILE", help="STS tsv (STS Benchmark csv layout: ... score sentence1 sentence2)")
    p.add_argument(
        "--model", action="append", help="model name or folder; repeat for several (default: all-MiniLM-L6-v2)"
    )
    add_model_precision(p, ("fp32", "bf16", "int8"))
    p.add_argument(
        "--index-precision",
        default="fp32",
        choices=INDEX_PRECISIONS,
        help="exact fp32 scores, or an int8 / binary index with exact rescoring (default: fp32)",
    )
    p.add_argument(
        "--truncate-dim",
        type=int,
        default=None,
        help="Matryoshka truncation (re-normalized for cosine models; a dot model ranks the raw truncated vectors)",
    )
    p.add_argument(
        "--max-docs", type=int, default=None, help="evaluate on a sample: sampled queries keep all their judged docs"
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--embeddings-cache", metavar="PATH", default=None, help=CACHE_HELP)
    p.add_argument("--out", metavar="FILE", help="write all results as JSON")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "compare", help="the model lab: several models side by side (similarities, agreement, speed, t-SNE)"
    )
    p.add_argument(
        "--models", nargs="+", default=None, help="models (default: every catalogued model that is installed)"
    )
    p.add_argument(
        "--texts",
        metavar="FILE",
        default=None,
        help="jsonl with _id/title/text and an optional label (any format 'embed encode' reads; "
        "default: the built-in sample corpus, labelled by topic)",
    )
    p.add_argument("--limit", type=int, default=60, help="texts in the heatmaps (default 60)")
    p.add_argument("--out", metavar="DIR", default="lab", help="output folder for lab.json and PNGs")
    p.add_argument("--embeddings-cache", metavar="PATH", default=None, help=CACHE_HELP)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser(
        "select", help="grid-evaluate models x precisions x index x dims on your data; write a decision record"
    )
    p.add_argument("--beir", metavar="DIR", help="a BEIR folder (instead of --corpus/--queries/--qrels)")
    p.add_argument("--split", default="test")
    p.add_argument("--corpus", metavar="FILE", help="corpus.jsonl (_id, title, text)")
    p.add_argument("--queries", metavar="FILE", help="queries.jsonl (_id, text)")
    p.add_argument("--qrels", metavar="FILE", help="qrels tsv: query-id corpus-id score")
    p.add_argument("--models", nargs="+", default=None, help="models (default: every catalogued model)")
    p.add_argument(
        "--model-precisions",
        "--precisions",
        dest="precisions",
        nargs="+",
        default=["fp32", "int8"],
        choices=["fp32", "bf16", "int8"],
        help="model precisions (--precisions is the former name)",
    )
    p.add_argument(
        "--index-precisions",
        nargs="+",
        default=["fp32", "int8"],
        choices=INDEX_PRECISIONS,
        help="index precisions to measure (default: fp32 int8; binary on request: its recall on a "
        "small corpus can overstate a large one's, see decision.md)",
    )
    p.add_argument("--dims", nargs="+", default=["full", "256", "128", "64"], help="truncations ('full' = model dim)")
    p.add_argument("--tolerance", type=float, default=0.01, help="relative nDCG@10 loss accepted (default 0.01 = 1%%)")
    p.add_argument(
        "--max-docs", type=int, default=None, help="quick run on a sample that keeps the sampled queries' judged docs"
    )
    p.add_argument("--speed-docs", type=int, default=256, help="docs timed for throughput (default 256)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--embeddings-cache", metavar="PATH", default=None, help=CACHE_HELP)
    p.add_argument(
        "--out", metavar="DIR", default="select", help="output folder (results.json, decision.md, pareto.png)"
    )
    p.set_defaults(func=cmd_select)


def cmd_eval(args) -> int:
    """``embed eval``: BEIR retrieval metrics and/or STS correlations per model, as tables (and JSON)."""
    from .. import Embedder
    from ..errors import InputError
    from ..eval.evaluate import (
        evaluate_beir,
        evaluate_sts,
        format_table,
        load_beir,
        subsample,
    )
    from ..models import DEFAULT_MODEL

    if not args.beir and not args.sts:
        raise InputError("nothing to evaluate: give --beir DIR and/or --sts FILE")
    ds = None
    if args.beir:
        ds = load_beir(args.beir, args.split)
        if args.max_docs:
            ds = subsample(ds, args.max_docs)
    results: dict[str, list[dict]] = {"retrieval": [], "sts": []}
    for model in args.model or [DEFAULT_MODEL]:
        emb = Embedder(model, model_precision=args.model_precision)
        if ds is not None:
            print(f"{emb.name} {emb.precision}: {len(ds.doc_ids)} docs, {len(ds.query_ids)} queries ...", flush=True)
            r = evaluate_beir(
                emb,
                ds,
                index_precision=args.index_precision,
                truncate_dim=args.truncate_dim,
                batch_size=args.batch_size,
                embeddings_cache=args.embeddings_cache,
            )
            results["retrieval"].append(r)
        if args.sts:
            r = evaluate_sts(
                emb,
                args.sts,
                batch_size=args.batch_size,
                embeddings_cache=args.embeddings_cache,
                truncate_dim=args.truncate_dim,
            )
            results["sts"].append(r)
    if ds is not None:  # then every model has a retrieval result
        print(f"\nretrieval on {ds.name} ({args.split})")
        rows = [{**r, "index": r["index_precision"]} for r in results["retrieval"]]
        print(format_table(rows, RETRIEVAL_COLUMNS))
    if results["sts"]:
        first = results["sts"][0]
        print(f"\nSTS ({first['dataset']}, {first['pairs']} pairs): correlation of cosine with gold")
        print(format_table(results["sts"], ["model", "precision", "dim", "spearman", "pearson"]))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2))
        print(f"\nwrote {args.out}")
    return 0


def cmd_select(args) -> int:
    """``embed select``: run the grid on the user's data and print the decision record."""
    from ..errors import InputError
    from ..eval.evaluate import load_beir, subsample
    from ..eval.select import run_select
    from ..models import known_names

    if args.beir:
        ds = load_beir(args.beir, args.split, corpus=args.corpus, queries=args.queries, qrels=args.qrels)
    elif args.corpus and args.queries and args.qrels:
        ds = load_beir(None, corpus=args.corpus, queries=args.queries, qrels=args.qrels)
    else:
        raise InputError("give --beir DIR, or all three of --corpus, --queries and --qrels")
    if args.max_docs:
        ds = subsample(ds, args.max_docs)
    run_select(
        ds,
        args.models or known_names(),
        args.out,
        tolerance=args.tolerance,
        max_docs=args.max_docs,
        precisions=args.precisions,
        index_precisions=args.index_precisions,
        dims=_dims(args.dims),
        embeddings_cache=args.embeddings_cache,
        batch_size=args.batch_size,
        speed_docs=args.speed_docs,
        threads=args.threads,
    )
    print((Path(args.out) / "decision.md").read_text())
    return 0


def cmd_compare(args) -> int:
    """``embed compare``: the model lab into ``--out``."""
    from ..eval.lab import run_lab
    from ..models import known_names

    run_lab(
        args.models or known_names(),
        args.out,
        texts_path=args.texts,
        limit=args.limit,
        embeddings_cache=args.embeddings_cache,
    )
    return 0
