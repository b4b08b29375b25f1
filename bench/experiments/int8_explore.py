"""Explore int8 recipes for one model: speed relative to fp32 (same run) and parity with fp32.

Every variant is built from the same exported graphs (the fused fp32 graph the engine ships, and
optimum's raw unfused graph) with engine.models.quantize.quantize_int8(config=...) (the static QDQ
variant with int8_static_qdq.py beside this script, run as a subprocess), loaded into the engine's
own Session (same threads), and timed round-robin: each round times every variant once, so
background load hits all of them alike; a variant's figure is its best round.

Texts: SciFact docs and STS-dev sentences from --data (default $EMBED_DATA_DIR, else ../shared/data
beside the repository).

Run: .venv/bin/python bench/experiments/int8_explore.py [--model all-MiniLM-L6-v2] [--docs 128 --sents 1000]
Prints a markdown table (copy into int8_experiments.md) and writes bench/experiments/results/int8_explore.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
STATIC = {"method": "static"}  # built by int8_static_qdq.py, not by the library

# name -> (graph, config for quantize_int8 (None: the graph as is), session options)
VARIANTS: dict[str, tuple[str, dict | None, dict]] = {
    "fp32 fused (reference)": ("fused", None, {}),
    "dyn MatMul, s8 per-channel": ("fused", {"op_types": ("MatMul",)}, {}),
    "dyn MatMul+Attention, s8 per-channel": ("fused", {}, {}),
    "dyn MatMul+Attention+EmbedLN, s8 per-channel": (
        "fused",
        {"op_types": ("MatMul", "Attention", "EmbedLayerNormalization")},
        {},
    ),
    "dyn MatMul+Attention, u8 per-tensor": ("fused", {"weight_type": "QUInt8", "per_channel": False}, {}),
    "dyn MatMul+Attention, s8 per-tensor": ("fused", {"per_channel": False}, {}),
    "dyn MatMul+Attention, s8 per-channel, reduce_range": ("fused", {"reduce_range": True}, {}),
    "dyn MatMul+Attention, FFN-out of last layer fp32": ("fused", {"exclude": (r"layer\.5/output/dense/MatMul$",)}, {}),
    "dyn MatMul+Attention, all FFN-out fp32": ("fused", {"exclude": (r"layer\.\d+/output/dense/MatMul$",)}, {}),
    "dyn raw graph MatMul+Gather, s8 per-channel": ("raw", {"op_types": ("MatMul", "Gather")}, {}),
    "static QDQ MatMul+Attention, u8 act, s8 per-channel": ("fused", STATIC, {}),
    "dyn MatMul+Attention, s8 pc, no thread spinning": ("fused", {}, {"session.intra_op.allow_spinning": "0"}),
}


def make_session(path: Path, threads: int, options: dict):
    """The engine's Session, with extra onnxruntime session config entries when asked."""
    from engine.runtime import Session

    if not options:
        return Session(path, threads=threads)
    import onnxruntime as ort

    s = Session(path, threads=threads)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    for k, v in options.items():
        opts.add_session_config_entry(k, v)
    s._sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    return s


