"""How fast can onnxruntime's CPU provider run one BERT layer's attention core, and would int8 help?

One MiniLM-sized layer (hidden 384 = 12 heads x 32) on a batch of two 256-token documents, the
shape the engine's CPU batches take for long texts. Times each piece as its own tiny graph
(best of 20 blocks of 8 runs):

- the fused fp32 ``Attention`` op with and without a padding mask, and its Q/K/V projection alone
  (the difference is the attention core: scores, softmax, context);
- ``MultiHeadAttention`` (onnxruntime's CPU flash-attention path) on separate Q, K, V;
- the core as plain ops (MatMul, Softmax, MatMul) and each of them alone;
- the core with int8 products built from stock ops: ``DynamicQuantizeMatMul`` for Q.K^T against a
  per-tensor symmetric int8 K, and also for P.V with P = exp(s - rowmax) in [0, 1] (normalised by
  its row sum afterwards, so a flat row keeps its resolution); max relative error vs fp32 printed.

It also prints the fp32 and int8 GEMM rates of a (512 x 384) x (384 x 1536) product, the yardstick
for "at peak". Run: .venv/bin/python bench/experiments/attention_core.py [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

B, L, H, D = 2, 256, 12, 32
E = H * D


def _session(nodes, inputs, inits, threads):
    """A session on a one-output graph of ``nodes`` (output "y")."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        nodes, "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=inits
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _time_us(sess, feeds, blocks=20, per_block=8) -> float:
    """Best mean over ``blocks`` blocks of ``per_block`` runs.

    Short blocks, so one quiet moment of a shared machine suffices.
    """
    for _ in range(5):
        sess.run(None, feeds)
    best = float("inf")
    for _ in range(blocks):
        t = time.perf_counter()
        for _ in range(per_block):
            sess.run(None, feeds)
        best = min(best, (time.perf_counter() - t) / per_block)
    return best * 1e6


