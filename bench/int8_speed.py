"""Engine int8 vs engine fp32 vs sentence-transformers (torch backend): speed and parity, one run.

Texts: the first 1,000 SciFact docs (title + " " + text) and 2,000 STS-dev sentences. Every
contender runs with the same threads (2) and batch size (32); each is warmed up, then the
contenders alternate round by round and each keeps its best round; the report also gives each
round's own ratio to the reference (min / median / max over rounds), the figure least moved by a
slow moment of the machine. The machine is shared, so only the ratios within one run mean anything. The vectors of the timed passes also give the
quality gate's parity numbers (cosine of int8 to fp32, and of both to sentence-transformers).

Run: .venv/bin/python bench/int8_speed.py [--model all-MiniLM-L6-v2] [--rounds 3]
Writes bench/results/int8_speed_<model>.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from int8_explore import read_sts_sentences  # noqa: E402
from scifact_ndcg import load_scifact  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="all-MiniLM-L6-v2")
    ap.add_argument("--docs", type=int, default=1000)
    ap.add_argument("--sents", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--no-st", action="store_true", help="skip sentence-transformers (no torch)")
    ap.add_argument("--st-extra-batch", type=int, default=None,
                    help="also time sentence-transformers at this batch size (is a small batch its best too?)")
    ap.add_argument("--out", default=None, help="JSON path (default bench/results/int8_speed_<model>.json)")
    args = ap.parse_args(argv)

    from engine import Embedder
    from engine.models.fetch import resolve

    _, docs, _, _, _ = load_scifact()
    sets = {"docs": docs[: args.docs], "sents": read_sts_sentences(args.sents)}
    bs = args.batch_size
    fp32 = Embedder(args.model, threads=args.threads)
    int8 = Embedder(args.model, precision="int8", threads=args.threads)
    contenders = {
        "engine fp32": lambda t: fp32.encode(t, batch_size=bs),
        "engine int8": lambda t: int8.encode(t, batch_size=bs),
    }
    if not args.no_st:
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(args.threads)
        folder = resolve(args.model).folder
        st = SentenceTransformer(str(folder), device="cpu")
        st.max_seq_length = fp32.max_seq_length
        contenders["ST torch"] = lambda t: st.encode(t, batch_size=bs, normalize_embeddings=True, convert_to_numpy=True)
        if args.st_extra_batch:
            xb = args.st_extra_batch
            contenders[f"ST torch bs{xb}"] = lambda t: st.encode(t, batch_size=xb, normalize_embeddings=True, convert_to_numpy=True)

    for fn in contenders.values():  # warm-up: JIT, session arenas, torch kernels
        fn(sets["docs"][:bs]), fn(sets["sents"][: bs * 4])
    per_round: dict[str, dict[str, list[float]]] = {c: {k: [] for k in sets} for c in contenders}  # texts/s
    vecs: dict[str, dict[str, np.ndarray]] = {c: {} for c in contenders}
    for r in range(args.rounds):
        order = list(contenders) if r % 2 == 0 else list(reversed(contenders))
        for c in order:
            for k, texts in sets.items():
                t = time.perf_counter()
                v = contenders[c](texts)
                dt = time.perf_counter() - t
                per_round[c][k].append(len(texts) / dt)
                vecs[c][k] = np.asarray(v, dtype=np.float32)
            print(f"round {r}: {c} " + ", ".join(f"{k} {v[-1]:.2f}/s" for k, v in per_round[c].items()), flush=True)
    best = {c: {k: max(v) for k, v in rates.items()} for c, rates in per_round.items()}

    def cos(a, b):
        c = np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        return {"mean": round(float(c.mean()), 5), "min": round(float(c.min()), 5)}

    ref = "ST torch" if "ST torch" in contenders else "engine fp32"

    def paired(c, k):
        """Round-by-round ratio to the reference (both timed in the same round, back to back)."""
        r = np.array(per_round[c][k]) / np.array(per_round[ref][k])
        return {"min": round(float(r.min()), 2), "median": round(float(np.median(r)), 2), "max": round(float(r.max()), 2)}

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
        "int8_export": int8._exported.meta["export"].get("quantization"),
    }
    if "ST torch" in contenders:
        report["cos_fp32_vs_st"] = {k: cos(vecs["engine fp32"][k], vecs["ST torch"][k]) for k in sets}
        report["cos_int8_vs_st"] = {k: cos(vecs["engine int8"][k], vecs["ST torch"][k]) for k in sets}
    out = Path(args.out or f"bench/results/int8_speed_{fp32.name}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
