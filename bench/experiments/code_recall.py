"""Recall@10 after exact rescoring of the int8 and binary first stages, by query bits and oversample.

    .venv/bin/python bench/experiments/code_recall.py [--data DIR] [--n 200000]

Exact fp32 top 10 is the truth. Data: all-MiniLM-L6-v2 embeddings of the 5,183 SciFact documents
(title + text) and its 1,109 queries (through the embedding cache), and ``--n`` 384-d unit vectors
clustered as in bench/search_bench.py (256 queries near corpus points) and isotropic (256 random
queries). int8: codes with per-dimension scales, queries folded with the scales and quantized to 7
bits (qmax 63: the u8 x s8 scan and the blocked GEMM), 8 bits (127: the GEMM's first choice) or 15
bits (16383: the int8 x int16 scan), candidates by the integer score at oversample 1 / 2 / 4.
binary: sign bits, Hamming candidates at oversample 1 / 4 / 10 / 20 / 40 (SciFact only: synthetic
clusters are far denser than real embeddings). The figures behind DEFAULT_OVERSAMPLE_BINARY
(engine/index/index.py), the 7-bit GEMM queries (engine/index/qgemm.py) and the 7-bit u8 x s8
queries (kernels/quantize.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from bench_scripts import bench_script

from engine.benchmark.data import data_dir
from engine.kernels.binary import pack_signs, topk_hamming
from engine.kernels.normalize import l2_normalize
from engine.kernels.quantize import calibrate_scales, fold_queries, quantize
from engine.kernels.topk import rescore, topk_dot

search_bench = bench_script("search_bench")  # bench/search_bench.py
make_data, recall = search_bench.make_data, search_bench.recall


def scifact(data: Path) -> tuple[np.ndarray, np.ndarray]:
    from engine import Embedder
    from engine.corpus.cache import encode_cached
    from engine.eval.evaluate import load_beir

    ds = load_beir(data / "scifact", "test")
    with open(data / "scifact" / "queries.jsonl", encoding="utf-8") as f:
        queries = [json.loads(line)["text"] for line in f]
    emb = Embedder("all-MiniLM-L6-v2")
    return encode_cached(emb, ds.doc_texts), encode_cached(emb, queries)


def int8_rows(name: str, x: np.ndarray, q: np.ndarray) -> None:
    scales = calibrate_scales(x)
    codes = quantize(x, scales).astype(np.float64)
    _, truth = topk_dot(x, q, 10)
    for qmax in (63, 127, 16383):
        qq, _ = fold_queries(q, scales, qmax)
        order = np.argsort(-(qq.astype(np.float64) @ codes.T), axis=1, kind="stable")
        got = [recall(rescore(x, q, order[:, : 10 * o], 10)[1], truth) for o in (1, 2, 4)]
        print(
            f"{name:10s} int8 queries qmax {qmax:5d}: recall@10 at oversample 1 / 2 / 4 = "
            + " / ".join(f"{r:.4f}" for r in got),
            flush=True,
        )


def binary_rows(name: str, x: np.ndarray, q: np.ndarray) -> None:
    _, truth = topk_dot(x, q, 10)
    bits = pack_signs(x)
    got = []
    for o in (1, 4, 10, 20, 40):
        _, cand = topk_hamming(bits, q, x.shape[1], 10 * o)
        got.append(recall(rescore(x, q, cand, 10)[1], truth))
    print(f"{name:10s} binary: recall@10 at oversample 1 / 4 / 10 / 20 / 40 = " + " / ".join(f"{r:.3f}" for r in got))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--data", type=Path, default=None, help="folder with scifact/ (default $EMBED_DATA_DIR, else ../shared/data)"
    )
    ap.add_argument("--n", type=int, default=200_000)
    args = ap.parse_args(argv)
    x, q = scifact(args.data or data_dir())
    print(f"SciFact all-MiniLM-L6-v2: {x.shape[0]} docs, {q.shape[0]} queries")
    int8_rows("scifact", x, q)
    binary_rows("scifact", x, q)
    x, q = make_data(args.n, 384, 256)
    int8_rows("clustered", x, q)
    rng = np.random.default_rng(1)
    xi = l2_normalize(rng.standard_normal((args.n, 384), dtype=np.float32))
    qi = l2_normalize(rng.standard_normal((256, 384), dtype=np.float32))
    int8_rows("isotropic", xi, qi)
    return 0


if __name__ == "__main__":
    sys.exit(main())
