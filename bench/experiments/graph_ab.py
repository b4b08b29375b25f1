"""A/B small edits of the runtime graph on real texts, batch by batch.

Takes the graph the CPU runtime loads (``cpu_graph`` of the int8 or, with ``--precision fp32``, the
fp32 export), lets onnxruntime apply its fusions once, then applies an edit to that optimized graph
and loads every variant with optimizations off, so each variant differs only by the edit (and
onnxruntime cannot fuse an edit back). The first ``--docs`` SciFact docs are cut into the engine's
long-text batches (2 per batch, longest first), or with ``--texts sents`` the first 2,000 STS-dev
sentences into its short-text batches (32 per batch); every batch runs through all variants back
to back (order flipped each batch and round), each batch keeps its best time per variant, and
texts/s come from the summed best times.

Thread spinning is switched off in every session: with several sessions in one process, the
spinning worker threads of the session that just ran steal the cores from the next one, and an
earlier version of this A/B "found" an 11% gain that was only that.

Edits of the int8 graph:
- ``fold_bias``: the output-projection bias moves from a separate ``Add`` into
  ``DynamicQuantizeMatMul``'s bias input (one elementwise pass fewer per layer norm).
- ``ln_sumsq``: the decomposed layer norm's variance as ``ReduceSumSquare`` / E and
  ``d * Reciprocal(std)`` instead of ``Mul(d, d)`` + ``ReduceMean`` and ``Div``.

Edits of the fp32 graph (exact: outputs move by float rounding only):
- ``split_attention``: the fused ``Attention`` op (onnxruntime projects Q, K and V head by head,
  batch row by batch row: many 14 x 384 x 32 GEMMs on a sentence batch) as three whole-batch
  ``MatMul``s and ``MultiHeadAttention`` (bias and padding mask passed through).
- ``erf_gelu``: ``BiasGelu`` as ``Add``, ``Mul``, ``Erf``, ``Mul``, ``Add``, ``Mul`` (onnxruntime
  fuses this back into ``BiasGelu`` when optimizations are on).

Run: .venv/bin/python bench/experiments/graph_ab.py [--docs 400] [--rounds 3] [--threads 2]
     [--precision fp32 --texts sents --threads 1]
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


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


def _rewrite_nodes(model, replace, initializers=()):
    """A copy of ``model`` with ``initializers`` added and each node replaced by ``replace(node,
    graph)``: a list of nodes (possibly empty), or None to keep the node."""
    m = copy.deepcopy(model)
    g = m.graph
    g.initializer.extend(initializers)
    nodes = []
    for node in g.node:
        new = replace(node, g)
        nodes.extend([node] if new is None else new)
    del g.node[:]
    g.node.extend(nodes)
    return m


def ln_sumsq(model, hidden: int):
    from onnx import helper, numpy_helper

    def replace(n, g):
        out = n.output[0]
        if n.op_type == "Mul" and out.endswith("/ln/d2"):
            return []
        if n.op_type == "ReduceMean" and out.endswith("/ln/var"):
            d = n.input[0].replace("/ln/d2", "/ln/d")
            return [
                helper.make_node("ReduceSumSquare", [d, n.input[1]], [out + "_ss"], keepdims=1),
                helper.make_node("Mul", [out + "_ss", "ln_inv_hidden"], [out]),
            ]
        if n.op_type == "Div" and out.endswith("/ln/norm"):
            return [
                helper.make_node("Reciprocal", [n.input[1]], [n.input[1] + "_r"]),
                helper.make_node("Mul", [n.input[0], n.input[1] + "_r"], [out]),
            ]
        return None

    inv = numpy_helper.from_array(np.array(1.0 / hidden, np.float32), "ln_inv_hidden")
    return _rewrite_nodes(model, replace, [inv])


def split_attention(model):
    """Attention(x, W, b, mask) -> MultiHeadAttention(x Wq, x Wk, x Wv, b, mask)."""
    from onnx import helper, numpy_helper

    def replace(node, g):
        inits = {t.name: t for t in g.initializer}
        if not (node.op_type == "Attention" and node.domain == "com.microsoft" and node.input[1] in inits):
            return None
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        w = numpy_helper.to_array(inits[node.input[1]])
        h = w.shape[1] // 3
        nodes, qkv = [], []
        for j, part in enumerate("qkv"):
            name = f"{node.name}/w{part}"
            g.initializer.append(numpy_helper.from_array(np.ascontiguousarray(w[:, j * h : (j + 1) * h]), name))
            nodes.append(helper.make_node("MatMul", [node.input[0], name], [f"{node.name}/{part}"]))
            qkv.append(f"{node.name}/{part}")
        mask = node.input[3] if len(node.input) > 3 else ""
        keep = {k: v for k, v in attrs.items() if k in ("num_heads", "mask_filter_value")}
        return [
            *nodes,
            helper.make_node(
                "MultiHeadAttention", [*qkv, node.input[2], mask], [node.output[0]], domain="com.microsoft", **keep
            ),
        ]

    return _rewrite_nodes(model, replace)


def erf_gelu(model):
    """BiasGelu(x, b) -> y * (0.5 + 0.5 * erf(y / sqrt(2))), y = x + b."""
    from onnx import helper, numpy_helper

    def replace(node, g):
        if not (node.op_type in ("BiasGelu", "Gelu") and node.domain == "com.microsoft"):
            return None
        p = node.name or node.output[0]
        y, nodes = node.input[0], []
        if len(node.input) > 1 and node.input[1]:
            nodes.append(helper.make_node("Add", [y, node.input[1]], [f"{p}/y"]))
            y = f"{p}/y"
        return [
            *nodes,
            helper.make_node("Mul", [y, "gelu/r2"], [f"{p}/s"]),
            helper.make_node("Erf", [f"{p}/s"], [f"{p}/e"]),
            helper.make_node("Mul", [f"{p}/e", "gelu/half"], [f"{p}/eh"]),
            helper.make_node("Add", [f"{p}/eh", "gelu/half"], [f"{p}/c"]),
            helper.make_node("Mul", [y, f"{p}/c"], [node.output[0]]),
        ]

    consts = [
        numpy_helper.from_array(np.array(v, np.float32), n)
        for n, v in (("gelu/r2", 1 / np.sqrt(2)), ("gelu/half", 0.5))
    ]
    return _rewrite_nodes(model, replace, consts)


def main(argv=None) -> int:
    import onnx
    import onnxruntime as ort

    from engine import Embedder
    from engine.batching import pad_batch, plan_batches
    from engine.benchmark.data import data_dir, scifact_sts_texts
    from engine.kernels.normalize import l2_normalize, mean_pool
    from engine.models.graph import cpu_graph

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="all-MiniLM-L6-v2")
    ap.add_argument("--docs", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precision", choices=("int8", "fp32"), default="int8")
    ap.add_argument("--texts", choices=("docs", "sents"), default="docs")
    ap.add_argument(
        "--data",
        type=Path,
        default=None,
        help="folder with scifact/ and stsb/ (default $EMBED_DATA_DIR, else ../shared/data)",
    )
    args = ap.parse_args(argv)
    from engine.benchmark.chip import chip_line

    print(chip_line(), flush=True)

    emb = Embedder(args.model, model_precision=args.precision, threads=args.threads, runtime="onnxruntime")
    texts = scifact_sts_texts(args.data or data_dir(), args.docs, 2000)[args.texts]
    toks = emb.tokenize(texts)
    batches = []
    for batch in plan_batches(np.array([len(t) for t in toks]), 2 if args.texts == "docs" else 32):
        ids, mask = pad_batch([toks[j] for j in batch], 0)
        batches.append({"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})

    graph = cpu_graph(emb._exported.onnx_path)
    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        opts.optimized_model_filepath = str(Path(tmp) / "opt.onnx")
        ort.InferenceSession(
            graph if isinstance(graph, bytes) else str(graph), opts, providers=["CPUExecutionProvider"]
        )
        base = onnx.load(opts.optimized_model_filepath)
    hidden = emb.dim
    if args.precision == "int8":
        edits = {"fold_bias": fold_bias(base), "fold_bias + ln_sumsq": ln_sumsq(fold_bias(base), hidden)}
    else:
        edits = {
            "split_attention": split_attention(base),
            "erf_gelu": erf_gelu(base),
            "split_attention + erf_gelu": erf_gelu(split_attention(base)),
        }
    variants = {"as loaded": base, **edits, "as loaded (again)": base}

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
            for n in names if (b + r) % 2 == 0 else names[::-1]:
                t = time.perf_counter()
                sessions[n].run(None, feeds)
                best[n][b] = min(best[n][b], time.perf_counter() - t)
    base_rate = len(toks) / best[names[0]].sum()
    for n in names:
        cos = (pooled(sessions[n]) * ref).sum(1)
        rate = len(toks) / best[n].sum()
        print(
            f"{n:<28} {rate:8.2f} {args.texts}/s {rate / base_rate:6.3f}x   "
            f"cosine to 'as loaded' mean {cos.mean():.5f} min {cos.min():.5f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