def main(argv=None) -> int:
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    th = ap.parse_args(argv).threads
    from engine.benchmark.chip import chip_line

    print(chip_line(), flush=True)
    rng = np.random.default_rng(0)
    vi = h.make_tensor_value_info

    # --- fused Attention, with / without mask, and its projection alone
    x = rng.standard_normal((B, L, E)).astype(np.float32)
    w = (rng.standard_normal((E, 3 * E)) * 0.05).astype(np.float32)
    inits = [nh.from_array(w, "W"), nh.from_array(np.zeros(3 * E, np.float32), "b")]
    xin, min_ = vi("x", T.FLOAT, [B, L, E]), vi("m", T.INT32, [B, L])
    attn = _session(
        [h.make_node("Attention", ["x", "W", "b", "m"], ["y"], domain="com.microsoft", num_heads=H)],
        [xin, min_],
        inits,
        th,
    )
    attn_nomask = _session(
        [h.make_node("Attention", ["x", "W", "b"], ["y"], domain="com.microsoft", num_heads=H)], [xin], inits, th
    )
    proj = _session([h.make_node("MatMul", ["x", "W"], ["t"]), h.make_node("Add", ["t", "b"], ["y"])], [xin], inits, th)
    t_attn = _time_us(attn, {"x": x, "m": np.ones((B, L), np.int32)})
    t_nomask = _time_us(attn_nomask, {"x": x})
    t_proj = _time_us(proj, {"x": x})
    print(f"Attention op (fp32 projection + core), padding mask: {t_attn:7.0f} us")
    print(f"Attention op, no mask:                              {t_nomask:7.0f} us")
    print(f"its Q/K/V projection alone (MatMul + Add):          {t_proj:7.0f} us  -> core ~{t_attn - t_proj:.0f} us")

    # --- the core on its own
    q3 = [vi(n, T.FLOAT, [B, L, E]) for n in "qkv"]
    mha = _session(
        [h.make_node("MultiHeadAttention", ["q", "k", "v"], ["y"], domain="com.microsoft", num_heads=H)], q3, [], th
    )
    q = rng.standard_normal((B, L, E)).astype(np.float32)
    print(f"MultiHeadAttention (CPU flash attention), no mask:   {_time_us(mha, {'q': q, 'k': q, 'v': q}):7.0f} us")

    q4, k4, v4 = vi("q", T.FLOAT, [B, H, L, D]), vi("k", T.FLOAT, [B, H, D, L]), vi("v", T.FLOAT, [B, H, L, D])
    qq = rng.standard_normal((B, H, L, D)).astype(np.float32)
    kk = (rng.standard_normal((B, H, D, L)) * 0.3).astype(np.float32)
    vv = rng.standard_normal((B, H, L, D)).astype(np.float32)
    feeds = {"q": qq, "k": kk, "v": vv}
    plain = _session(
        [
            h.make_node("MatMul", ["q", "k"], ["s"]),
            h.make_node("Softmax", ["s"], ["p"], axis=-1),
            h.make_node("MatMul", ["p", "v"], ["y"]),
        ],
        [q4, k4, v4],
        [],
        th,
    )
    qk = _session([h.make_node("MatMul", ["q", "k"], ["y"])], [q4, k4], [], th)
    sm = _session([h.make_node("Softmax", ["s"], ["y"], axis=-1)], [vi("s", T.FLOAT, [B, H, L, L])], [], th)
    pv = _session([h.make_node("MatMul", ["p", "v"], ["y"])], [vi("p", T.FLOAT, [B, H, L, L]), v4], [], th)
    t_qk = _time_us(qk, {"q": qq, "k": kk})
    print(f"core as MatMul + Softmax + MatMul:                   {_time_us(plain, feeds):7.0f} us")
    print(
        f"  Q.K^T {t_qk:.0f} us ({B * H * L * L * D / t_qk / 1e3 / th:.0f} GMAC/s per thread),"
        f" softmax {_time_us(sm, {'s': rng.standard_normal((B, H, L, L)).astype(np.float32)}):.0f} us,"
        f" P.V {_time_us(pv, {'p': rng.random((B, H, L, L)).astype(np.float32), 'v': vv}):.0f} us"
    )

    # --- int8 products from stock ops
    consts = [
        nh.from_array(np.array(0, np.int8), "z8"),
        nh.from_array(np.array(1 / 127, np.float32), "inv127"),
        nh.from_array(np.array([-1], np.int64), "ax"),
    ]

    def symq(name):  # per-tensor symmetric int8: scale = max|t| / 127
        return [
            h.make_node("Abs", [name], [name + "_a"]),
            h.make_node("ReduceMax", [name + "_a"], [name + "_m"], keepdims=0),
            h.make_node("Mul", [name + "_m", "inv127"], [name + "_s"]),
            h.make_node("QuantizeLinear", [name, name + "_s", "z8"], [name + "_q"]),
        ]

    dq = "DynamicQuantizeMatMul"
    int8_qk = _session(
        [
            *symq("k"),
            h.make_node(dq, ["q", "k_q", "k_s", "z8"], ["s"], domain="com.microsoft"),
            h.make_node("Softmax", ["s"], ["p"], axis=-1),
            h.make_node("MatMul", ["p", "v"], ["y"]),
        ],
        [q4, k4, v4],
        consts,
        th,
    )
    int8_both = _session(
        symq("k")
        + symq("v")
        + [
            h.make_node(dq, ["q", "k_q", "k_s", "z8"], ["s"], domain="com.microsoft"),
            h.make_node("ReduceMax", ["s"], ["mx"], axes=[-1], keepdims=1),
            h.make_node("Sub", ["s", "mx"], ["d"]),
            h.make_node("Exp", ["d"], ["e"]),
            h.make_node("ReduceSum", ["e", "ax"], ["rs"], keepdims=1),
            h.make_node(dq, ["e", "v_q", "v_s", "z8"], ["o"], domain="com.microsoft"),
            h.make_node("Div", ["o", "rs"], ["y"]),
        ],
        [q4, k4, v4],
        consts,
        th,
    )
    ref = plain.run(None, feeds)[0]
    for name, sess in (("int8 Q.K^T, fp32 P.V", int8_qk), ("int8 Q.K^T and P.V", int8_both)):
        err = np.abs(sess.run(None, feeds)[0] - ref).max() / np.abs(ref).max()
        print(f"core, {name:<22}                {_time_us(sess, feeds):7.0f} us  (max error {err:.3f} of max |out|)")

    # --- yardstick: GEMM rates
    m, k, n = B * L, E, 4 * E
    a = rng.standard_normal((m, k)).astype(np.float32)
    wq = rng.integers(-127, 128, (k, n)).astype(np.int8)
    ain = vi("x", T.FLOAT, [m, k])
    s8 = _session(
        [h.make_node(dq, ["x", "W", "ws", "z8"], ["y"], domain="com.microsoft")],
        [ain],
        [nh.from_array(wq, "W"), nh.from_array(np.array(0.01, np.float32), "ws"), consts[0]],
        th,
    )
    f32 = _session([h.make_node("MatMul", ["x", "W"], ["y"])], [ain], [nh.from_array(wq.astype(np.float32), "W")], th)
    for name, sess in (("fp32 MatMul", f32), ("int8 DynamicQuantizeMatMul", s8)):
        t = _time_us(sess, {"x": a})
        print(f"{name:<27} ({m}x{k})x({k}x{n}): {t:7.0f} us, {m * k * n / t / 1e3 / th:5.0f} GMAC/s per thread")
    return 0


if __name__ == "__main__":
    sys.exit(main())
