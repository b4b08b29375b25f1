"""Exact/int8 top-k search: our kernels vs FAISS vs numpy, against the memory-bandwidth bound.

    python bench/search_bench.py --n 1000000 --dim 384 --nq 1,16,256,1024 -k 10 \
        --out bench/results/search.json

All contenders run in the same process on the same unit vectors (clustered, queries near
corpus points), after a warm-up call each, alternating round by round; the best round counts
(median kept too). Contenders:

* ``ours_fp32``   ``Index(precision="fp32").search`` (fused scan / sgemm+heaps, exact)
* ``ours_int8``   ``Index(precision="int8")`` saved and re-loaded with ``mmap=True``:
                  int8 scan for k*oversample candidates + exact rescoring from the mapped fp32
* ``faiss_flat``  ``faiss.IndexFlatIP``
* ``faiss_sq8``   ``faiss.IndexScalarQuantizer(d, QT_8bit, METRIC_INNER_PRODUCT)``
                  (a fused int8 scan below ``qgemm.gemm_min_queries()`` queries, a blocked onnxruntime
                  MatMulInteger GEMM from there on)
* ``numpy``       ``Q @ X.T`` + ``argpartition`` + sort of the k best (in query blocks of 128)
* ``ours_binary`` ``Index(precision="binary")`` saved and re-loaded with ``mmap=True``: popcount
                  scan of the sign bits for k * oversample candidates (default 40) + exact rescoring
* ``faiss_binary`` ``faiss.IndexBinaryFlat`` over the same sign bits (``np.packbits``) for the same
                  k * oversample candidates, re-ranked by the same exact rescoring (the binary +
                  rescore recipe sentence-transformers builds on FAISS); the scan is the difference

Bandwidth bound: one parallel Numba pass summing the fp32 matrix (and the int8 codes), timed
the same way; ``bound/ours`` near 1 means the scan runs at memory speed. Recall@k is against
``ours_fp32`` (exact). Needs faiss-cpu (``pip install faiss-cpu``); without it the FAISS rows
are skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numba
import numpy as np
from numba import njit, prange

from engine.benchmark.chip import chip_line, environment
from engine.index import Index
from engine.index.qgemm import gemm_min_queries
from engine.kernels.normalize import l2_normalize


@njit(cache=True, fastmath=True, parallel=True)
def _sum_rows_f32(x, out):
    """out_i = sum_j x_ij  (one streaming pass: the memory-bandwidth bound of a scan)."""
    for i in prange(x.shape[0]):
        acc = np.float32(0.0)
        for j in range(x.shape[1]):
            acc += x[i, j]
        out[i] = acc


@njit(cache=True, fastmath=True, parallel=True)
def _sum_rows_i8(x, out):
    """out_i = sum_j x_ij  over int8 codes (int32 accumulation)."""
    for i in prange(x.shape[0]):
        acc = np.int32(0)
        for j in range(x.shape[1]):
            acc = np.int32(acc + np.int32(x[i, j]))
        out[i] = acc


def make_data(n, d, nq_max, seed=0, chunk=100_000):
    rng = np.random.default_rng(seed)
    centers = l2_normalize(rng.standard_normal((1000, d), dtype=np.float32))
    x = np.empty((n, d), np.float32)
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        x[a:b] = centers[rng.integers(0, 1000, b - a)] + 0.08 * rng.standard_normal((b - a, d), dtype=np.float32)
        x[a:b] = l2_normalize(x[a:b])
    q = x[rng.integers(0, n, nq_max)] + 0.05 * rng.standard_normal((nq_max, d), dtype=np.float32)
    return x, l2_normalize(q)


def numpy_search(x, q, k, block=128):
    out_s = np.empty((q.shape[0], k), np.float32)
    out_i = np.empty((q.shape[0], k), np.int64)
    for a in range(0, q.shape[0], block):
        s = q[a : a + block] @ x.T
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]
        ps = np.take_along_axis(s, part, 1)
        order = np.argsort(-ps, axis=1, kind="stable")
        out_i[a : a + block] = np.take_along_axis(part, order, 1)
        out_s[a : a + block] = np.take_along_axis(ps, order, 1)
    return out_s, out_i


def recall(found, truth):
    k = truth.shape[1]
    return float(np.mean([len(set(a.tolist()) & set(b.tolist())) / k for a, b in zip(found, truth)]))


def timed(fn):
    t = time.perf_counter()
    r = fn()
    return time.perf_counter() - t, r


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--nq", default="1,16,1024")
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds per contender (nq <= 64)")
    ap.add_argument("--rounds-large", type=int, default=2, help="timed rounds per contender for nq > 64")
    ap.add_argument("--oversample", type=int, default=None, help="int8 oversampling (default: the Index's)")
    ap.add_argument("--binary-oversample", type=int, default=None, help="binary oversampling (default: the Index's)")
    ap.add_argument("--skip", default="", help="comma-separated contenders to skip")
    ap.add_argument(
        "--omp-wait-policy",
        default="passive",
        help="OMP_WAIT_POLICY for numba's and FAISS's OpenMP runtimes ('' keeps the environment's)",
    )
    ap.add_argument("--out", default=None)
    return ap.parse_args(argv)


def build_indexes(x, workdir, precisions=("int8", "binary")):
    """Our fp32 Index in memory, and our int8 and binary Indexes saved to ``workdir`` and re-loaded
    with ``mmap=True`` (resident: codes and ids; the fp32 rows are read for rescoring only)."""
    d = x.shape[1]
    fp = Index(d, "fp32")
    fp.add(x)
    out = [fp]
    for precision in precisions:
        build = Index(d, precision)
        build.add(x)
        path = os.path.join(workdir, f"{precision}.eidx")
        build.save(path)
        del build
        out.append(Index.load(path, mmap=True, verify=False))
    return out


def add_faiss(contenders, x, k, skip):
    """Add the FAISS contenders unless skipped; returns faiss's version (None when skipped or not installed)."""
    if {"faiss_flat", "faiss_sq8"} <= skip:
        return None
    try:
        import faiss
    except ImportError:
        print("faiss not installed: skipping FAISS (pip install faiss-cpu)", file=sys.stderr)
        return None
    n, d = x.shape
    flat = faiss.IndexFlatIP(d)
    flat.add(x)
    sq8 = faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
    sq8.train(x[: min(n, 100_000)])
    sq8.add(x)
    contenders["faiss_flat"] = lambda q: flat.search(q, k)
    contenders["faiss_sq8"] = lambda q: sq8.search(q, k)
    return faiss.__version__


