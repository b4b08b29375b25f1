"""``embed demo``: the main job end to end on the built-in sample corpus.

fetch the default model -> export to ONNX (once) -> embed the sample corpus -> index it ->
run the sample queries -> print hits and throughput. Needs nothing outside the package.
"""

from __future__ import annotations

import time
from pathlib import Path

from . import add_model_precision


def register(sub) -> None:
    """Add ``embed demo`` to the subparsers ``sub``."""
    p = sub.add_parser("demo", help="embed and search the built-in sample corpus, print hits and throughput")
    p.add_argument("--model", default=None, help="model name or folder (default: all-MiniLM-L6-v2)")
    add_model_precision(p, ("fp32", "bf16", "int8"))
    p.add_argument("-k", type=int, default=3, help="hits per query")
    p.add_argument("--batch-size", type=int, default=32)
    p.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    """``embed demo``: embed, index and search the sample corpus; print hits and throughput."""
    from .. import Embedder, Index
    from ..corpus.readers import Fields, read_sample
    from ..eval.evaluate import index_metric_of
    from ..models import DEFAULT_MODEL
    from ..models.fetch import fetch

    model = args.model or DEFAULT_MODEL
    if not Path(model).expanduser().is_dir():
        fetch(model)  # no-op when the weights are already installed
    t0 = time.perf_counter()
    emb = Embedder(model, model_precision=args.model_precision)
    metric = index_metric_of(emb)  # the model's similarity (cosine or dot); refuses one no Index ranks by
    print(f"model     {emb.fingerprint}  (ready in {time.perf_counter() - t0:.1f}s, {emb.threads} threads)")

    docs = read_sample("sample_corpus.jsonl")
    queries = read_sample("sample_queries.jsonl", Fields(title=None, extra=("relevant",)))
    texts = [d.text for d in docs]
    emb.encode(texts[:8])  # warm-up: the first call pays one-off allocation costs
    n_tokens = sum(len(x) for x in emb.tokenize(texts))
    t0 = time.perf_counter()
    vecs = emb.encode(texts, batch_size=args.batch_size)
    dt = time.perf_counter() - t0
    print(
        f"corpus    {len(texts)} docs, {n_tokens} tokens embedded in {dt:.2f}s: "
        f"{len(texts) / dt:.1f} docs/s, {n_tokens / dt:,.0f} tokens/s"
    )

    index = Index(emb.dim, model=emb.fingerprint, metric=metric)
    index.add(vecs, ids=[d.id for d in docs], model=emb.fingerprint)
    titles = {d.id: d.title or d.text[:60] for d in docs}
    t0 = time.perf_counter()
    scores, ids = index.search_text(emb, [q.text for q in queries], k=args.k)
    qdt = time.perf_counter() - t0
    found = 0
    for q, row_s, row_i in zip(queries, scores, ids):
        relevant = set(q.extra[0] or [])
        found += bool(relevant & set(row_i.tolist()))
        print(f"\nquery  {q.text}")
        for s, i in zip(row_s, row_i):
            mark = "*" if i in relevant else " "
            print(f"  {mark} {s:.3f}  {i}  {titles[i]}")
    print(
        f"\nsearch    {len(queries)} queries in {qdt * 1000:.1f} ms (embedding included); "
        f"{found}/{len(queries)} have a relevant doc (*) in their top {args.k}"
    )
    print(f"throughput {len(texts) / dt:.1f} docs/s, {n_tokens / dt:,.0f} tokens/s on {emb.device}")
    return 0