def build_graphs(model: str, work: Path) -> dict[str, Path]:
    from engine.models.export import _optimum_export, load_or_export
    from engine.models.fetch import resolve

    fused = load_or_export(model, "fp32").onnx_path
    graphs = {"fused": fused}
    r = resolve(model)
    if r.weights.suffix != ".onnx":
        _optimum_export(r.folder, work / "raw")
        graphs["raw"] = work / "raw" / "model.onnx"
    return graphs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="all-MiniLM-L6-v2")
    ap.add_argument("--docs", type=int, default=128, help="SciFact docs timed (first N)")
    ap.add_argument("--sents", type=int, default=1000, help="STS-dev sentences timed")
    ap.add_argument("--quality-docs", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", nargs="*", default=None, help="variant names (substring match)")
    ap.add_argument(
        "--data",
        type=Path,
        default=None,
        help="folder with scifact/ and stsb/sts-dev.csv (default $EMBED_DATA_DIR, else ../shared/data)",
    )
    ap.add_argument("--out", default=str(HERE / "results" / "int8_explore.json"))
    args = ap.parse_args(argv)

    from engine import Embedder
    from engine.benchmark.chip import environment
    from engine.benchmark.data import data_dir
    from engine.eval.evaluate import load_beir, load_sts
    from engine.models.fetch import resolve
    from engine.models.quantize import cpu_isa, quantize_int8

    data = args.data or data_dir()
    docs = load_beir(data / "scifact").doc_texts
    s1, s2, _ = load_sts(data / "stsb" / "sts-dev.csv")
    sents = [s for pair in zip(s1, s2) for s in pair][: max(args.sents, 2000)]
    emb = Embedder(args.model, threads=args.threads)
    resolved = resolve(args.model)
    work = Path(tempfile.mkdtemp(prefix="int8-explore-"))
    graphs = build_graphs(args.model, work)
    names = [n for n in VARIANTS if args.only is None or n.startswith("fp32") or any(o in n for o in args.only)]

    sessions, sizes, build_s = {}, {}, {}
    for i, name in enumerate(names):
        graph, cfg, opts = VARIANTS[name]
        if cfg is None:
            path = graphs[graph]
        else:
            if graph not in graphs:
                continue
            path = work / f"v{i}.onnx"
            t = time.perf_counter()
            if cfg is STATIC:
                subprocess.run(
                    [
                        sys.executable,
                        str(HERE / "int8_static_qdq.py"),
                        str(graphs[graph]),
                        str(path),
                        "--tokenizer",
                        str(resolved.folder),
                        "--max-length",
                        str(emb.max_seq_length),
                    ],
                    check=True,
                )
            else:
                quantize_int8(graphs[graph], path, emb.spec, resolved.folder, config=cfg)
            build_s[name] = time.perf_counter() - t
        # the engine runs a multi-threaded session for one batch and single-threaded ones for its
        # batch workers (Embedder.batch_workers): a variant needs both
        sessions[name] = (make_session(path, args.threads, opts), make_session(path, 1, opts))
        sizes[name] = path.stat().st_size / 1e6

    def encode(name, texts):
        # bench only: run the engine's pipeline on this variant's graph
        emb._session, emb._single = sessions[name]
        return emb.encode(texts, batch_size=32, normalize_embeddings=True)

    def seconds(name, texts):
        t = time.perf_counter()
        encode(name, texts)
        return time.perf_counter() - t

    qdocs = docs[: args.quality_docs]
    qsents = sents[:2000]
    ref_d, ref_s = encode(names[0], qdocs), encode(names[0], qsents)
    results = {}
    for name in sessions:
        d, s = encode(name, qdocs), encode(name, qsents)
        cd, cs = np.sum(d * ref_d, 1), np.sum(s * ref_s, 1)
        results[name] = {
            "mb": round(sizes[name], 1),
            "cos_docs_mean": float(cd.mean()),
            "cos_docs_min": float(cd.min()),
            "cos_sents_mean": float(cs.mean()),
            "cos_sents_min": float(cs.min()),
            "docs_per_s": 0.0,
            "sents_per_s": 0.0,
        }
    tdocs, tsents = docs[: args.docs], sents[: args.sents]
    for name in sessions:  # warm-up
        encode(name, tdocs[:32]), encode(name, tsents[:256])
    for _ in range(args.rounds):
        for name in sessions:
            r = results[name]
            r["docs_per_s"] = max(r["docs_per_s"], len(tdocs) / seconds(name, tdocs))
            r["sents_per_s"] = max(r["sents_per_s"], len(tsents) / seconds(name, tsents))

    base = results[names[0]]
    print(
        f"\nmodel {args.model}, cpu_isa {cpu_isa()}, threads {args.threads}, "
        f"docs {len(tdocs)} (quality {len(qdocs)}), sentences {len(tsents)} (quality {len(qsents)}), "
        f"best of {args.rounds} round-robin rounds\n"
    )
    print("| variant | MB | docs/s | x fp32 | sents/s | x fp32 | cos docs mean / min | cos sents mean / min |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(
            f"| {name} | {r['mb']} | {r['docs_per_s']:.1f} | {r['docs_per_s'] / base['docs_per_s']:.2f} | "
            f"{r['sents_per_s']:.0f} | {r['sents_per_s'] / base['sents_per_s']:.2f} | "
            f"{r['cos_docs_mean']:.4f} / {r['cos_docs_min']:.4f} | "
            f"{r['cos_sents_mean']:.4f} / {r['cos_sents_min']:.4f} |"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps(
            {
                "model": args.model,
                "cpu_isa": cpu_isa(),
                "threads": args.threads,
                "results": results,
                "build_s": build_s,
                "environment": environment(),
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
