"""models/graph.py: graph rewrites for the CPU runtime, checked against numpy and against the unrewritten graph."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from engine.models.graph import cpu_graph, decompose_layer_norms  # noqa: E402

H = 24


def _layer_norm(a, gamma, beta, eps):
    mean = a.mean(-1, keepdims=True)
    var = ((a - mean) ** 2).mean(-1, keepdims=True)
    return (a - mean) / np.sqrt(var + eps) * gamma + (0 if beta is None else beta)


def _run(model, feeds):
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _model(nodes, inputs, inits, opset, outputs=("y",)):
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 5, H]) for n in inputs],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, [2, 5, H]) for o in outputs],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid("com.microsoft", 1)])


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return {
        "x": (rng.standard_normal((2, 5, H)) * 3 + 1).astype(np.float32),
        "s": rng.standard_normal((2, 5, H)).astype(np.float32),
        "gamma": rng.standard_normal(H).astype(np.float32),
        "beta": rng.standard_normal(H).astype(np.float32),
        "bias": rng.standard_normal(H).astype(np.float32),
    }


@pytest.mark.parametrize("with_beta", [True, False])
@pytest.mark.parametrize("with_bias", [True, False])
def test_skip_layer_norm_matches_numpy(data, with_beta, with_bias):
    names = ["x", "s", "gamma", "beta" if with_beta else "", "bias" if with_bias else ""]
    while names[-1] == "":
        names.pop()
    node = helper.make_node("SkipLayerNormalization", names, ["y"], domain="com.microsoft", epsilon=1e-5)
    inits = {k: data[k] for k in ("gamma", "beta", "bias") if k in names}
    model = _model([node], ["x", "s"], inits, 18)
    fused = _run(model, {"x": data["x"], "s": data["s"]})[0]
    assert decompose_layer_norms(model) == 1
    assert not [n for n in model.graph.node if "LayerNorm" in n.op_type]
    got = _run(model, {"x": data["x"], "s": data["s"]})[0]
    a = data["x"] + data["s"] + (data["bias"] if with_bias else 0)
    want = _layer_norm(a.astype(np.float64), data["gamma"], data["beta"] if with_beta else None, 1e-5)
    np.testing.assert_allclose(got, want, atol=2e-5)
    np.testing.assert_allclose(got, fused, atol=2e-5)


@pytest.mark.parametrize("opset", [17, 18])  # ReduceMean's axes: attribute before 18, input from 18
def test_layer_norm_matches_numpy(data, opset):
    node = helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["y"], axis=-1, epsilon=1e-12)
    model = _model([node], ["x"], {"gamma": data["gamma"], "beta": data["beta"]}, opset)
    assert decompose_layer_norms(model) == 1
    onnx.checker.check_model(model)
    got = _run(model, {"x": data["x"]})[0]
    want = _layer_norm(data["x"].astype(np.float64), data["gamma"], data["beta"], 1e-12)
    np.testing.assert_allclose(got, want, atol=2e-5)


def test_nodes_with_used_side_outputs_or_other_axes_are_kept(data):
    side = helper.make_node("SkipLayerNormalization", ["x", "s", "gamma"], ["y", "", "", "sum"], domain="com.microsoft")
    other_axis = helper.make_node("LayerNormalization", ["y", "gamma2"], ["z"], axis=1)
    inits = {"gamma": data["gamma"], "gamma2": np.ones((5, H), np.float32)}
    model = _model([side, other_axis], ["x", "s"], inits, 18, ("z", "sum"))
    assert decompose_layer_norms(model) == 0
    assert [n.op_type for n in model.graph.node] == ["SkipLayerNormalization", "LayerNormalization"]


def test_cpu_graph_of_an_export_gives_the_same_vectors(tiny_embedder):
    """The CPU runtime loads the export's model.cpu.onnx: cpu_graph(export), written at export
    time; same vectors as the export itself, fused layer norms gone."""
    from engine.batching import pad_batch
    from engine.runtime import Session

    exported = tiny_embedder._exported
    path = exported.onnx_path
    base = onnx.load(str(path))
    assert any(n.op_type == "SkipLayerNormalization" for n in base.graph.node)  # the fixture has fused norms
    cpu_file = exported.graph_path("cpu")
    assert cpu_file.name == exported.meta["graphs"]["cpu"] == "model.cpu.onnx"
    assert tiny_embedder._graph == cpu_file
    assert cpu_file.read_bytes() == cpu_graph(path)  # the file is exactly the in-memory rewrite
    rewritten = onnx.load(str(cpu_file))
    ops = {n.op_type for n in rewritten.graph.node}
    assert not {op for op in ops if "LayerNormalization" in op} - {"EmbedLayerNormalization"}, ops
    texts = ["a short one", "a somewhat longer sentence about embeddings and onnx graphs", ""]
    input_ids, mask = pad_batch(tiny_embedder.tokenize(texts), 0)
    feeds = {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": np.zeros_like(input_ids)}
    want = Session(path).run(feeds)
    np.testing.assert_allclose(Session(cpu_file).run(feeds), want, atol=1e-5)
    np.testing.assert_allclose(Session(cpu_graph(path)).run(feeds), want, atol=1e-5)


def test_cpu_graph_leaves_graphs_without_layer_norms_alone(tmp_path):
    """Nothing to decompose: the runtime loads the file as it is (no second copy is written)."""
    node = helper.make_node("Relu", ["x"], ["y"])
    path = tmp_path / "relu.onnx"
    onnx.save(_model([node], ["x"], {}, 18), str(path))
    assert cpu_graph(path) == path


def test_approximate_gelu_is_the_tanh_form(data):
    from engine.models.graph import approximate_gelu

    x = np.linspace(-6, 6, 2 * 5 * H, dtype=np.float32).reshape(2, 5, H)
    node = helper.make_node("BiasGelu", ["x", "bias"], ["y"], domain="com.microsoft")
    model = _model([node], ["x"], {"bias": data["bias"]}, 18)
    exact = _run(model, {"x": x})[0]
    assert approximate_gelu(model) == 1 and model.graph.node[0].op_type == "FastGelu"
    got = _run(model, {"x": x})[0]
    a = (x + data["bias"]).astype(np.float64)
    want = 0.5 * a * (1 + np.tanh(np.sqrt(2 / np.pi) * (a + 0.044715 * a**3)))
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert 1e-4 < np.abs(got - exact).max() < 2e-3  # really the approximation, and a close one
