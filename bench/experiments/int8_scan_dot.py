"""One query over 1M x 384: the fp32 scan, both int8 scans, and plain passes over the data.

    .venv/bin/python bench/experiments/int8_scan_dot.py [--n 1000000] [--rounds 7]

With 1 and with all Numba threads, best of rounds (ms): ``topk_dot`` (fp32 scan),
``topk_int8(method="i16")`` (int8 x int16 loop) and ``method="u8s8"`` (the AVX2 ``vpmaddubsw``
dot, where the CPU has it), next to one pass that only sums the fp32 rows and one that sums the
int8 codes (bench/search_bench.py's bandwidth probes): a scan near its sum is memory-bound,
one well above it compute-bound. Data: search_bench.py's clustered unit vectors. Prints the CPU
flags that matter and the load average (a shared machine). Used for the "int8 search" table of
int8_experiments.md.
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
from engine.kernels.quantize import HAS_U8S8, calibrate_scales, quantize, topk_int8
from engine.kernels.topk import topk_dot

search_bench = bench_script("search_bench")  # bench/search_bench.py
_sum_rows_f32, _sum_rows_i8, make_data = search_bench._sum_rows_f32, search_bench._sum_rows_i8, search_bench.make_data


def best_ms(fn, rounds: int) -> float:
    fn()
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times) * 1e3


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args(argv)
    print(chip_line())
    x, q = make_data(args.n, 384, 1)
    scales = calibrate_scales(x[:100_000])
    codes = quantize(x, scales)
    s32, s8 = np.empty(len(x), np.float32), np.empty(len(x), np.int32)
    cases = {
        "fp32 scan": lambda: topk_dot(x, q, 10),
        "int8 scan i16": lambda: topk_int8(codes, q, scales, 40, method="i16"),
        "sum fp32 rows": lambda: _sum_rows_f32(x, s32),
        "sum int8 codes": lambda: _sum_rows_i8(codes, s8),
    }
    if HAS_U8S8:
        cases["int8 scan u8s8"] = lambda: topk_int8(codes, q, scales, 40, method="u8s8")
    for threads in sorted({1, numba.config.NUMBA_NUM_THREADS}):
        numba.set_num_threads(threads)
        print(
            f"{threads} thread(s): "
            + ", ".join(f"{name} {best_ms(fn, args.rounds):.1f} ms" for name, fn in cases.items())
        )
    print(f"load at the end {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