def faiss_binary_contender(x, vecs, k, oversample):
    """``faiss.IndexBinaryFlat`` over the sign bits for ``k * oversample`` candidates, then the
    exact rescoring our binary Index runs (from the same memory-mapped ``vecs``); None without faiss."""
    try:
        import faiss
    except ImportError:
        return None
    from engine.kernels.topk import rescore

    n, d = x.shape
    index = faiss.IndexBinaryFlat(d)
    for a in range(0, n, 100_000):
        index.add(np.packbits(x[a : a + 100_000] > 0, axis=1))
    m = min(n, k * oversample)

    def search(q):
        _, cand = index.search(np.packbits(q > 0, axis=1), m)
        return rescore(vecs, q, cand, k)

    return search


def bandwidth_bound(x, codes, rounds):
    """Best time (s) of one parallel pass over the fp32 matrix and over the int8 codes."""
    n = x.shape[0]
    sums = np.empty(n, np.float32)
    sums8 = np.empty(n, np.int32)
    _sum_rows_f32(x[:1000], sums[:1000])
    _sum_rows_i8(codes[:1000], sums8[:1000])
    bw32, bw8 = [], []
    for _ in range(rounds):
        bw32.append(timed(lambda: _sum_rows_f32(x, sums))[0])
        bw8.append(timed(lambda: _sum_rows_i8(codes, sums8))[0])
    return min(bw32), min(bw8)


