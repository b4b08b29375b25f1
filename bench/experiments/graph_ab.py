"""A/B small edits of the int8 runtime graph on real documents, batch by batch.

Takes the graph the CPU runtime loads (``cpu_graph`` of the int8 export), lets onnxruntime apply its
fusions once, then applies an edit to that optimized graph and loads every variant with
optimizations off, so each variant differs only by the edit. The first ``--docs`` SciFact docs are
cut into the engine's long-text batches (2 per batch, longest first); every batch runs through all
variants back to back (order flipped each batch and round), each batch keeps its best time per
variant, and docs/s come from the summed best times.

Thread spinning is switched off in every session: with several sessions in one process, the
spinning worker threads of the session that just ran steal the cores from the next one, and an
earlier version of this A/B "found" an 11% gain that was only that.

Edits:
- ``fold_bias``: the output-projection bias moves from a separate ``Add`` into
  ``DynamicQuantizeMatMul``'s bias input (one elementwise pass fewer per layer norm).
- ``ln_sumsq``: the decomposed layer norm's variance as ``ReduceSumSquare`` / E and
  ``d * Reciprocal(std)`` instead of ``Mul(d, d)`` + ``ReduceMean`` and ``Div``.

Run: .venv/bin/python bench/experiments/graph_ab.py [--docs 400] [--rounds 3] [--threads 2]
"""
from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def _producers(graph):
    return {out: node for node in graph.node for out in node.output}


def fold_bias(model):
    """Add(Add(DQMatMul(x), residual), bias) -> Add(DQMatMul(x, bias), residual)."""
    m = copy.deepcopy(model)
    g = m.graph
    prod = _producers(g)
    consts = {i.name for i in g.initializer}
    dropped = []
    for node in g.node:
        if node.op_type != "Add" or not node.output[0].endswith("/ln/sum") or node.input[1] not in consts:
            continue
        inner = prod[node.input[0]]
        mm = next(prod[i] for i in inner.input if i in prod and prod[i].op_type == "DynamicQuantizeMatMul")
        while len(mm.input) < 5:
            mm.input.append("")
        mm.input[4] = node.input[1]
        for user in g.node:
            for k, name in enumerate(user.input):
                if name == node.output[0]:
                    user.input[k] = inner.output[0]
        dropped.append(node)
    for node in dropped:
        g.node.remove(node)
    return m


def ln_sumsq(model, hidden: int):
    from onnx import helper, numpy_helper

    m = copy.deepcopy(model)
    g = m.graph
    g.initializer.append(numpy_helper.from_array(np.array(1.0 / hidden, np.float32), "ln_inv_hidden"))
    nodes = []
    for n in g.node:
        out = n.output[0]
        if n.op_type == "Mul" and out.endswith("/ln/d2"):
            continue
        if n.op_type == "ReduceMean" and out.endswith("/ln/var"):
            d = n.input[0].replace("/ln/d2", "/ln/d")
            nodes += [helper.make_node("ReduceSumSquare", [d, n.input[1]], [out + "_ss"], keepdims=1),
                      helper.make_node("Mul", [out + "_ss", "ln_inv_hidden"], [out])]
        elif n.op_type == "Div" and out.endswith("/ln/norm"):
            nodes += [helper.make_node("Reciprocal", [n.input[1]], [n.input[1] + "_r"]),
                      helper.make_node("Mul", [n.input[0], n.input[1] + "_r"], [out])]
        else:
            nodes.append(n)
    del g.node[:]
    g.node.extend(nodes)
    return m


def main(argv=None) -> int:
    import onnx
    import onnxruntime as ort

    from engine import Embedder
    from engine.batching import pad_batch, plan_batches
    from engine.eval.evaluate import load_beir
    from engine.kernels.normalize import l2_normalize, mean_pool
    from engine.models.graph import cpu_graph

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="all-MiniLM-L6-v2")
    ap.add_argument("--docs", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data", type=Path, default=DATA, help="folder with scifact/")
    args = ap.parse_args(argv)

    emb = Embedder(args.model, model_precision="int8", threads=args.threads)
    docs = load_beir(args.data / "scifact").doc_texts
    toks = emb.tokenize(docs[: args.docs])
    batches = []
    for batch in plan_batches(np.array([len(t) for t in toks]), 2):
        ids, mask = pad_batch([toks[j] for j in batch], 0)
        batches.append({"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})

    graph = cpu_graph(emb._exported.onnx_path)
    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        opts.optimized_model_filepath = str(Path(tmp) / "opt.onnx")
        ort.InferenceSession(graph if isinstance(graph, bytes) else str(graph), opts,
                             providers=["CPUExecutionProvider"])
        base = onnx.load(opts.optimized_model_filepath)
    hidden = emb.dim
    variants = {
        "as loaded": base,
        "fold_bias": fold_bias(base),
        "fold_bias + ln_sumsq": ln_sumsq(fold_bias(base), hidden),
        "as loaded (again)": base,
    }

    sessions = {}
    for name, model in variants.items():
        so = ort.SessionOptions()
        so.intra_op_num_threads = args.threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        sessions[name] = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])

    def pooled(sess):
        return l2_normalize(np.concatenate([mean_pool(sess.run(None, f)[0], f["attention_mask"]) for f in batches]))

    ref = pooled(sessions["as loaded"])
    names = list(sessions)
    best = {n: np.full(len(batches), np.inf) for n in names}
    for r in range(args.rounds):
        for b, feeds in enumerate(batches):
            for n in (names if (b + r) % 2 == 0 else names[::-1]):
                t = time.perf_counter()
                sessions[n].run(None, feeds)
                best[n][b] = min(best[n][b], time.perf_counter() - t)
    base_rate = len(toks) / best[names[0]].sum()
    for n in names:
        cos = (pooled(sessions[n]) * ref).sum(1)
        rate = len(toks) / best[n].sum()
        print(f"{n:<24} {rate:7.2f} docs/s {rate / base_rate:6.3f}x   "
              f"cosine to 'as loaded' mean {cos.mean():.5f} min {cos.min():.5f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
