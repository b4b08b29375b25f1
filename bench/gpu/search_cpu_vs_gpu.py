"""CPU vs GPU exact and int8 search on the same Index, same run.

    python bench/gpu/search_cpu_vs_gpu.py --n 1000000 --dim 384 --nq 1,16,1024 --out search_gpu.json

Times are best of --rounds after a warm-up (the GPU warm-up also uploads the corpus; the upload
is timed separately). Recall of each GPU result against the CPU fp32 result is reported.
"""

from __future__ import annotations

import argparse
import json
import time
from functools import partial

import numpy as np


def best_of(fn, rounds):
    fn()
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--nq", default="1,16,1024")
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default="search_gpu.json")
    a = ap.parse_args()

    from engine import Index
    from engine.benchmark.chip import environment
    from engine.kernels import cuda as kc

    ok, gpu = kc.available()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((a.n, a.dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    rows = []
    for precision in ("fp32", "int8"):
        idx = Index(a.dim, precision=precision)
        idx.add(x)
        if ok:
            t = time.perf_counter()
            idx.search(x[:1], a.k, device="cuda")
            upload = time.perf_counter() - t
        for nq in (int(v) for v in a.nq.split(",")):
            q = x[rng.integers(0, a.n, nq)] + 0.05 * rng.standard_normal((nq, a.dim), dtype=np.float32)
            cpu_s = best_of(partial(idx.search, q, a.k), a.rounds)
            row = {"precision": precision, "nq": nq, "cpu_ms": cpu_s * 1e3}
            if ok:
                gpu_s = best_of(partial(idx.search, q, a.k, device="cuda"), a.rounds)
                _, i_cpu = idx.search(q, a.k)
                _, i_gpu = idx.search(q, a.k, device="cuda")
                recall = np.mean([len(set(r) & set(s)) / a.k for r, s in zip(i_cpu, i_gpu)])
                row.update(gpu_ms=gpu_s * 1e3, speedup=cpu_s / gpu_s, upload_s=upload, recall_vs_cpu=float(recall))
            rows.append(row)
            print(json.dumps(row), flush=True)
    out = {
        "n": a.n,
        "dim": a.dim,
        "k": a.k,
        "gpu": gpu if ok else None,
        "gpu_skipped": None if ok else gpu,
        "rows": rows,
        "environment": environment(),
    }
    with open(a.out, "w") as f:
        json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
