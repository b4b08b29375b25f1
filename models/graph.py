"""ONNX graph surgery for the graphs the runtime loads (run at export time, never at load time).

``add_mean_pooling`` appends sentence-transformers' mean pooling to a graph whose first output
is token embeddings, so a GPU session returns (batch, dim) instead of (batch, seq, dim): the
device-to-host copy shrinks by the sequence length and no pooling kernel runs on the CPU.
``cpu_model`` / ``decompose_layer_norms`` rewrite (Skip)LayerNormalization into primitive ops for
the CPU runtime, where onnxruntime's fused kernels are the slow path (see the docstring).
models/export.py writes both into the export folder; ``cpu_graph`` builds the CPU rewrite of any
graph in memory (for experiments on graphs outside the cache).
"""

from __future__ import annotations

from pathlib import Path

POOLED_OUTPUT = "sentence_embedding"


def add_mean_pooling(src: str | Path):
    """``src`` with mean pooling appended: out = sum_t(h_t * m_t) / max(sum_t m_t, 1e-9), its only output.

    h is the graph's first output (token embeddings), m the attention mask (as float). The graph is
    loaded without its external data: tensors kept in an external data file stay references to it,
    so save the result beside ``src``.

    Returns:
        The ModelProto.
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(src), load_external_data=False)
    g = model.graph
    hidden = g.output[0].name
    mask = next(i.name for i in g.input if i.name == "attention_mask")
    elem = g.output[0].type.tensor_type.elem_type  # float or float16, as the graph computes
    np_dtype = onnx.helper.tensor_dtype_to_np_dtype(elem)
    g.initializer.extend(
        [
            numpy_helper.from_array(np.array([-1], dtype=np.int64), "pool_axes_last"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "pool_axes_seq"),
            numpy_helper.from_array(np.array(1e-9 if elem == TensorProto.FLOAT else 1e-4, dtype=np_dtype), "pool_eps"),
        ]
    )
    g.node.extend(
        [
            helper.make_node("Cast", [mask], ["pool_mask_f"], to=elem),
            helper.make_node("Unsqueeze", ["pool_mask_f", "pool_axes_last"], ["pool_mask_u"]),
            helper.make_node("Mul", [hidden, "pool_mask_u"], ["pool_masked"]),
            helper.make_node("ReduceSum", ["pool_masked", "pool_axes_seq"], ["pool_sum"], keepdims=0),
            helper.make_node("ReduceSum", ["pool_mask_u", "pool_axes_seq"], ["pool_count"], keepdims=0),
            helper.make_node("Max", ["pool_count", "pool_eps"], ["pool_count_c"]),
            helper.make_node("Div", ["pool_sum", "pool_count_c"], ["pool_div"]),
            helper.make_node("Cast", ["pool_div"], [POOLED_OUTPUT], to=TensorProto.FLOAT),
        ]
    )
    dim = g.output[0].type.tensor_type.shape.dim[-1].dim_value or "dim"
    out = helper.make_tensor_value_info(POOLED_OUTPUT, TensorProto.FLOAT, ["batch", dim])
    del g.output[:]
    g.output.append(out)
    return model


def decompose_layer_norms(model) -> int:
    """Rewrite (Skip)LayerNormalization nodes as primitive ops, in place; return how many.

    y = (a - mean(a)) / sqrt(mean((a - mean(a))^2) + eps) * gamma + beta, a = x + skip + bias,
    over the last axis: the same two-pass formula as onnxruntime's kernel, so outputs agree to
    float rounding. Why: onnxruntime's vectorized Add / ReduceMean / Sub / Mul / Div CPU kernels
    do this work faster than its fused (Skip)LayerNormalization kernel (measured:
    bench/experiments/models_notes.md#export). Nodes whose optional outputs (mean, inv_std_var,
    input_skip_bias_sum) are used, or that normalize over another axis, are left alone.
    """
    import numpy as np
    from onnx import helper, numpy_helper

    g = model.graph
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 18)
    axes = "ln_axes_last"

    def reduce_mean(x, y):  # axes became an input in opset 18
        if opset >= 18:
            return helper.make_node("ReduceMean", [x, axes], [y], keepdims=1)
        return helper.make_node("ReduceMean", [x], [y], axes=[-1], keepdims=1)

    new_nodes, count = [], 0
    for node in g.node:
        is_skip = node.op_type == "SkipLayerNormalization" and node.domain == "com.microsoft"
        is_ln = node.op_type == "LayerNormalization" and node.domain in ("", "ai.onnx")
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        extra_used = any(o and o in used for o in node.output[1:])
        if not (is_skip or is_ln) or extra_used or (is_ln and attrs.get("axis", -1) != -1):
            new_nodes.append(node)
            continue
        count += 1
        p = f"{node.name or node.output[0]}/ln"
        eps = f"{p}/eps"
        g.initializer.append(numpy_helper.from_array(np.array(attrs.get("epsilon", 1e-5), dtype=np.float32), eps))
        ins = list(node.input) + [""] * 5
        if is_skip:  # input, skip, gamma, beta, bias
            x, skip, gamma, beta, bias = ins[:5]
            a = f"{p}/sum"
            new_nodes.append(helper.make_node("Add", [x, skip], [a if not bias else a + "0"]))
            if bias:
                new_nodes.append(helper.make_node("Add", [a + "0", bias], [a]))
        else:  # X, Scale, B
            a, gamma, beta = ins[0], ins[1], ins[2]
        out = node.output[0]
        scaled = f"{p}/scaled" if beta else out
        new_nodes += [
            reduce_mean(a, f"{p}/mean"),
            helper.make_node("Sub", [a, f"{p}/mean"], [f"{p}/d"]),
            helper.make_node("Mul", [f"{p}/d", f"{p}/d"], [f"{p}/d2"]),
            reduce_mean(f"{p}/d2", f"{p}/var"),
            helper.make_node("Add", [f"{p}/var", eps], [f"{p}/var_eps"]),
            helper.make_node("Sqrt", [f"{p}/var_eps"], [f"{p}/std"]),
            helper.make_node("Div", [f"{p}/d", f"{p}/std"], [f"{p}/norm"]),
            helper.make_node("Mul", [f"{p}/norm", gamma], [scaled]),
        ]
        if beta:
            new_nodes.append(helper.make_node("Add", [scaled, beta], [out]))
    if count:
        if opset >= 18:
            g.initializer.append(numpy_helper.from_array(np.array([-1], dtype=np.int64), axes))
        del g.node[:]
        g.node.extend(new_nodes)
    return count


def approximate_gelu(model) -> int:
    """Swap exact (erf) GELU nodes for onnxruntime's FastGelu (tanh form), in place; return how many.

    FastGelu(x + b) = 0.5 (x + b) (1 + tanh(sqrt(2/pi) ((x + b) + 0.044715 (x + b)^3))): within
    ~1e-3 of the erf form, and faster on CPU. Used by the int8 recipe only, where the
    quantization error is a hundred times larger; fp32 keeps erf.
    """
    count = 0
    for node in model.graph.node:
        if node.domain == "com.microsoft" and node.op_type in ("BiasGelu", "Gelu"):
            node.op_type = "FastGelu"  # same inputs: X and an optional bias
            count += 1
    return count


# Graphs above this size are loaded from their file as they are: protobuf serializes at most 2 GiB.
_IN_MEMORY_LIMIT = 1 << 30


def cpu_model(onnx_path: str | Path):
    """``onnx_path`` with its layer norms decomposed, for the CPU runtime.

    The math is unchanged (fp32 outputs agree to float rounding, tests/models/test_graph.py), so the
    fingerprint is the export's.

    Returns:
        A ModelProto, or None when the CPU runtime should load the file as it is: nothing to
        decompose, over 1 GiB, or with external data.
    """
    import onnx

    path = Path(onnx_path)
    if path.stat().st_size > _IN_MEMORY_LIMIT:
        return None
    model = onnx.load(str(path), load_external_data=False)
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        return None
    return model if decompose_layer_norms(model) else None


def cpu_graph(onnx_path: str | Path) -> bytes | Path:
    """What the CPU runtime would load for the graph ``onnx_path``: ``cpu_model`` serialized in
    memory, or the path itself. For experiments on graphs outside the cache; an export's own CPU
    graph is a file in its folder (``ExportedModel.graph_path("cpu")``).
    """
    model = cpu_model(onnx_path)
    return Path(onnx_path) if model is None else model.SerializeToString()
