"""The benchmark harness behind ``embed bench`` and bench/.

By concern: ``measure`` (timing and parity primitives), ``contenders`` (the engine and the
sentence-transformers baselines), ``grid`` (``BenchConfig``, ``run_grid``), ``results`` (JSON,
CSV, tables, comparing runs), ``data`` (the data folder and the benchmark texts), ``chip`` (the
environment block and the chip's GEMM peak), ``clock`` and ``plot``. Nothing here imports torch,
sentence-transformers or matplotlib at import time.
"""

from .data import data_dir
from .grid import BenchConfig, run_grid
from .measure import measure
from .results import compare_results, format_comparison, format_table, load_results, write_results

__all__ = [
    "BenchConfig",
    "compare_results",
    "data_dir",
    "format_comparison",
    "format_table",
    "load_results",
    "measure",
    "run_grid",
    "write_results",
]
