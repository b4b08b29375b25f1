"""From how many queries does the blocked int8 GEMM beat the per-query int8 scan? (``gemm_min_queries``)

    .venv/bin/python bench/experiments/int8_gemm_threshold.py [--n 1000000] [--nq 1,2,4,8,12,16,32,64] [--rounds 5]

The two int8 first stages of ``Index.search`` on the same codes (search_bench.py's clustered unit
vectors, dim 384, per-dimension scales), for ``k * oversample`` = 40 candidates per query: the
fused scan (``kernels.quantize.topk_int8``, method auto: the u8 x s8 ``vpmaddubsw`` scan where the
CPU has AVX2) and the blocked GEMM (``engine.index.qgemm.topk_int8_gemm``: offset-binary block,
onnxruntime ``MatMulInteger``, heaps). Both alternate round by round with all threads; best round
and median of the per-round ratios. Rescoring is the same for both paths and is not timed. Prints
the chip (``chip_line``) and the smallest nq from which the GEMM wins every larger nq measured.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from bench_scripts import bench_script

from engine.benchmark.chip import chip_line, environment
from engine.index.qgemm import gemm_min_queries, topk_int8_gemm
from engine.kernels.quantize import calibrate_scales, quantize, topk_int8

make_data = bench_script("search_bench").make_data  # bench/search_bench.py's clustered unit vectors


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--nq", default="1,2,4,8,12,16,32,64")
    ap.add_argument("-m", type=int, default=40, help="candidates per query (k * oversample)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args(argv)
    env = environment()
    print(chip_line(env), flush=True)
    nqs = [int(v) for v in args.nq.split(",")]
    x, q = make_data(args.n, 384, max(nqs))
    scales = calibrate_scales(x[:100_000])
    codes = quantize(x, scales)
    del x
    paths = {
        "scan": lambda qs: topk_int8(codes, qs, scales, args.m),
        "gemm": lambda qs: topk_int8_gemm(codes, qs, scales, args.m),
    }
    rows = []
    for nq in nqs:
        qs = np.ascontiguousarray(q[:nq])
        for fn in paths.values():
            fn(qs)  # warm-up (JIT, session)
        times = {p: [] for p in paths}
        for r in range(args.rounds):
            for p in list(paths) if r % 2 == 0 else list(paths)[::-1]:
                t = time.perf_counter()
                paths[p](qs)
                times[p].append(time.perf_counter() - t)
        ratio = statistics.median(s / g for s, g in zip(times["scan"], times["gemm"]))
        row = {
            "nq": nq,
            "scan_ms": min(times["scan"]) * 1e3,
            "gemm_ms": min(times["gemm"]) * 1e3,
            "scan_over_gemm_median": ratio,
        }
        rows.append(row)
        print(
            f"nq {nq:5d}: scan {row['scan_ms']:8.1f} ms   gemm {row['gemm_ms']:8.1f} ms   "
            f"scan/gemm {row['scan_ms'] / row['gemm_ms']:5.2f}x best, {ratio:5.2f}x median",
            flush=True,
        )
    wins = [r["nq"] for i, r in enumerate(rows) if all(s["scan_over_gemm_median"] > 1 for s in rows[i:])]
    print(f"GEMM wins from nq = {wins[0] if wins else '-'} on (gemm_min_queries() is {gemm_min_queries()})")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(
            json.dumps(
                {
                    "command": "python bench/experiments/int8_gemm_threshold.py "
                    + " ".join(sys.argv[1:] if argv is None else argv),
                    "n": args.n,
                    "m": args.m,
                    "rows": rows,
                    "gemm_wins_from": wins[0] if wins else None,
                    "environment": env,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
