"""Static (QDQ) int8 of an exported fp32 graph: the recipe int8_explore.py tried and rejected.

The library's int8 is onnxruntime's dynamic quantization (engine.models.quantize). This writes the
static alternative for comparison: QDQ format, u8 activations whose ranges are calibrated
(MinMax by default) on the parity check's eight texts tokenized with the model's tokenizer.json,
weights and GELU as the library's recipe sets them (s8 per channel, reduce_range off on VNNI
CPUs, tanh GELU). Result (int8_experiments.md): slower than dynamic int8 and clearly worse parity
(docs mean cosine 0.951 vs 0.995), so the library does not offer it.

Run: .venv/bin/python bench/experiments/int8_static_qdq.py SRC.onnx DST.onnx --tokenizer MODEL_FOLDER
         [--max-length 256] [--op-types MatMul,Attention] [--calibrate-method MinMax]
Prints the settings used as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace


def quantize_static_qdq(
    src: Path,
    dst: Path,
    tokenizer_folder: Path,
    max_length: int = 256,
    op_types: tuple[str, ...] = ("MatMul", "Attention"),
    calibrate_method: str = "MinMax",
) -> dict:
    """Write the static QDQ int8 version of ``src`` to ``dst``; return the settings used."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from engine.models.graph import approximate_gelu
    from engine.models.quantize import (
        _CALIBRATION,
        DEFAULT_INT8,
        INT8_RECIPES,
        _calibration_feeds,
        cpu_isa,
        int8_recipe,
    )

    feeds = _calibration_feeds(tokenizer_folder, SimpleNamespace(max_seq_length=max_length), _CALIBRATION)
    if feeds is None:
        raise SystemExit(f"int8_static_qdq: no tokenizer.json in {tokenizer_folder} (needed to calibrate)")
    names = {i.name for i in onnx.load(str(src), load_external_data=False).graph.input}
    reduce_range = INT8_RECIPES[int8_recipe()]["reduce_range"]  # the library's choice for this CPU

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter([{k: v for k, v in feed.items() if k in names} for feed in feeds])

        def get_next(self):
            return next(self._it, None)

    with tempfile.TemporaryDirectory(prefix="qdq-") as tmp:
        # symbolic shape inference types the fused contrib ops' outputs; without it QDQ skips them
        typed = Path(tmp) / "typed.onnx"
        quant_pre_process(str(src), str(typed), skip_optimization=True, auto_merge=True)
        quantize_static(
            str(typed),
            str(dst),
            Reader(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(op_types),
            per_channel=True,
            reduce_range=reduce_range,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=getattr(CalibrationMethod, calibrate_method),
            extra_options=dict(DEFAULT_INT8["extra_options"]),
        )
    model = onnx.load(str(dst))
    gelu_nodes = approximate_gelu(model)
    onnx.save(model, str(dst))
    return {
        "method": "static",
        "op_types": list(op_types),
        "weight_type": "QInt8",
        "per_channel": True,
        "reduce_range": reduce_range,
        "activation_type": "QUInt8",
        "calibration_texts": len(feeds),
        "calibrate_method": calibrate_method,
        "cpu_isa": cpu_isa(),
        "gelu": "tanh",
        "gelu_nodes": gelu_nodes,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", type=Path, help="fp32 ONNX graph (e.g. the engine's fused export)")
    ap.add_argument("dst", type=Path, help="where to write the int8 QDQ graph")
    ap.add_argument("--tokenizer", type=Path, required=True, help="model folder holding tokenizer.json")
    ap.add_argument("--max-length", type=int, default=256, help="truncation of the calibration texts")
    ap.add_argument("--op-types", default="MatMul,Attention")
    ap.add_argument("--calibrate-method", default="MinMax", choices=["MinMax", "Entropy", "Percentile", "Distribution"])
    args = ap.parse_args(argv)
    settings = quantize_static_qdq(
        args.src,
        args.dst,
        args.tokenizer,
        args.max_length,
        tuple(filter(None, args.op_types.split(","))),
        args.calibrate_method,
    )
    print(json.dumps(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
