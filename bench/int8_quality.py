"""int8 quality on this chip: SciFact nDCG@10 and cosine to fp32, for the int8 ISA class it has.

    .venv/bin/python bench/int8_quality.py --model all-MiniLM-L6-v2 [--data DIR] [--recipe rr|vnni]

The int8 graph is built per ISA class (``engine.models.quantize``: the recipe and onnxruntime's
u8 x s8 kernel depend on it), so its quality is measured per class, on the machine that has it.
For one model, fp32 and int8 engines on this CPU embed every SciFact document (BEIR test split,
title + text) and query and every STS-dev sentence (both columns). Reported:

* ``ndcg@10`` fp32 and int8 (exact cosine retrieval, ``engine.eval``) and their ratio;
* the cosine of each int8 vector to its fp32 vector: mean and minimum, on documents and on
  sentences (the export's own gate checks the mean on its calibration texts);
* STS-dev Spearman fp32 and int8;
* the targets: nDCG ratio >= 0.99, mean cosine >= 0.99 on documents and on sentences.

``--recipe`` exports and runs another class's recipe on this CPU (bench/recipe_override.py: the
integer products are exact wherever they cannot saturate, so e.g. ``rr`` here gives the vectors an
AVX2 machine gives). Vectors come through the embedding cache (``encode_cached``), so a rerun costs seconds. Writes
``bench/results/int8_quality/<model>_<isa class>[_<recipe>].json`` (with ``environment()``: CPU model, flags,
ISA class, recipe, onnxruntime) and prints one Markdown row for the per-ISA table in
bench/experiments/int8_experiments.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="all-MiniLM-L6-v2")
    ap.add_argument(
        "--data",
        type=Path,
        default=None,
        help="folder with scifact/ and stsb/sts-dev.csv (default $EMBED_DATA_DIR, else ../shared/data)",
    )
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument(
        "--recipe",
        default=None,
        help="int8 recipe to export and run instead of this CPU's own (bench/recipe_override.py)",
    )
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    from recipe_override import int8_recipe_as

    with int8_recipe_as(args.recipe):
        return run(args, argv)


def run(args, argv) -> int:
    from engine import Embedder
    from engine.benchmark.chip import environment
    from engine.benchmark.data import data_dir
    from engine.corpus.cache import encode_cached
    from engine.eval.evaluate import beir_scores, load_beir, load_sts
    from engine.eval.metrics import sts_correlations

    try:
        data = args.data or data_dir()
        ds = load_beir(data / "scifact", "test")
        s1, s2, gold = load_sts(data / "stsb" / "sts-dev.csv")
    except FileNotFoundError as e:
        sys.exit(f"int8_quality: {e}; pass --data DIR")
    env = environment()
    res: dict = {
        "model": args.model,
        "int8_isa": env["int8_isa"],
        "int8_recipe": env["int8_recipe"],
        "cpu": env["cpu"].get("model"),
        "docs": len(ds.doc_texts),
        "queries": len(ds.query_texts),
        "sentences": 2 * len(gold),
    }
    vecs = {}
    for precision in ("fp32", "int8"):
        emb = Embedder(args.model, model_precision=precision, threads=args.threads, runtime="onnxruntime")
        d = encode_cached(emb, ds.doc_texts)
        q = encode_cached(emb, ds.query_texts)
        a, b = encode_cached(emb, s1), encode_cached(emb, s2)
        vecs[precision] = (d, np.vstack([a, b]))
        res[f"ndcg@10_{precision}"] = round(float(beir_scores(ds, d, q, k_values=(10,))["ndcg@10"]), 5)
        res[f"sts_spearman_{precision}"] = round(float(sts_correlations(a, b, gold)["spearman"]), 5)
        res[f"fingerprint_{precision}"] = emb.fingerprint
    cd = cosines(vecs["int8"][0], vecs["fp32"][0])
    cs = cosines(vecs["int8"][1], vecs["fp32"][1])
    res.update(
        ndcg_ratio=round(res["ndcg@10_int8"] / res["ndcg@10_fp32"], 5),
        cosine_docs_mean=round(float(cd.mean()), 5),
        cosine_docs_min=round(float(cd.min()), 5),
        cosine_sents_mean=round(float(cs.mean()), 5),
        cosine_sents_min=round(float(cs.min()), 5),
    )
    res["targets"] = {
        "ndcg@10 int8 >= 99% of fp32": res["ndcg_ratio"] >= 0.99,
        "mean cosine to fp32 >= 0.99 on documents": res["cosine_docs_mean"] >= 0.99,
        "mean cosine to fp32 >= 0.99 on sentences": res["cosine_sents_mean"] >= 0.99,
    }
    print(json.dumps(res, indent=2))
    print(
        f"| {res['int8_isa']} ({res['cpu']}) | {res['int8_recipe']} | {res['ndcg@10_fp32']:.4f} | "
        f"{res['ndcg@10_int8']:.4f} ({res['ndcg_ratio']:.2%}) | {res['cosine_docs_mean']:.4f} / "
        f"{res['cosine_docs_min']:.4f} | {res['cosine_sents_mean']:.4f} / {res['cosine_sents_min']:.4f} | "
        f"{res['sts_spearman_fp32']:.4f} / {res['sts_spearman_int8']:.4f} |"
    )
    res["command"] = "python bench/int8_quality.py " + " ".join(sys.argv[1:] if argv is None else argv)
    res["environment"] = env
    out = Path(
        args.out
        or Path(__file__).parent
        / "results"
        / "int8_quality"
        / f"{args.model}_{res['int8_isa']}{'_' + args.recipe if args.recipe else ''}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
