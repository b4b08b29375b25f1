"""The engine (fp32 / bf16 / int8, per runtime) vs sentence-transformers' backends: speed and parity, one run.

Contenders: the engine in fp32 on onnxruntime and on OpenVINO, in bf16 (OpenVINO; only on a CPU
with bf16 units), in int8 on onnxruntime (dynamic) and on OpenVINO (static, NNCF at export);
sentence-transformers on torch fp32 (the reference), torch bf16 (only on a CPU with bf16 units:
elsewhere torch emulates bf16, slower than fp32), ``backend="onnx"`` and
``backend="openvino"`` (its default precision hint: bf16 on a CPU with bf16 units, f32 elsewhere).
The ST peers need the ``peers`` extra (optimum-intel[openvino]); ``--no-peers`` leaves them out,
``--no-st`` every sentence-transformers contender. Every contender's parity is its cosine to ST
torch fp32 on the same texts; engine contenders record the runtime they ran on.

Texts: the first 1,000 SciFact docs (title + " " + text) and 2,000 STS-dev sentences (sentence1 and
sentence2 of each row in turn), from --data (default $EMBED_DATA_DIR, else ../shared/data beside the
repository). Every contender runs with the same threads (2) and batch size (32). Each is warmed up
on one batch of docs and four of sentences; then ``engine.benchmark.measure.measure`` times them:
the contenders alternate round by round (forward, reversed, ...), each round encodes the docs, then
the sentences. Each contender keeps its best round; the report also gives each round's own ratio to
the reference (min / median / max over rounds), the figure least moved by a slow moment of the
machine. The machine is shared, so only the ratios within one run mean anything. The vectors of the
last round also give the quality gate's parity numbers (cosine of int8 to fp32, and of both to
sentence-transformers).

Distance to the limit: onnxruntime's fp32 and int8 GEMM rates on this machine
(``chip.gemm_peak``, measured before and after the contenders, the better of the two kept)
and each contender's achieved GFLOP/s (best tokens/s x ``chip.model_flops_per_token`` at the
set's mean length) as a fraction of the peak of its precision (int8 for engine int8, fp32 for the
others). The report names the chip (``environment``: CPU model, int8 ISA class, onnxruntime).

``--also-recipe rr`` adds the int8 export of another recipe (bench/recipe_override.py) as a contender.

Run: .venv/bin/python bench/int8_speed.py [--model all-MiniLM-L6-v2] [--rounds 3] [--also-recipe rr]
Writes bench/results/int8_speed_<model>.json.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

import numpy as np


def _engines(args) -> tuple[dict, dict]:
    """{name: Embedder} of the engine contenders, and {name: why} of those this machine cannot run."""
    from engine import Embedder
    from engine.runtime import BF16_CLASSES, cpu_class

    engines = {
        "engine fp32": Embedder(args.model, threads=args.threads),
        "engine int8": Embedder(args.model, model_precision="int8", threads=args.threads, runtime="onnxruntime"),
    }
    skipped = {}
    try:
        engines["engine fp32 openvino"] = Embedder(args.model, threads=args.threads, runtime="openvino")
        # OpenVINO static int8 (NNCF at export, calibrated on the engine's built-in texts)
        engines["engine int8 openvino"] = Embedder(
            args.model, model_precision="int8", threads=args.threads, runtime="openvino"
        )
        if cpu_class() in BF16_CLASSES:
            engines["engine bf16"] = Embedder(args.model, model_precision="bf16", threads=args.threads)
        else:
            skipped["engine bf16"] = f"no bf16 units (CPU class {cpu_class()})"
    except ImportError as e:
        skipped["engine openvino"] = str(e)
    if args.also_recipe:
        from recipe_override import int8_recipe_as

        with int8_recipe_as(args.also_recipe):
            engines[f"engine int8 {args.also_recipe}"] = Embedder(
                args.model, model_precision="int8", threads=args.threads, runtime="onnxruntime"
            )
    return engines, skipped


def _st_contenders(args, max_seq_length: int, skipped: dict) -> dict:
    """{name: encode function} of sentence-transformers on torch fp32 and (unless --no-peers) its other
    backends; a peer that cannot load here goes into ``skipped`` with the reason."""
    import torch
    from sentence_transformers import SentenceTransformer

    from engine.models.fetch import resolve
    from engine.runtime import BF16_CLASSES, cpu_class

    torch.set_num_threads(args.threads)
    folder = str(resolve(args.model).folder)

    def st_encode(model, batch_size=args.batch_size):
        model.max_seq_length = max_seq_length
        return lambda t: model.encode(t, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True)

    st = SentenceTransformer(folder, device="cpu")
    out = {"ST torch": st_encode(st)}
    if args.st_extra_batch:
        out[f"ST torch bs{args.st_extra_batch}"] = st_encode(st, args.st_extra_batch)
    if args.no_peers:
        return out
    peers = {"ST onnx": {"backend": "onnx"}, "ST openvino": {"backend": "openvino"}}
    if cpu_class() in BF16_CLASSES:
        peers["ST torch bf16"] = {"model_kwargs": {"torch_dtype": torch.bfloat16}}
    else:
        skipped["ST torch bf16"] = f"no bf16 units (CPU class {cpu_class()}): torch emulates bf16, slower than fp32"
    for name, kwargs in peers.items():
        try:
            out[name] = st_encode(SentenceTransformer(folder, device="cpu", **kwargs))
        except Exception as e:  # a missing extra (optimum-intel), an export failure: reported, not fatal
            skipped[name] = f"{type(e).__name__}: {e}"[:300]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="all-MiniLM-L6-v2")
    ap.add_argument("--docs", type=int, default=1000)
    ap.add_argument("--sents", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument(
        "--also-recipe",
        default=None,
        help="also time this int8 recipe (e.g. rr) in the same run (bench/recipe_override.py)",
    )
    ap.add_argument("--no-st", action="store_true", help="skip sentence-transformers (no torch)")
    ap.add_argument(
        "--no-peers", action="store_true", help="skip sentence-transformers' onnx / openvino backends and torch bf16"
    )
    ap.add_argument(
        "--st-extra-batch",
        type=int,
        default=None,
        help="also time sentence-transformers at this batch size (is a small batch its best too?)",
    )
    ap.add_argument(
        "--data",
        type=Path,
        default=None,
        help="folder with scifact/ and stsb/sts-dev.csv (default $EMBED_DATA_DIR, else ../shared/data)",
    )
    ap.add_argument("--out", default=None, help="JSON path (default bench/results/int8_speed_<model>.json)")
    args = ap.parse_args(argv)

    from engine.benchmark.chip import (
        chip_line,
        environment,
        gemm_peak,
        limit_fields,
        load_average,
        model_flops_per_token,
        transformer_shape,
    )
    from engine.benchmark.data import data_dir, scifact_sts_texts, token_count
    from engine.benchmark.measure import measure

    try:
        args.data = args.data or data_dir()
        sets = scifact_sts_texts(args.data, args.docs, args.sents)
    except FileNotFoundError as e:
        sys.exit(f"int8_speed: {e}; pass --data DIR")
    bs = args.batch_size
    engines, skipped = _engines(args)
    fp32, int8 = engines["engine fp32"], engines["engine int8"]
    contenders = {  # unit vectors, as the ST contender is asked for
        name: functools.partial(emb.encode, batch_size=bs, normalize_embeddings=True) for name, emb in engines.items()
    }
    if not args.no_st:
        contenders.update(_st_contenders(args, fp32.max_seq_length, skipped))

    for fn in contenders.values():  # warm-up: JIT, session arenas, torch kernels
        fn(sets["docs"][:bs]), fn(sets["sents"][: bs * 4])
    load_start = load_average()
    peaks = [gemm_peak(args.threads)]
    print(f"timing {len(contenders)} contenders x {args.rounds} rounds ...", flush=True)
    # one "batch" of measure() is one whole set; latencies_s holds every call, round by round
    ms = measure(contenders, list(sets.values()), repeats=args.rounds, warmup=0)
    peaks.append(gemm_peak(args.threads))
    peak = {**peaks[0], **{k: max(p[k] for p in peaks) for k in ("fp32_gflops", "int8_gops")}}
    peak["int8_over_fp32"] = round(peak["int8_gops"] / peak["fp32_gflops"], 2)
    peak["runs"] = peaks
    n_sets = len(sets)
    per_round = {
        c: {
            k: [len(texts) / m.latencies_s[r * n_sets + i] for r in range(args.rounds)]
            for i, (k, texts) in enumerate(sets.items())
        }
        for c, m in ms.items()
    }  # texts/s
    vecs = {c: {k: np.asarray(m.outputs[i], dtype=np.float32) for i, k in enumerate(sets)} for c, m in ms.items()}
    for r in range(args.rounds):
        for c in contenders:
            print(f"round {r}: {c} " + ", ".join(f"{k} {v[r]:.2f}/s" for k, v in per_round[c].items()))
    best = {c: {k: max(v) for k, v in rates.items()} for c, rates in per_round.items()}

    def cos(a, b):
        c = np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        return {"mean": round(float(c.mean()), 5), "min": round(float(c.min()), 5)}

    ref = "ST torch" if "ST torch" in contenders else "engine fp32"
    shape = transformer_shape(fp32)
    tokens = {k: token_count(fp32, texts) for k, texts in sets.items()}  # same truncation for every contender
    flops = {k: model_flops_per_token(fp32, tokens[k] / len(texts), shape) for k, texts in sets.items()}
    limit = {
        c: {
            k: limit_fields(best[c][k] * tokens[k] / len(texts), flops[k], "int8" if "int8" in c else "fp32", peak)
            for k, texts in sets.items()
        }
        for c in contenders
    }

    def paired(c, k):
        """Round-by-round ratio to the reference (both timed in the same round, back to back)."""
        r = np.array(per_round[c][k]) / np.array(per_round[ref][k])
        return {
            "min": round(float(r.min()), 2),
            "median": round(float(np.median(r)), 2),
            "max": round(float(r.max()), 2),
        }

    report = {
        "model": args.model,
        "threads": args.threads,
        "batch_size": bs,
        "rounds": args.rounds,
        "texts": {k: len(v) for k, v in sets.items()},
        "per_s": {c: {k: round(v, 2) for k, v in b.items()} for c, b in best.items()},
        "speedup_vs_" + ref: {c: {k: round(best[c][k] / best[ref][k], 2) for k in sets} for c in contenders},
        "paired_round_speedup_vs_" + ref: {c: {k: paired(c, k) for k in sets} for c in contenders if c != ref},
        "per_round_per_s": {c: {k: [round(x, 2) for x in v] for k, v in b.items()} for c, b in per_round.items()},
        "cos_int8_vs_fp32": {k: cos(vecs["engine int8"][k], vecs["engine fp32"][k]) for k in sets},
        "cos_vs_engine_fp32": {
            c: {k: cos(vecs[c][k], vecs["engine fp32"][k]) for k in sets} for c in contenders if c != "engine fp32"
        },
        "runtime": {name: emb.runtime for name, emb in engines.items()},
        "skipped": skipped,
        "int8_export": int8._exported.meta["export"].get("quantization"),
        "int8_isa": int8._exported.meta.get("int8_isa"),
        "gemm_peak": peak,
        "transformer": shape,
        "tokens": tokens,
        "flops_per_token": flops,
        "limit": limit,  # {contender: {set: {"gflops", "fraction_of_peak"}}}
    }
    if args.also_recipe:
        name = f"engine int8 {args.also_recipe}"
        report[f"cos_int8_{args.also_recipe}_vs_fp32"] = {k: cos(vecs[name][k], vecs["engine fp32"][k]) for k in sets}
        alt = engines[f"engine int8 {args.also_recipe}"]
        report[f"int8_export_{args.also_recipe}"] = alt._exported.meta["export"].get("quantization")
    if "ST torch" in contenders:
        report["cos_fp32_vs_st"] = {k: cos(vecs["engine fp32"][k], vecs["ST torch"][k]) for k in sets}
        report["cos_int8_vs_st"] = {k: cos(vecs["engine int8"][k], vecs["ST torch"][k]) for k in sets}
        report["cos_vs_st_torch_fp32"] = {
            c: {k: cos(vecs[c][k], vecs["ST torch"][k]) for k in sets} for c in contenders if c != "ST torch"
        }
    report["environment"] = environment()
    report["load_average_start_end"] = [load_start, report["environment"]["load_average"]]
    out = Path(args.out or Path(__file__).parent / "results" / f"int8_speed_{fp32.name}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k not in ("environment", "limit")}, indent=2))
    env = report["environment"]
    print(
        f"\n{chip_line(env)}\nGEMM peak ({args.threads} threads, "
        f"{'x'.join(map(str, peak['shape']))}): fp32 {peak['fp32_gflops']:.0f} GFLOP/s, "
        f"int8 {peak['int8_gops']:.0f} GOP/s; load average {load_start} -> {report['environment']['load_average']}"
    )
    for c in contenders:
        print(
            f"{c:<16} "
            + "   ".join(
                f"{k}: {v['gflops']:.1f} GFLOP/s = {100 * v['fraction_of_peak']:.1f}% of "
                f"{'int8' if 'int8' in c else 'fp32'} peak"
                if v["fraction_of_peak"] is not None
                else f"{k}: -"
                for k, v in limit[c].items()
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
