"""CPU batching: engine throughput per attention-cell budget (rows x tokens^2) and batch workers.

For fp32 and int8, times ``Embedder.encode`` on SciFact docs (mostly 256 tokens after
truncation) and STS-dev sentences (~15 tokens) with ``max_cells`` set to k x 256^2 for several
k, and with no cap (the old rule: batch_size texts per call), each with every ``--workers``
value (1: one session splits each operator over all threads; N: N threads each run whole
batches on a single-threaded session). Settings alternate round by round and each keeps its
best round; the ratios to "no cap, 1 worker" in the same run are what matter. Texts from --data
(default $EMBED_DATA_DIR, else ../shared/data beside the repository; SciFact docs and STS-dev
sentence1/sentence2 in turn).

Run: .venv/bin/python bench/token_budget.py [--docs 200] [--sents 1000] [--rounds 3]
Writes bench/results/token_budget_<model>.json.
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
    ap.add_argument("--docs", type=int, default=200)
    ap.add_argument("--sents", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--ks", default="1,2,4,8,16", help="budgets, in units of 256^2 cells")
    ap.add_argument("--precisions", default="fp32,int8")
    ap.add_argument("--workers", default="1", help="batch_workers values, e.g. 1,2")
    ap.add_argument(
        "--data",
        type=Path,
        default=None,
        help="folder with scifact/ and stsb/sts-dev.csv (default $EMBED_DATA_DIR, else ../shared/data)",
    )
    ap.add_argument("--out", default=None, help="JSON path (default bench/results/token_budget_<model>.json)")
    args = ap.parse_args(argv)

    from engine import Embedder
    from engine.benchmark.chip import environment
    from engine.benchmark.data import data_dir, scifact_sts_texts

    try:
        sets = scifact_sts_texts(args.data or data_dir(), args.docs, args.sents)
    except FileNotFoundError as e:
        sys.exit(f"token_budget: {e}; pass --data DIR")
    caps = {"no cap": None, **{f"{k} x 256^2": int(k) * 256 * 256 for k in args.ks.split(",") if k}}
    workers = [int(w) for w in args.workers.split(",")]
    settings = {f"{c}, {w}w": (cells, w) for c, cells in caps.items() for w in workers}
    base_name = f"no cap, {workers[0]}w"
    results = {}
    for precision in args.precisions.split(","):
        emb = Embedder(args.model, model_precision=precision, threads=args.threads)
        emb.encode(sets["docs"][:8] + sets["sents"][:64])  # warm-up
        best = {s: {k: 0.0 for k in sets} for s in settings}
        for r in range(args.rounds):
            order = list(settings) if r % 2 == 0 else list(reversed(settings))
            for name in order:
                emb.max_cells, emb.batch_workers = settings[name]
                for k, texts in sets.items():
                    t = time.perf_counter()
                    emb.encode(texts, batch_size=args.batch_size)
                    best[name][k] = max(best[name][k], len(texts) / (time.perf_counter() - t))
        base = best[base_name]
        results[precision] = {
            name: {k: {"per_s": round(v, 2), "x_base": round(v / base[k], 3)} for k, v in row.items()}
            for name, row in best.items()
        }
        for name, row in results[precision].items():
            print(
                f"{args.model} {precision:5s} {name:>16s}"
                f"  docs {row['docs']['per_s']:8.1f}/s ({row['docs']['x_base']:.2f}x)"
                f"  sents {row['sents']['per_s']:8.1f}/s ({row['sents']['x_base']:.2f}x)",
                flush=True,
            )
    out = Path(args.out or Path(__file__).parent / "results" / f"token_budget_{args.model}.json")
    out.write_text(
        json.dumps(
            {
                "model": args.model,
                "threads": args.threads,
                "batch_size": args.batch_size,
                "docs": len(sets["docs"]),
                "sents": len(sets["sents"]),
                "rounds": args.rounds,
                "base": base_name,
                "results": results,
                "environment": environment(),
            },
            indent=2,
        )
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
