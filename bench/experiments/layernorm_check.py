"""Why the CPU runtime decomposes layer norms: onnxruntime's fused kernels vs primitive ops.

1. One node on a (2, 256, 384) float tensor (two long documents through all-MiniLM-L6-v2):
   SkipLayerNormalization vs the same math as Add/ReduceMean/Sub/Mul/Sqrt/Div (what
   ``engine.models.graph.decompose_layer_norms`` writes), and BiasGelu vs FastGelu on
   (2, 256, 1536); microseconds per call, 1 and 2 threads.
2. The whole exported graph, as exported vs as the CPU runtime loads it (``cpu_graph``), on the
   first SciFact docs in length-sorted batches of 2 and 32: docs/s, alternating, best of rounds.

Run: .venv/bin/python bench/experiments/layernorm_check.py [--model all-MiniLM-L6-v2] [--precision int8] [--docs 100]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np


def _session(model, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])


def _time(sess, feeds, n=300) -> float:
    for _ in range(20):
        sess.run(None, feeds)
    t = time.perf_counter()
    for _ in range(n):
        sess.run(None, feeds)
    return (time.perf_counter() - t) / n * 1e6


def micro() -> None:
    from onnx import TensorProto, helper, numpy_helper

    from engine.models.graph import approximate_gelu, decompose_layer_norms

    rng = np.random.default_rng(0)
    b, s, h = 2, 256, 384

    def model(nodes, shape, inits):
        names = ("x", "s")[: 2 if len(nodes[0].input) > 2 else 1]
        ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in names]
        g = helper.make_graph(
            nodes,
            "g",
            ins,
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
            [numpy_helper.from_array(v, k) for k, v in inits.items()],
        )
        opsets = [helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)]
        return helper.make_model(g, opset_imports=opsets)

    vec = {k: rng.standard_normal(h).astype(np.float32) for k in ("gamma", "beta", "bias")}
    skip_ln = helper.make_node(
        "SkipLayerNormalization", ["x", "s", "gamma", "beta", "bias"], ["y"], domain="com.microsoft", epsilon=1e-12
    )
    ln = model([skip_ln], [b, s, h], vec)
    feeds = {
        "x": rng.standard_normal((b, s, h)).astype(np.float32),
        "s": rng.standard_normal((b, s, h)).astype(np.float32),
    }
    gelu = model(
        [helper.make_node("BiasGelu", ["x", "bias4"], ["y"], domain="com.microsoft")],
        [b, s, 4 * h],
        {"bias4": rng.standard_normal(4 * h).astype(np.float32)},
    )
    gfeeds = {"x": rng.standard_normal((b, s, 4 * h)).astype(np.float32)}
    for threads in (1, 2):
        fused = _time(_session(ln.SerializeToString(), threads), feeds)
        dec = ln.__deepcopy__()
        decompose_layer_norms(dec)
        prim = _time(_session(dec.SerializeToString(), threads), feeds)
        erf = _time(_session(gelu.SerializeToString(), threads), gfeeds)
        fast = gelu.__deepcopy__()
        approximate_gelu(fast)
        tanh = _time(_session(fast.SerializeToString(), threads), gfeeds)
        n = b * s * h
        print(
            f"threads {threads}: SkipLayerNormalization {fused:7.0f} us ({fused * 1e3 / n:.2f} ns/elem)   "
            f"primitive ops {prim:7.0f} us ({fused / prim:.2f}x faster)   "
            f"BiasGelu {erf:6.0f} us   FastGelu {tanh:6.0f} us ({erf / tanh:.2f}x)"
        )


def end_to_end(model: str, precision: str, n_docs: int, rounds: int, data: Path | None = None) -> None:
    from engine import Embedder
    from engine.batching import pad_batch, plan_batches
    from engine.benchmark.data import data_dir
    from engine.eval.evaluate import load_beir
    from engine.models.graph import cpu_graph

    docs = load_beir((data or data_dir()) / "scifact").doc_texts
    emb = Embedder(model, model_precision=precision, threads=2, runtime="onnxruntime")
    ids = emb.tokenize(docs[:n_docs])
    lengths = np.array([len(x) for x in ids])
    path = emb._exported.onnx_path
    sessions = {"as exported": _session(path, 2), "cpu_graph": _session(cpu_graph(path), 2)}

    def run(sess, batch):
        input_ids, mask = pad_batch([ids[i] for i in batch], 0)
        names = {i.name for i in sess.get_inputs()}
        feeds = {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": np.zeros_like(input_ids)}
        return sess.run(None, {k: v for k, v in feeds.items() if k in names})[0]

    for bs in (2, 32):
        batches = plan_batches(lengths, bs)
        best = dict.fromkeys(sessions, 0.0)
        for r in range(rounds):
            for name in sessions if r % 2 == 0 else reversed(list(sessions)):
                t = time.perf_counter()
                for batch in batches:
                    run(sessions[name], batch)
                best[name] = max(best[name], len(ids) / (time.perf_counter() - t))
        a, c = best["as exported"], best["cpu_graph"]
        print(
            f"{model} {precision} batch {bs:2d}: as exported {a:6.1f} docs/s, cpu_graph {c:6.1f} docs/s ({c / a:.2f}x)"
        )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="all-MiniLM-L6-v2")
    ap.add_argument("--precision", default="int8")
    ap.add_argument("--docs", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--data", type=Path, default=None, help="folder with scifact/ (default $EMBED_DATA_DIR, else ../shared/data)"
    )
    args = ap.parse_args(argv)
    from engine.benchmark.chip import chip_line

    print(chip_line(), flush=True)
    micro()
    end_to_end(args.model, args.precision, args.docs, args.rounds, args.data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
