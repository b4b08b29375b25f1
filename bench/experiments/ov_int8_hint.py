"""OpenVINO static int8: its non-quantized ops in f32 (the engine's hint) vs bf16, on a CPU with bf16 units.

Run: .venv/bin/python bench/experiments/ov_int8_hint.py (200 SciFact docs, 800 STS-dev sentences, 3 rounds, best-of;
reaches into engine.runtime._OV_PRECISION to build one Embedder per hint).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import engine.runtime as rt
from engine import Embedder
from engine.benchmark.data import data_dir, scifact_sts_texts


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    sets = scifact_sts_texts(data_dir(), 200, 800)
    fp32 = Embedder("all-MiniLM-L6-v2", threads=2)
    ref = {k: fp32.encode(v) for k, v in sets.items()}
    embs = {}
    for hint in ("f32", "bf16"):
        rt._OV_PRECISION["int8"] = hint
        embs[hint] = Embedder("all-MiniLM-L6-v2", model_precision="int8", runtime="openvino", threads=2)
        embs[hint].encode(sets["sents"][:256])  # builds the batch workers' session under this hint
        print(hint, embs[hint]._single is not None)
    rt._OV_PRECISION["int8"] = "f32"
    best = {}
    for r in range(3):
        for hint, e in embs.items():
            for k, v in sets.items():
                t = time.perf_counter()
                out = e.encode(v)
                dt = time.perf_counter() - t
                best[(hint, k)] = max(best.get((hint, k), 0), len(v) / dt)
                if r == 0:
                    c = np.sum(out * ref[k], 1)
                    print(hint, k, "cos mean/min", round(float(c.mean()), 5), round(float(c.min()), 5))
    for key, v in best.items():
        print(key, round(v, 1))
    for k in sets:
        print(k, "bf16/f32", round(best[("bf16", k)] / best[("f32", k)], 2))


if __name__ == "__main__":
    main()
