"""Which layers can int8 not carry? Quantize one weight product at a time and measure the damage.

For each encoder layer L, quantizes only the MatMul whose name matches ``--pattern`` with {L}
filled in (default: the FFN output product, where outlier activations live), leaves everything
else fp32, and reports the cosine of the model's vectors to fp32 on 80 STS-dev sentences and
20 SciFact docs. Layers far below the rest are the ones ModelSpec.int8_exclude keeps in fp32.

Texts from --data (default $EMBED_DATA_DIR, else ../shared/data beside the repository).

Run: .venv/bin/python bench/experiments/int8_sensitivity.py --model all-mpnet-base-v2 [--layers 12]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="all-mpnet-base-v2")
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--pattern", default=r"layer\.{L}/output/dense/MatMul$")
    ap.add_argument(
        "--data",
        type=Path,
        default=None,
        help="folder with scifact/ and stsb/sts-dev.csv (default $EMBED_DATA_DIR, else ../shared/data)",
    )
    args = ap.parse_args(argv)

    import numpy as np

    from engine import Embedder
    from engine.benchmark.data import data_dir
    from engine.eval.evaluate import load_beir, load_sts
    from engine.models.graph import cpu_graph
    from engine.models.quantize import quantize_int8
    from engine.runtime import Session

    data = args.data or data_dir()
    docs = load_beir(data / "scifact").doc_texts
    s1, s2, _ = load_sts(data / "stsb" / "sts-dev.csv")
    texts = [s for pair in zip(s1, s2) for s in pair][:80] + docs[:20]
    emb = Embedder(args.model, threads=2)
    emb.batch_workers = 1
    ref = emb.encode(texts)
    src = emb._exported.onnx_path
    with tempfile.TemporaryDirectory() as tmp:
        dst = Path(tmp) / "one.onnx"
        for layer in range(args.layers):
            only = args.pattern.replace("{L}", str(layer))
            quantize_int8(src, dst, config={"exclude": (rf"^(?!.*{only})",)})
            emb._session = Session(cpu_graph(dst), threads=2)
            cos = np.sum(ref * emb.encode(texts), axis=1)
            print(
                f"{args.model}: only layer {layer:2d} quantized ({only}): "
                f"cosine to fp32 mean {cos.mean():.5f} min {cos.min():.5f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
