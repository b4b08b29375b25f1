"""Where does an exported graph spend its time? onnxruntime's profiler, summed per op type.

Runs one batch of SciFact docs (the longest-first batch the engine would form; ``--texts sents``: a
batch of STS-dev sentences from the middle of the length order, what most sentence batches look
like) a few times through the engine's exported fp32 and int8 graphs and prints each op type's
share of kernel time.
``--runtime-graph`` profiles the graphs as the CPU runtime loads them (layer norms decomposed,
``engine.models.graph.cpu_graph``) instead of the exports on disk.

Run: .venv/bin/python bench/experiments/int8_profile.py [--model all-MiniLM-L6-v2] [--batch 32] [--runs 3]
     [--threads 2] [--runtime-graph] [--texts docs|sents] [--precisions fp32,int8]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np


def profile(path: Path, feeds: dict, threads: int, runs: int) -> dict[str, float]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.enable_profiling = True
    opts.profile_file_prefix = "/tmp/ort-profile"
    model = path if isinstance(path, bytes) else str(path)
    sess = ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}
    feeds = {k: v for k, v in feeds.items() if k in names}
    sess.run(None, feeds)  # warm-up (also profiled; dropped below by keeping the last runs)
    for _ in range(runs):
        sess.run(None, feeds)
    trace = json.loads(Path(sess.end_profiling()).read_text())
    per_op: dict[str, float] = defaultdict(float)
    for ev in trace:
        if ev.get("cat") == "Node" and ev["name"].endswith("_kernel_time"):
            per_op[ev["args"]["op_name"]] += ev["dur"] / 1000.0 / (runs + 1)
    return dict(sorted(per_op.items(), key=lambda kv: -kv[1]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="all-MiniLM-L6-v2")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runtime-graph", action="store_true", help="profile cpu_graph(export), what the CPU runtime runs")
    ap.add_argument("--texts", choices=("docs", "sents"), default="docs")
    ap.add_argument("--precisions", default="fp32,int8")
    ap.add_argument(
        "--data",
        type=Path,
        default=None,
        help="folder with scifact/ and stsb/ (default $EMBED_DATA_DIR, else ../shared/data)",
    )
    args = ap.parse_args(argv)
    from engine.benchmark.chip import chip_line

    print(chip_line(), flush=True)

    from engine import Embedder
    from engine.batching import pad_batch
    from engine.benchmark.data import data_dir, scifact_sts_texts

    sets = scifact_sts_texts(args.data or data_dir(), args.batch, 2000)
    for precision in args.precisions.split(","):
        emb = Embedder(args.model, model_precision=precision, threads=args.threads, runtime="onnxruntime")
        if args.texts == "docs":
            ids = emb.tokenize(sets["docs"])
        else:  # the sentences of middle length, as length-sorted batching groups them
            ids = sorted(emb.tokenize(sets["sents"]), key=len)
            mid = len(ids) // 2
            ids = ids[mid - args.batch // 2 : mid - args.batch // 2 + args.batch]
        input_ids, mask = pad_batch(ids, 0)
        feeds = {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": np.zeros_like(input_ids)}
        graph = emb._exported.onnx_path
        if args.runtime_graph:
            from engine.models.graph import cpu_graph

            graph = cpu_graph(graph)
        ops = profile(graph, feeds, args.threads, args.runs)
        total = sum(ops.values())
        print(f"\n{args.model} {precision}: batch {input_ids.shape}, {total:.0f} ms per run (kernel time)")
        for op, ms in ops.items():
            print(f"  {op:<28}{ms:9.1f} ms {100 * ms / total:5.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
