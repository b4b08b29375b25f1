"""bench/'s scripts as modules, for the studies here that reuse their helpers.

bench/ is a folder of scripts, not a package, so a study imports one by its path (importlib):
``search_bench = bench_script("search_bench")`` loads bench/search_bench.py. The studies run as
``python bench/experiments/NAME.py``, so Python finds this file beside them; the engine itself is
the installed package.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[1]


def bench_script(name: str) -> ModuleType:
    """bench/<name>.py imported as the module ``name`` (once: later calls return the same module)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # registered first, as an import does (dataclasses, pickling, numba's cache)
    spec.loader.exec_module(module)
    return module