def run_contenders(contenders, q_all, nqs, rounds_small, rounds_large):
    """Time every contender at every query count (warm-up first, alternating order); ``nq -> name -> stats``."""
    results = {}
    for nq in nqs:
        q = np.ascontiguousarray(q_all[:nq])
        warm_q = q[: min(nq, 128)]  # same code paths as nq (thresholds at 64 queries)
        for fn in contenders.values():  # warm-up (compiles, page cache, thread pools)
            fn(warm_q)
        rounds = rounds_small if nq <= 64 else rounds_large
        times = {name: [] for name in contenders}
        outs = {}
        for r in range(rounds):
            names = list(contenders) if r % 2 == 0 else list(reversed(contenders))  # alternate
            for name in names:
                dt, out = timed(lambda fn=contenders[name], q=q: fn(q))
                times[name].append(dt)
                outs[name] = out
        truth = outs["ours_fp32"][1] if "ours_fp32" in outs else None
        row = {}
        for name in contenders:
            ids = outs[name][1]
            row[name] = {
                "best_ms": min(times[name]) * 1e3,
                "median_ms": statistics.median(times[name]) * 1e3,
                "rounds": rounds,
                "recall_at_k": recall(ids, truth) if truth is not None else None,
            }
        results[nq] = row
        line = ", ".join(f"{nm} {v['best_ms']:.1f} ms (r={v['recall_at_k']:.3f})" for nm, v in row.items())
        print(f"nq={nq}: {line}", flush=True)
    return results


def speed_ratios(results, bound32, bound8):
    """``nq -> ratio name -> value`` (None where a contender is missing)."""

    def ratio(a, b):
        return a / b if a and b else None

    table = {}
    for nq, row in results.items():
        g = lambda nm, row=row: row.get(nm, {}).get("best_ms")
        table[nq] = {
            "bound_fp32_over_ours_fp32": ratio(bound32 * 1e3, g("ours_fp32")),
            "ours_fp32_over_bound_fp32": ratio(g("ours_fp32"), bound32 * 1e3),
            "faiss_flat_over_ours_fp32": ratio(g("faiss_flat"), g("ours_fp32")),
            "numpy_over_ours_fp32": ratio(g("numpy"), g("ours_fp32")),
            "ours_fp32_over_ours_int8": ratio(g("ours_fp32"), g("ours_int8")),
            "faiss_sq8_over_ours_int8": ratio(g("faiss_sq8"), g("ours_int8")),
            "ours_int8_over_bound_int8": ratio(g("ours_int8"), bound8 * 1e3),
            "ours_fp32_over_ours_binary": ratio(g("ours_fp32"), g("ours_binary")),
            "faiss_binary_over_ours_binary": ratio(g("faiss_binary"), g("ours_binary")),
        }
    return table


def check_targets(table, mem_ratio):
    """Each target -> met (True/False), or None where its query count or contenders were not run."""

    def at(nq, key, bound):
        v = table.get(nq, {}).get(key)
        return None if v is None else v >= bound

    def every(key, bound):
        vals = [table[nq].get(key) for nq in table]
        return None if not vals or any(v is None for v in vals) else all(v >= bound for v in vals)

    bw = table.get(1, {}).get("ours_fp32_over_bound_fp32")
    return {
        "fp32 within 1.3x of bandwidth bound at nq=1": None if bw is None else bw <= 1.3,
        "fp32 >= 2x FAISS FlatIP at nq=1": at(1, "faiss_flat_over_ours_fp32", 2),
        "fp32 >= 2x FAISS FlatIP at nq=16": at(16, "faiss_flat_over_ours_fp32", 2),
        "fp32 >= 1x FAISS FlatIP at nq=1024": at(1024, "faiss_flat_over_ours_fp32", 1),
        "int8 >= 3x our fp32 at nq=1": at(1, "ours_fp32_over_ours_int8", 3),
        "int8 >= 1x our fp32 at every nq": every("ours_fp32_over_ours_int8", 1),
        "binary >= 1x FAISS IndexBinaryFlat (+ the same rescoring) at every nq": every(
            "faiss_binary_over_ours_binary", 1
        ),
        "int8 >= 2x FAISS SQ8 at every nq": every("faiss_sq8_over_ours_int8", 2),
        "int8 resident memory <= 26% of fp32": mem_ratio <= 0.26,
    }


