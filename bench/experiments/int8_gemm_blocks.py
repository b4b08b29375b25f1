"""Rows per GEMM call of the blocked int8 search, and its offset-binary pass (``qgemm.block_rows``).

    .venv/bin/python bench/experiments/int8_gemm_blocks.py [--n 1000000] [--nq 16,64,128,256,1024]
        [--rows 4096,16384,32768,65536] [--rounds 3]

1. ``engine.index.qgemm.topk_int8_gemm`` on search_bench.py's clustered unit vectors (dim 384,
   40 candidates per query) with the block size forced to each ``--rows`` value, and with the
   rule (``block_rows``), alternating round by round; best round in ms. Every block hands the
   cores from Numba's pool (the offset-binary pass) to onnxruntime's (the GEMM) and back, so the
   number of blocks, not only the arithmetic, sets the time for few queries.
2. The offset-binary pass (codes XOR 0x80): numpy's single-threaded ``bitwise_xor`` (what qgemm
   uses) vs a parallel Numba kernel, alone on one 4,096 x 384 block (best of 20 x 10 calls) and
   inside the GEMM path at 16 queries (best of 3, alternating). Run it without OMP_WAIT_POLICY
   (what a program using the engine gets) and with ``OMP_WAIT_POLICY=PASSIVE``: Numba's OpenMP
   threads spin after a parallel call, and in the GEMM path that spinning takes the cores from
   onnxruntime's threads.

Prints the chip (``chip_line``) and the wait policy. The figures behind ``qgemm.block_rows`` and
qgemm's numpy XOR.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numba
import numpy as np
from bench_scripts import bench_script

from engine.benchmark.chip import chip_line
from engine.index import qgemm
from engine.kernels.quantize import calibrate_scales, quantize

make_data = bench_script("search_bench").make_data  # bench/search_bench.py's clustered unit vectors


@numba.njit(parallel=True, cache=True)
def _xor80_parallel(raw, out):
    for i in numba.prange(raw.shape[0]):
        for j in range(raw.shape[1]):
            out[i, j] = raw[i, j] ^ np.uint8(0x80)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--nq", default="16,64,128,256,1024")
    ap.add_argument("--rows", default="4096,16384,32768,65536")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    print(chip_line(), f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}", flush=True)
    nqs = [int(v) for v in args.nq.split(",")]
    grid = [int(v) for v in args.rows.split(",")]
    x, q = make_data(args.n, 384, max(nqs))
    scales = calibrate_scales(x[:100_000])
    codes = quantize(x, scales)
    del x
    rule = qgemm.block_rows
    for nq in nqs:
        qs = np.ascontiguousarray(q[:nq])
        sizes = [*grid, None]  # None: the rule
        best = {s: float("inf") for s in sizes}
        for r in range(args.rounds):
            for s in sizes if r % 2 == 0 else sizes[::-1]:
                qgemm.block_rows = rule if s is None else (lambda nq_, d, s=s: s)
                t = time.perf_counter()
                qgemm.topk_int8_gemm(codes, qs, scales, 40)
                best[s] = min(best[s], time.perf_counter() - t)
        qgemm.block_rows = rule
        cells = " / ".join(f"{best[s] * 1e3:,.1f}" for s in grid)
        print(
            f"nq {nq:5d}: ms at {' / '.join(f'{s:,}' for s in grid)} rows: {cells}; "
            f"rule ({rule(nq, 384):,} rows): {best[None] * 1e3:,.1f}",
            flush=True,
        )

    block = codes[:4096].view(np.uint8)
    out = np.empty(block.shape, np.uint8)
    passes = {
        "numpy bitwise_xor": lambda src, dst: np.bitwise_xor(src, 0x80, out=dst),
        "parallel Numba XOR": _xor80_parallel,
    }
    for name, fn in passes.items():
        fn(block, out)
        t_best = float("inf")
        for _ in range(20):
            t = time.perf_counter()
            for _ in range(10):
                fn(block, out)
            t_best = min(t_best, (time.perf_counter() - t) / 10)
        print(f"{name}: {t_best * 1e3:.3f} ms per 4,096 x 384 block alone", flush=True)
    numpy_xor = qgemm.np.bitwise_xor
    qs = np.ascontiguousarray(q[:16])
    best = dict.fromkeys(passes, float("inf"))
    for r in range(6):
        for name in list(passes) if r % 2 == 0 else list(passes)[::-1]:
            xor = passes[name]
            qgemm.np.bitwise_xor = numpy_xor if name.startswith("numpy") else (lambda src, v, out, f=xor: f(src, out))
            t = time.perf_counter()
            qgemm.topk_int8_gemm(codes, qs, scales, 40)
            best[name] = min(best[name], time.perf_counter() - t)
    qgemm.np.bitwise_xor = numpy_xor
    for name, b in best.items():
        print(f"GEMM path, 16 queries, {name}: {b * 1e3:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
