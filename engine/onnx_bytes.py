"""Tiny ONNX graphs written as protobuf bytes, so building one at run time needs no ``onnx``.

onnxruntime loads a serialized ``ModelProto`` from bytes. The engine builds two kinds of
one-node graph that way: the GEMM probes of the benchmark harness (``gemm_graph``) and the
int8 GEMM of the index search (``engine.index.qgemm``). Only the protobuf fields they use are
written: ``ModelProto{ir_version=1, graph=7, opset_import=8}``, ``GraphProto{node=1, name=2,
initializer=5, input=11, output=12}``, ``NodeProto{input=1, output=2, name=3, op_type=4}``,
``TensorProto{dims=1, data_type=2, name=8, raw_data=9}`` and ``ValueInfoProto{name=1,
type=2}`` with ``TypeProto.tensor_type{elem_type=1, shape=2}``, each dimension a value (``int``)
or a symbolic name (``str``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# TensorProto.DataType values
FLOAT, UINT8, INT8, INT32 = 1, 2, 3, 6


def _varint(n: int) -> bytes:
    """``n`` (>= 0) as a protobuf base-128 varint."""
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(number: int, value) -> bytes:
    """One protobuf field: an int (varint, wire type 0) or bytes / str (length-delimited, wire type 2)."""
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    data = value.encode() if isinstance(value, str) else value
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def value_info(name: str, elem_type: int, dims: Sequence[int | str]) -> bytes:
    """A graph input/output: ``dims`` holds sizes (int) or symbolic names (str, any size)."""
    shape = b"".join(field(1, field(1, d) if isinstance(d, int) else field(2, d)) for d in dims)
    return field(1, name) + field(2, field(1, field(1, elem_type) + field(2, shape)))


def tensor(name: str, array: np.ndarray, elem_type: int) -> bytes:
    """An initializer (a constant of the graph) holding ``array``'s bytes."""
    dims = b"".join(field(1, d) for d in array.shape)
    return dims + field(2, elem_type) + field(8, name) + field(9, np.ascontiguousarray(array).tobytes())


def node(op_type: str, inputs: Sequence[str], outputs: Sequence[str], name: str = "node") -> bytes:
    """A NodeProto: one ``op_type`` operator from the named ``inputs`` to the named ``outputs``."""
    return (
        b"".join(field(1, x) for x in inputs)
        + b"".join(field(2, y) for y in outputs)
        + field(3, name)
        + field(4, op_type)
    )


def model(
    nodes: Sequence[bytes],
    inputs: Sequence[bytes],
    outputs: Sequence[bytes],
    initializers: Sequence[bytes] = (),
    opset: int = 13,
    name: str = "graph",
) -> bytes:
    """A serialized ModelProto (ir_version 8, default domain at ``opset``)."""
    graph = (
        b"".join(field(1, n) for n in nodes)
        + field(2, name)
        + b"".join(field(5, t) for t in initializers)
        + b"".join(field(11, i) for i in inputs)
        + b"".join(field(12, o) for o in outputs)
    )
    return field(1, 8) + field(7, graph) + field(8, field(1, "") + field(2, opset))
