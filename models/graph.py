"""ONNX graph surgery shared by export paths.

``add_mean_pooling`` appends sentence-transformers' mean pooling to a graph whose first output
is token embeddings, so a GPU session returns (batch, dim) instead of (batch, seq, dim): the
device-to-host copy shrinks by the sequence length and no pooling kernel runs on the CPU.
"""
from __future__ import annotations

from pathlib import Path

POOLED_OUTPUT = "sentence_embedding"


def add_mean_pooling(src: str | Path, dst: str | Path) -> None:
    """out = sum_t(h_t * m_t) / max(sum_t m_t, 1e-9), with m the attention mask (float)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(src))
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
    out = helper.make_tensor_value_info(POOLED_OUTPUT, TensorProto.FLOAT, ["batch", g.output[0].type.tensor_type.shape.dim[-1].dim_value or "dim"])
    del g.output[:]
    g.output.append(out)
    onnx.save(model, str(dst))


def pooled_variant(onnx_path: str | Path) -> Path:
    """``model.pooled.onnx`` beside ``onnx_path`` (built once, atomically), with mean pooling in-graph."""
    import os
    import tempfile

    src = Path(onnx_path)
    dst = src.with_name(src.stem + ".pooled.onnx")
    if not dst.is_file():
        fd, tmp = tempfile.mkstemp(prefix=dst.name, dir=dst.parent)
        os.close(fd)
        try:
            add_mean_pooling(src, tmp)
            os.replace(tmp, dst)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return dst