def print_summary(report, names):
    """The Markdown table, memory, recall and targets of ``report`` (contenders in the order ``names``)."""
    cfg, bw, mem = report["config"], report["bandwidth"], report["memory"]
    results, table = report["results_ms"], report["ratios"]
    print()
    print(chip_line(report.get("environment")))
    print(
        f"n={cfg['n']}, dim={cfg['dim']}, k={cfg['k']}; best of rounds (ms); "
        f"bandwidth bound fp32 {bw['fp32_pass_ms']:.1f} ms, int8 {bw['int8_pass_ms']:.1f} ms"
    )
    print(
        "| nq | " + " | ".join(names) + " | fp32/bound | FlatIP/fp32 | fp32/int8 | SQ8/int8 | fp32/binary "
        "| FAISS binary/binary |"
    )
    print("|---" * (len(names) + 7) + "|")
    for nq, row in results.items():
        r = table[nq]
        f = lambda v: f"{v:.2f}x" if v else "-"
        print(
            f"| {nq} | "
            + " | ".join(f"{row[nm]['best_ms']:,.1f}" for nm in names)
            + f" | {f(r['ours_fp32_over_bound_fp32'])} | {f(r['faiss_flat_over_ours_fp32'])}"
            f" | {f(r['ours_fp32_over_ours_int8'])} | {f(r['faiss_sq8_over_ours_int8'])}"
            f" | {f(r['ours_fp32_over_ours_binary'])} | {f(r['faiss_binary_over_ours_binary'])} |"
        )
    load_start = report["machine"]["load_average_start_end"][0]
    print(f"load average (1/5/15 min) at start {load_start}, at end {list(os.getloadavg())}")
    print(
        f"\nint8 index resident memory: {mem['int8_resident_bytes'] / 1e6:.1f} MB "
        f"vs fp32 {mem['fp32_resident_bytes'] / 1e6:.1f} MB ({mem['int8_over_fp32']:.1%}); "
        f"fp32 vectors memory-mapped for rescoring ({mem['int8_mapped_bytes'] / 1e6:.1f} MB on disk); "
        f"binary {mem['binary_resident_bytes'] / 1e6:.1f} MB ({mem['binary_over_fp32']:.1%})"
    )
    print(
        "recall@k vs exact: "
        + "; ".join(
            f"nq={nq}: " + ", ".join(f"{nm} {v['recall_at_k']:.3f}" for nm, v in row.items())
            for nq, row in results.items()
        )
    )
    for name, ok in report["targets"].items():
        print(f"  [{'met' if ok else 'MISSED' if ok is not None else 'n/a'}] {name}")


