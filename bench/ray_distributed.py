"""Issue-27 check: the driver's own CPU per document, driver path vs distributed path, and the projection.

Synthesizes N unique SciFact-like documents (SciFact texts, each copy with its own id and a
copy number in its text, so nothing repeats) into --files Parquet parts, starts a local Ray
cluster (``ray.init(num_cpus=--cpus)``) and embeds them, no embedding cache, into fresh folders:

* driver:       ``embed_corpus_ray`` (issue 9's path: the driver reads, hashes, ships texts,
                receives vectors and writes every shard);
* distributed:  ``embed_corpus_distributed`` (workers read, embed and write; the driver plans).

Each contender first runs on one small part (warm-up: export, actor start, OS caches). Reported:
docs/s of the full run, the driver process's CPU seconds (``time.process_time``: user + system,
all of its threads, Ray's included) per document in microseconds and the ceiling it implies
(docs/s per driver core), and for the distributed path the writers' own timings (seconds per
file): per-writer docs/s, and the projected throughput of N nodes of --cpus writers each:
N x cpus x per-writer rate (its driver handles counts and shard records, no documents, so its CPU
grows with time and files, ``driver_cpu_ms_per_wall_s``, not with documents); for the driver
path min(N x cpus x its per-actor rate, its driver ceiling). The outputs must hold the same ids; the largest
|difference| of the vectors is reported. --model tiny builds the tests' 2-layer, 32-hidden
random-weight model (the ~free model: it measures everything but the model).

    .venv/bin/python bench/ray_distributed.py [--docs 20000] [--files 8] [--cpus 2] [--model tiny]
        [--only distributed] [--out bench/results/ray_distributed.json]

--only distributed with --docs 1000000 is the bounded-memory run: the driver's peak RSS
(``ru_maxrss``) and the largest writer RSS seen (sampled every 0.5 s) are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from engine.benchmark.data import data_dir

# run with cwd = the repository root, so that the tests package is importable (as bench/corpus_memory.py does)
BUILD_TINY = (
    "import sys, pathlib; from tests.conftest import build_tiny_model; build_tiny_model(pathlib.Path(sys.argv[1]))"
)

REPO = Path(__file__).resolve().parents[1]
SHARD = 10_000
NODES = (1, 2, 4, 8, 16, 64)


def synthesize(scifact: Path, folder: Path, n: int, files: int) -> list[Path]:
    """n unique documents from SciFact's texts (cut to 400 characters) in `files` Parquet parts."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    base = [json.loads(line) for line in scifact.open(encoding="utf-8")]
    folder.mkdir(parents=True, exist_ok=True)
    per, paths = -(-n // files), []
    for k in range(files):
        lo, hi = k * per, min(n, (k + 1) * per)
        rows = [base[i % len(base)] for i in range(lo, hi)]
        table = pa.table(
            {
                "_id": [f"{r['_id']}-{i}" for i, r in zip(range(lo, hi), rows)],
                "title": [r.get("title", "") for r in rows],
                "text": [f"{i} {r['text'][:400]}" for i, r in zip(range(lo, hi), rows)],
            }
        )
        paths.append(folder / f"part-{k:03d}.parquet")
        pq.write_table(table, paths[-1])
    return paths


class RssSampler:
    """The largest RSS of this process's descendants named like the writer actors, every 0.5 s."""

    def __init__(self):
        self.peak_mb, self._stop = 0.0, threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        import psutil

        while not self._stop.wait(0.5):
            for p in psutil.Process().children(recursive=True):
                try:
                    if "_Writer" in " ".join(p.cmdline()) or "EmbedBatch" in " ".join(p.cmdline()):
                        self.peak_mb = max(self.peak_mb, p.memory_info().rss / 2**20)
                except psutil.Error:
                    pass

    def stop(self) -> float:
        self._stop.set()
        self._t.join()
        return round(self.peak_mb, 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=20_000)
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster = writer actors")
    ap.add_argument("--model", default="tiny", help="'tiny' (the ~free model) or a model name / folder")
    ap.add_argument("--only", choices=["driver", "distributed"], default=None)
    ap.add_argument(
        "--data",
        type=Path,
        default=None,
        help="folder with scifact/corpus.jsonl (default $EMBED_DATA_DIR, else ../shared/data)",
    )
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "ray_distributed.json"))
    args = ap.parse_args()
    scifact = (args.data or data_dir(must_exist=False)) / "scifact" / "corpus.jsonl"
    if not scifact.is_file():
        sys.exit(f"ray_distributed: {scifact} not found; pass --data DIR or set EMBED_DATA_DIR")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import ray

    from engine.benchmark.chip import environment
    from engine.corpus import load_embeddings
    from engine.corpus.distributed import embed_corpus_distributed
    from engine.corpus.ray import embed_corpus_ray

    tmp = Path(tempfile.mkdtemp(prefix="ray-dist-bench-"))
    model = args.model
    if model == "tiny":  # built in a child run from the repository root, where the tests package is importable
        model = str(tmp / "tiny")
        subprocess.run([sys.executable, "-c", BUILD_TINY, model], cwd=REPO, check=True)
    parts = synthesize(scifact, tmp / "corpus", args.docs, args.files)
    warm = synthesize(scifact, tmp / "warm", 200, 1)
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    kw = {"shard_size": SHARD, "cache": False, "cache_dir": tmp / "cache", "actors": args.cpus}
    contenders = {
        "driver": lambda src, out, stats: embed_corpus_ray(src, out, model, **kw),
        "distributed": lambda src, out, stats: embed_corpus_distributed(src, out, model, stats=stats, **kw),
    }
    results, ref = {}, None
    try:
        for name, run in contenders.items():
            if args.only and name != args.only:
                continue
            run(warm, tmp / f"warm-{name}", [])
            sampler, stats = RssSampler(), []
            cpu, t = time.process_time(), time.perf_counter()
            s = run(parts, tmp / name, stats)
            wall, cpu = time.perf_counter() - t, time.process_time() - cpu
            writer_rss = sampler.stop()
            us = cpu / s.docs * 1e6
            r = {
                "docs": s.docs,
                "wall_s": round(wall, 2),
                "docs_per_s": round(s.docs / wall, 1),
                "driver_cpu_s": round(cpu, 3),
                "driver_cpu_us_per_doc": round(us, 2),
                "driver_ceiling_docs_per_s": round(1e6 / us),
                "driver_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "worker_peak_rss_mb": writer_rss,
            }
            r["driver_cpu_ms_per_wall_s"] = round(cpu / wall * 1e3, 1)
            if stats:  # the writers' own timings; the driver does no per-document work: no ceiling
                rate = sum(x["docs"] for x in stats) / sum(x["seconds"] for x in stats)
                ceiling = float("inf")
            else:  # the actors' share of the run; the driver's CPU per document caps the cluster
                rate, ceiling = s.docs / wall / args.cpus, 1e6 / us
            r["worker_docs_per_s"] = round(rate, 1)
            r["projected_docs_per_s"] = {n: round(min(n * args.cpus * rate, ceiling)) for n in NODES}
            if args.docs <= 100_000:
                ids, v = load_embeddings(tmp / name)
                if ref is None:
                    ref = (ids, v)
                assert ids == ref[0], "the two paths' ids differ"
                r["max_abs_diff_vs_first"] = float(np.abs(v - ref[1]).max())
            results[name] = r
            print(name, json.dumps(r), flush=True)
    finally:
        ray.shutdown()
    report = {
        "benchmark": "ray_distributed",
        "model": args.model,
        "docs": args.docs,
        "files": args.files,
        "shard_size": SHARD,
        "ray_cpus": args.cpus,
        "ray_version": ray.__version__,
        "environment": environment(),
        "note": "one pass each on a shared 2-vCPU machine",
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
