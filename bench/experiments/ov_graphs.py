"""Which ONNX graph OpenVINO should load: the fused export, the CPU runtime graph, or the standard-op one.

OpenVINO f32 on three graphs of one model against onnxruntime on the engine's CPU runtime graph:
``model.onnx`` (onnxruntime's fusions: com.microsoft Attention, SkipLayerNormalization, ...),
``model.cpu.onnx`` (layer norms decomposed) and optimum's raw export (standard ops only, what the
bf16 export keeps). Fixed batches of SciFact documents (16 x up to 256 tokens), one thread, best
of alternating rounds; max abs difference of each output to onnxruntime's.

Run: .venv/bin/python bench/experiments/ov_graphs.py [--model all-MiniLM-L6-v2] [--threads 1] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="all-MiniLM-L6-v2")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--data", type=Path, default=None, help="folder with scifact/ (default $EMBED_DATA_DIR, else ../shared/data)"
    )
    args = ap.parse_args(argv)

    import onnxruntime as ort
    import openvino as ov
    from optimum.exporters.onnx import main_export
    from tokenizers import Tokenizer

    from engine.benchmark.chip import chip_line, load_average
    from engine.benchmark.data import data_dir
    from engine.models.export import load_or_export
    from engine.models.fetch import resolve

    exported = load_or_export(args.model)
    raw = Path(tempfile.mkdtemp(prefix="ov-graphs-"))
    main_export(
        str(resolve(args.model).folder),
        str(raw),
        task="feature-extraction",
        library_name="transformers",
        opset=18,
        do_validation=False,
        local_files_only=True,
    )
    tok = Tokenizer.from_file(str(exported.tokenizer_path))
    tok.enable_truncation(256)
    tok.enable_padding()
    lines = ((args.data or data_dir()) / "scifact" / "corpus.jsonl").read_text().splitlines()[:128]
    texts = [(d := json.loads(line))["title"] + " " + d["text"] for line in lines]
    batches = []
    for i in range(0, len(texts), 16):
        enc = tok.encode_batch(texts[i : i + 16])
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        batches.append(
            {
                "input_ids": ids,
                "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
                "token_type_ids": np.zeros_like(ids),
            }
        )
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    sess = ort.InferenceSession(str(exported.graph_path("cpu")), so, providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}
    runs = {"onnxruntime cpu graph": lambda f: sess.run(None, {k: v for k, v in f.items() if k in names})[0]}
    core = ov.Core()
    config = {"INFERENCE_NUM_THREADS": args.threads, "NUM_STREAMS": 1, "INFERENCE_PRECISION_HINT": "f32"}
    for name, path in (
        ("openvino fused", exported.onnx_path),
        ("openvino cpu graph", exported.graph_path("cpu")),
        ("openvino standard ops", raw / "model.onnx"),
    ):
        req = core.compile_model(core.read_model(str(path)), "CPU", config).create_infer_request()
        runs[name] = (lambda r: lambda f: r.infer(f)[0])(req)
    ref = [runs["onnxruntime cpu graph"](b) for b in batches]
    diff = {k: max(float(np.abs(f(b) - r).max()) for b, r in zip(batches, ref)) for k, f in runs.items()}
    load = [load_average()]
    best = dict.fromkeys(runs, float("inf"))
    for rnd in range(args.rounds):
        order = list(runs.items()) if rnd % 2 == 0 else list(reversed(runs.items()))
        for k, f in order:
            t = time.perf_counter()
            for b in batches:
                f(b)
            best[k] = min(best[k], time.perf_counter() - t)
    load.append(load_average())
    print(chip_line(), f"load {load[0]} -> {load[1]}")
    base = best["onnxruntime cpu graph"]
    for k, v in best.items():
        print(f"{k:24s} {v:6.2f} s   speed vs onnxruntime {base / v:.2f}x   max abs diff {diff[k]:.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
