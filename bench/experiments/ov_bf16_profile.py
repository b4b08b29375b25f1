"""Where OpenVINO's bf16 time goes: the engine's bf16 graph vs sentence-transformers' OpenVINO IR.

Both graphs of one model are compiled by OpenVINO in bf16 (``PERF_COUNT`` on) and run on one
fixed batch of random token ids (``--batch`` x ``--tokens``, all attended); the script prints the
time per batch and the per-op-type profile of each (node type / kernel, ms, share). The
sentence-transformers IR is what ``SentenceTransformer(..., backend="openvino")`` loads,
exported here by optimum-intel (the ``peers`` extra); without it only the engine's graph runs.

``--sweep`` then asks whether anything on the engine's side moves it: the engine's bf16 encode of the
first 500 SciFact documents (from --data) under batch shapes (the attention-cell cap x1 / x4 / off,
1 or 2 batch workers, batch 64), and the compiled graph on the fixed batch under OpenVINO options
(CPU pinning, denormals, the latency hint, snippets off); contenders alternate, best of 3 rounds.

Run: .venv/bin/python bench/experiments/ov_bf16_profile.py [--model all-MiniLM-L6-v2] [--batch 32] [--tokens 256]
     [--sweep]
Notes: bench/experiments/runtime_choice.md ("Where the bf16 time goes").
"""

from __future__ import annotations

import argparse
import collections
import functools
import tempfile
import time
from pathlib import Path

import numpy as np


def _st_ir(model: str) -> str | None:
    """Path of sentence-transformers' OpenVINO IR of ``model`` (optimum-intel's export), or None."""
    try:
        from optimum.intel import OVModelForFeatureExtraction
    except ImportError:
        return None
    from engine.models.fetch import resolve

    out = tempfile.mkdtemp(prefix="st-ir-")
    OVModelForFeatureExtraction.from_pretrained(str(resolve(model).folder), export=True).save_pretrained(out)
    return f"{out}/openvino_model.xml"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="all-MiniLM-L6-v2")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--sweep", action="store_true", help="also time batch shapes and OpenVINO options")
    ap.add_argument(
        "--data",
        type=Path,
        default=None,
        help="folder with scifact/, for --sweep (default $EMBED_DATA_DIR, else ../shared/data)",
    )
    args = ap.parse_args(argv)

    import openvino as ov

    from engine import Embedder
    from engine.benchmark.chip import chip_line, environment

    graphs = {"engine bf16": str(Embedder(args.model, model_precision="bf16")._exported.graph_path("cpu"))}
    if (ir := _st_ir(args.model)) is not None:
        graphs["ST openvino IR"] = ir
    ids = np.random.default_rng(0).integers(1000, 20000, (args.batch, args.tokens)).astype(np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    core = ov.Core()
    print(chip_line(environment()))
    for name, path in graphs.items():
        compiled = core.compile_model(
            core.read_model(path),
            "CPU",
            {
                "INFERENCE_NUM_THREADS": args.threads,
                "NUM_STREAMS": 1,
                "INFERENCE_PRECISION_HINT": "bf16",
                "PERF_COUNT": True,
            },
        )
        names = {i.get_any_name() for i in compiled.inputs}
        feed = {k: v for k, v in feeds.items() if k in names}
        req = compiled.create_infer_request()
        for _ in range(3):
            req.infer(feed)
        start = time.perf_counter()
        for _ in range(args.repeats):
            req.infer(feed)
        per_batch = (time.perf_counter() - start) / args.repeats
        total, count = collections.Counter(), collections.Counter()
        for op in req.profiling_info:  # the last run's profile
            total[f"{op.node_type}/{op.exec_type}"] += op.real_time.total_seconds()
            count[f"{op.node_type}/{op.exec_type}"] += 1
        whole = sum(total.values())
        print(
            f"== {name}: {per_batch * 1000:.1f} ms per {args.batch}x{args.tokens} batch "
            f"({args.batch / per_batch:.1f} sequences/s)"
        )
        for key, seconds in total.most_common(10):
            print(f"   {key:44s} {seconds * 1000:7.2f} ms  {100 * seconds / whole:5.1f}%  x{count[key]}")
    if args.sweep:
        _sweep(args, graphs["engine bf16"], feeds)
    return 0


def _sweep(args, graph: str, feeds: dict) -> None:
    """Best-of-3 docs/s of the engine's bf16 encode per batch shape, and sequences/s of the compiled
    graph per OpenVINO option, each contender alternating with the others."""
    import openvino as ov

    from engine import Embedder
    from engine.benchmark.chip import load_average
    from engine.benchmark.data import data_dir, scifact_sts_texts
    from engine.benchmark.measure import measure

    docs = scifact_sts_texts(args.data or data_dir(), 500, 0)["docs"]

    def encoder(cells="default", workers=None, batch_size=32):
        emb = Embedder(args.model, model_precision="bf16", threads=args.threads)
        if cells != "default":
            emb.max_cells = cells
        if workers:
            emb.batch_workers = workers
        return functools.partial(emb.encode, batch_size=batch_size, normalize_embeddings=True)

    shapes = {
        "default (cap, 2 workers)": encoder(),
        "cap x4": encoder(cells=8 * 256 * 256),
        "no cap": encoder(cells=None),
        "no cap, 1 worker": encoder(cells=None, workers=1),
        "cap, 1 worker": encoder(workers=1),
        "no cap, batch 64": encoder(cells=None, batch_size=64),
    }
    core = ov.Core()
    base = {"INFERENCE_NUM_THREADS": args.threads, "NUM_STREAMS": 1, "INFERENCE_PRECISION_HINT": "bf16"}
    options = {
        "defaults": {},
        "CPU pinning": {"ENABLE_CPU_PINNING": True},
        "denormals off": {"CPU_DENORMALS_OPTIMIZATION": True},
        "latency hint": {"PERFORMANCE_HINT": "LATENCY"},
        "snippets off": {"SNIPPETS_MODE": "DISABLE"},
    }
    names = {i.get_any_name() for i in core.read_model(graph).inputs}
    feed = {k: v for k, v in feeds.items() if k in names}
    runs = {}
    for name, extra in options.items():
        req = core.compile_model(core.read_model(graph), "CPU", {**base, **extra}).create_infer_request()
        runs[name] = functools.partial(lambda r, _: r.infer(feed), req)
    print(f"load average {load_average()}")
    for title, contenders, data, unit in (
        ("batch shape", shapes, docs, "docs/s"),
        ("OpenVINO option", runs, [None] * args.batch, "sequences/s"),
    ):
        for fn in contenders.values():
            fn(data[:64])
        timed = measure(contenders, [data], repeats=3, warmup=0)
        print(f"== {title}")
        for name, m in timed.items():
            print(f"   {name:26s} {len(data) / min(m.latencies_s):8.1f} {unit}")
    print(f"load average {load_average()}")


if __name__ == "__main__":
    raise SystemExit(main())