def main(argv=None):
    args = parse_args(argv)
    # numba and faiss-cpu each load their own OpenMP runtime; with the default wait policy the pool
    # that ran last keeps spinning and slows the other (faiss measured 2.6x slower at 100k x 384,
    # nq=256, bench/experiments/README.md "Hamming scan"). Passive for both unless the caller says
    # otherwise ('' keeps the environment's: what a program using the engine gets). Set here, before
    # the first parallel call, so scripts that import make_data keep their own environment.
    if args.omp_wait_policy:
        os.environ["OMP_WAIT_POLICY"] = args.omp_wait_policy
    nqs = [int(v) for v in args.nq.split(",")]
    skip = set(filter(None, args.skip.split(",")))
    n, d, k = args.n, args.dim, args.k

    load_start = list(os.getloadavg())  # other work on the cores makes timings noisy: recorded
    t0 = time.perf_counter()
    x, q_all = make_data(n, d, max(nqs))
    print(f"data: {n} x {d} float32 ({x.nbytes / 1e9:.2f} GB) in {time.perf_counter() - t0:.1f}s", flush=True)

    tmpdir = tempfile.TemporaryDirectory(prefix="search_bench_")
    fp, q8, qb = build_indexes(x, tmpdir.name)
    os8 = args.oversample or q8.oversample
    osb = args.binary_oversample or qb.oversample
    contenders = {"ours_fp32": lambda q: fp.search(q, k), "ours_int8": lambda q: q8.search(q, k, oversample=os8)}
    faiss_ver = add_faiss(contenders, x, k, skip)
    contenders["numpy"] = lambda q: numpy_search(x, q, k)
    contenders["ours_binary"] = lambda q: qb.search(q, k, oversample=osb)
    if "faiss_binary" not in skip and (fb := faiss_binary_contender(x, qb._vecs, k, osb)):
        contenders["faiss_binary"] = fb
    for name in skip:
        contenders.pop(name, None)

    codes = q8._codec.codes[:n]
    bound32, bound8 = bandwidth_bound(x, codes, max(args.rounds, 5))  # same run
    print(
        f"bandwidth bound: fp32 pass {bound32 * 1e3:.1f} ms ({x.nbytes / bound32 / 1e9:.1f} GB/s), "
        f"int8 pass {bound8 * 1e3:.1f} ms ({codes.nbytes / bound8 / 1e9:.1f} GB/s)",
        flush=True,
    )

    mem_fp = fp.memory_usage()
    mem_8 = q8.memory_usage()
    mem_b = qb.memory_usage()
    results = run_contenders(contenders, q_all, nqs, args.rounds, args.rounds_large)
    table = speed_ratios(results, bound32, bound8)
    mem_ratio = mem_8["resident"] / mem_fp["resident"]
    report = {
        "command": "python bench/search_bench.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "config": {
            "n": n,
            "dim": d,
            "k": k,
            "nq": nqs,
            "oversample": os8,
            "binary_oversample": osb,
            "int8_gemm_from_nq": gemm_min_queries(),
            "data": "clustered unit vectors",
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        },
        "machine": {
            "cpu": environment()["cpu"]["model"],
            "cores": os.cpu_count(),
            "load_average_start_end": [load_start, list(os.getloadavg())],
            "numba_threads": numba.get_num_threads(),
            "numba": numba.__version__,
            "numpy": np.__version__,
            "faiss": faiss_ver,
            "python": platform.python_version(),
        },
        "bandwidth": {
            "fp32_pass_ms": bound32 * 1e3,
            "fp32_GBps": x.nbytes / bound32 / 1e9,
            "int8_pass_ms": bound8 * 1e3,
            "int8_GBps": codes.nbytes / bound8 / 1e9,
        },
        "memory": {
            "fp32_resident_bytes": mem_fp["resident"],
            "int8_resident_bytes": mem_8["resident"],
            "int8_mapped_bytes": mem_8["mapped"],
            "int8_over_fp32": mem_ratio,
            "binary_resident_bytes": mem_b["resident"],
            "binary_over_fp32": mem_b["resident"] / mem_fp["resident"],
        },
        "results_ms": {str(nq): row for nq, row in results.items()},
        "ratios": {str(nq): r for nq, r in table.items()},
        "targets": check_targets(table, mem_ratio),
        "environment": environment(),
    }
    print_summary(report, list(contenders))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2))
        print(f"wrote {args.out}")
    tmpdir.cleanup()
    return report


if __name__ == "__main__":
    main()
