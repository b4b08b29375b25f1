"""Issue-3 performance check: the engine vs sentence-transformers (torch backend), same run.

Same machine, same process, same thread count, MiniLM fp32, batch size 32, two workloads:

* docs:      the first 1,000 SciFact corpus docs as ``title + " " + text`` (~240 tokens after
             truncation at 256);
* sentences: 2,000 STS-dev sentences (sentence1 of every row, then sentence2 until 2,000).

Each contender encodes the whole workload with ``encode(texts, batch_size=32)`` (each library
batches as it would for a user). Both are warmed up first; then they take turns, alternating
order, for ``--rounds`` passes each; the best pass counts. Reported: texts/s, tokens/s (real
tokens after truncation, the engine's tokenizer), the ratio engine / ST torch, the smallest
cosine between the two libraries' vectors, and whether the target ratio is met (docs >= 1.1x,
sentences >= 1.25x). Writes JSON.

    .venv/bin/python bench/encode_throughput.py [--data DIR] [--rounds 3] [--out FILE]

``--data`` (or $EMBED_BENCH_DATA) is a folder holding scifact/corpus.jsonl and
stsb/sts-dev.csv; default: ../shared/data beside the repository when present.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from engine.benchmark.harness import environment, measure, min_cosine

TARGETS = {"docs": 1.1, "sentences": 1.25}
REPO = Path(__file__).resolve().parents[1]


def data_dir(arg: str | None) -> Path:
    for cand in (arg, os.environ.get("EMBED_BENCH_DATA"), REPO.parent / "shared" / "data"):
        if cand and (Path(cand) / "scifact" / "corpus.jsonl").is_file():
            return Path(cand)
    sys.exit("encode_throughput: no data folder with scifact/corpus.jsonl and stsb/sts-dev.csv found; "
             "pass --data DIR or set EMBED_BENCH_DATA")


def scifact_docs(root: Path, n: int) -> list[str]:
    docs = []
    with (root / "scifact" / "corpus.jsonl").open(encoding="utf-8") as f:
        for line in f:
            if len(docs) == n:
                break
            d = json.loads(line)
            docs.append(f"{d.get('title', '')} {d['text']}")
    return docs


def sts_sentences(root: Path, n: int) -> list[str]:
    """sentence1 of every STS-dev row (tab-separated: genre, file, year, id, score, s1, s2), then
    sentence2 of rows from the top until ``n`` sentences."""
    rows = [line.rstrip("\n").split("\t") for line in (root / "stsb" / "sts-dev.csv").open(encoding="utf-8")]
    rows = [r for r in rows if len(r) >= 7]
    out = [r[5] for r in rows] + [r[6] for r in rows]
    return out[:n]


def run(args) -> dict:
    import torch
    from sentence_transformers import SentenceTransformer

    from engine import Embedder
    from engine.models.fetch import resolve

    root = data_dir(args.data)
    emb = Embedder(args.model, precision="fp32", threads=args.threads)
    threads = emb.threads
    torch.set_num_threads(threads)
    st = SentenceTransformer(str(resolve(args.model).folder), device="cpu")
    bs = args.batch_size
    contenders = {
        "engine": lambda texts: emb.encode(texts, batch_size=bs),
        "st-torch": lambda texts: st.encode(texts, batch_size=bs, show_progress_bar=False, convert_to_numpy=True),
    }
    workloads = {"docs": scifact_docs(root, args.docs), "sentences": sts_sentences(root, args.sentences)}
    report = {
        "what": "engine vs sentence-transformers torch, encode(texts, batch_size), best of rounds",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": {"model": args.model, "fingerprint": emb.fingerprint, "precision": "fp32", "batch_size": bs,
                   "threads": {"engine_intra_op": threads, "torch": torch.get_num_threads()},
                   "rounds": args.rounds, "data": str(root)},
        "environment": environment(),
        "workloads": {},
    }
    for name, texts in workloads.items():
        lens = np.array([len(x) for x in emb.tokenize(texts)])
        for fn in contenders.values():  # warm-up, untimed
            fn(texts[:64])
        print(f"{name}: {len(texts)} texts, {lens.sum():,} tokens (mean {lens.mean():.1f}); "
              f"{args.rounds} rounds per contender ...", file=sys.stderr, flush=True)
        ms = measure(contenders, [texts], repeats=args.rounds, warmup=0)
        vecs = {k: m.outputs[0] for k, m in ms.items()}
        res = {"n_texts": len(texts), "tokens": int(lens.sum()), "mean_tokens": float(lens.mean()), "contenders": {}}
        for k, m in ms.items():
            best = min(m.pass_s)
            res["contenders"][k] = {"texts_per_s": len(texts) / best, "tokens_per_s": float(lens.sum()) / best,
                                    "passes_s": m.pass_s, "best_s": best}
        ratio = res["contenders"]["engine"]["texts_per_s"] / res["contenders"]["st-torch"]["texts_per_s"]
        res.update(ratio=ratio, target=TARGETS[name], target_met=ratio >= TARGETS[name],
                   min_cosine=min_cosine(vecs["engine"], vecs["st-torch"]))
        report["workloads"][name] = res
    return report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=None, help="folder with scifact/ and stsb/ (default $EMBED_BENCH_DATA or ../shared/data)")
    p.add_argument("--model", default="all-MiniLM-L6-v2")
    p.add_argument("--threads", type=int, default=None, help="threads for both (default physical cores)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--docs", type=int, default=1000)
    p.add_argument("--sentences", type=int, default=2000)
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "encode_throughput.json"))
    args = p.parse_args(argv)
    report = run(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'workload':<10} {'contender':<9} {'texts/s':>9} {'tokens/s':>10}")
    for name, w in report["workloads"].items():
        for k, c in w["contenders"].items():
            print(f"{name:<10} {k:<9} {c['texts_per_s']:>9.1f} {c['tokens_per_s']:>10,.0f}")
        print(f"{name:<10} ratio {w['ratio']:.2f}x (target {w['target']}x: {'met' if w['target_met'] else 'NOT met'}), "
              f"min cosine {w['min_cosine']:.7f}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
