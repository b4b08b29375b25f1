"""Issue-9 check: ``embed encode`` locally vs on Ray (1 and 2 actors), same machine, same run.

The first N SciFact docs (default 1,000) with all-MiniLM-L6-v2 fp32, no embedding cache,
shards of 250, into fresh output folders:

* local:          ``embed_corpus`` with threads = all the CPUs given to Ray (``--cpus``);
* ray-1x{cpus}:   ``embed_corpus_ray``, 1 actor with all of them (threads = CPUs per actor);
* ray-{cpus}x1:   ``embed_corpus_ray``, one actor per CPU, 1 thread each.

A local Ray cluster is started once (``ray.init(num_cpus=--cpus)``) before anything is timed. Each
contender first runs on the first 16 docs (warm-up: model load, actor start-up, OS caches); its
cost is reported as ``startup_s``. Reported per contender: ``total_s`` and ``docs_per_s`` of the
full run (what a user waits for, actor start-up included) and ``steady_docs_per_s`` =
N / (total_s - startup_s). Also the largest |difference| of the Ray vectors from the local ones.

    .venv/bin/python bench/ray_throughput.py [--docs 1000] [--cpus 2] [--out bench/results/ray_throughput.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from engine.benchmark.data import data_dir

REPO = Path(__file__).resolve().parents[1]
SHARD = 250
WARMUP_DOCS = 16


def head(src: Path, dst: Path, n: int) -> Path:
    with src.open(encoding="utf-8") as f, dst.open("w", encoding="utf-8") as g:
        for _, line in zip(range(n), f):
            g.write(line)
    return dst


def vectors(out: Path) -> tuple[list[str], np.ndarray]:
    from engine.corpus.shards import iter_shards

    ids, vecs = [], []
    for i, _, v in iter_shards(out):
        ids += i
        vecs.append(v)
    return ids, np.concatenate(vecs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=1000)
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster (and local threads)")
    ap.add_argument("--model", default="all-MiniLM-L6-v2")
    ap.add_argument(
        "--data",
        type=Path,
        default=None,
        help="folder with scifact/corpus.jsonl (default $EMBED_DATA_DIR, else ../shared/data)",
    )
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "ray_throughput.json"))
    args = ap.parse_args()
    scifact = (args.data or data_dir(must_exist=False)) / "scifact" / "corpus.jsonl"
    if not scifact.is_file():
        sys.exit(f"ray_throughput: {scifact} not found; pass --data DIR or set EMBED_DATA_DIR")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import ray

    from engine.benchmark.chip import environment
    from engine.corpus import embed_corpus
    from engine.corpus.ray import embed_corpus_ray
    from engine.embedder import Embedder

    tmp = Path(tempfile.mkdtemp(prefix="ray-bench-"))
    full = head(scifact, tmp / "docs.jsonl", args.docs)
    warm = head(scifact, tmp / "warm.jsonl", WARMUP_DOCS)
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        embedder = Embedder(args.model, threads=args.cpus)
        contenders = {
            "local": lambda src, out: embed_corpus(src, out, embedder, shard_size=SHARD, cache=False),
            f"ray-1x{args.cpus}": lambda src, out: embed_corpus_ray(
                src, out, args.model, actors=1, cpus_per_actor=args.cpus, shard_size=SHARD, cache=False
            ),
            f"ray-{args.cpus}x1": lambda src, out: embed_corpus_ray(
                src, out, args.model, actors=args.cpus, cpus_per_actor=1, shard_size=SHARD, cache=False
            ),
        }
        results, ref = {}, None
        for name, run in contenders.items():
            t = time.perf_counter()
            run(warm, tmp / f"warm-{name}")
            startup = time.perf_counter() - t
            t = time.perf_counter()
            s = run(full, tmp / name)
            total = time.perf_counter() - t
            ids, v = vectors(tmp / name)
            if ref is None:
                ref = (ids, v)
            assert ids == ref[0] and s.docs == args.docs
            results[name] = {
                "docs": s.docs,
                "total_s": round(total, 2),
                "docs_per_s": round(s.docs / total, 1),
                "startup_s": round(startup, 2),
                "steady_docs_per_s": round(s.docs / max(total - startup, 1e-9), 1),
                "max_abs_diff_vs_local": float(np.abs(v - ref[1]).max()),
            }
            print(name, results[name], flush=True)
    finally:
        ray.shutdown()
    report = {
        "benchmark": "ray_throughput",
        "model": args.model,
        "docs": args.docs,
        "shard_size": SHARD,
        "ray_cpus": args.cpus,
        "ray_version": ray.__version__,
        "environment": environment(),
        "note": "one pass each on a shared, contended machine; local threads = Ray CPUs",
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
