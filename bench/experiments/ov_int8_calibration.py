"""Does OpenVINO static int8 (NNCF) keep its quality when calibrated on the engine's built-in texts?

The engine's int8 on OpenVINO is quantized at export time, where no user data is at hand: it must
calibrate on texts it ships. This compares, on held-out SciFact docs and STS-dev sentences, the
cosine to the engine's fp32 of NNCF int8 calibrated (a) on the built-in texts (the demo corpus,
long concatenations of it, the int8/bf16 gates' calibration sentences) and (b) on 400 other
SciFact/STS texts (bench/int8_speed.py's peer), and the engine's onnxruntime dynamic int8.

Run: .venv/bin/python bench/experiments/ov_int8_calibration.py [--docs 300 --sents 1000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def nncf_int8(model_name: str, fp32, texts: list[str], threads: int):
    """The engine's pipeline on the fp32 CPU graph quantized by NNCF, calibrated on ``texts``."""
    import nncf
    import openvino as ov

    from engine import Embedder
    from engine.runtime import OpenVINOSession

    model = ov.Core().read_model(str(fp32._exported.graph_path("cpu")))
    names = [i.get_any_name() for i in model.inputs]
    samples = []
    for ids in fp32.tokenize(texts):
        ids = ids[None].astype(np.int64)
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        samples.append({k: v for k, v in feed.items() if k in names})
    t0 = time.perf_counter()
    q = nncf.quantize(model, nncf.Dataset(samples), model_type=nncf.ModelType.TRANSFORMER, subset_size=len(samples))
    took = time.perf_counter() - t0
    path = Path(tempfile.mkdtemp(prefix="ov-int8-")) / "model.xml"
    ov.save_model(q, str(path))
    emb = Embedder(model_name, threads=threads, runtime="openvino")
    emb._session, emb._single = OpenVINOSession(path, threads=threads), None
    return emb, took


def cosines(a: np.ndarray, b: np.ndarray) -> dict:
    c = np.sum(a * b, axis=1)
    return {"mean": round(float(c.mean()), 5), "min": round(float(c.min()), 5)}


def main() -> None:
    from engine import Embedder
    from engine.benchmark.data import data_dir, scifact_sts_texts
    from engine.models.openvino_int8 import calibration_texts

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="all-MiniLM-L6-v2")
    ap.add_argument("--docs", type=int, default=300)
    ap.add_argument("--sents", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    sets = scifact_sts_texts(data_dir(), args.docs + 200, args.sents + 200)
    held = {"docs": sets["docs"][: args.docs], "sents": sets["sents"][: args.sents]}
    other = sets["docs"][args.docs :] + sets["sents"][args.sents :]
    fp32 = Embedder(args.model, threads=args.threads)
    ref = {k: fp32.encode(v, normalize_embeddings=True) for k, v in held.items()}
    result = {"model": args.model, "held_out": {k: len(v) for k, v in held.items()}, "contenders": {}}
    int8 = Embedder(args.model, model_precision="int8", threads=args.threads, runtime="onnxruntime")
    result["contenders"]["onnxruntime dynamic int8"] = {
        k: cosines(int8.encode(v, normalize_embeddings=True), ref[k]) for k, v in held.items()
    }
    builtin = calibration_texts()  # what the engine's own int8 export on OpenVINO calibrates on
    for name, calib in (("nncf, built-in texts", builtin), ("nncf, 400 SciFact/STS texts", other)):
        emb, took = nncf_int8(args.model, fp32, calib, args.threads)
        row = {k: cosines(emb.encode(v, normalize_embeddings=True), ref[k]) for k, v in held.items()}
        result["contenders"][name] = {**row, "calibration_texts": len(calib), "quantize_s": round(took, 1)}
        print(name, row, f"{len(calib)} texts, {took:.1f} s")
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
