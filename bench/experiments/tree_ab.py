"""Time one tree's engine: fp32 and onnxruntime int8 encode of SciFact docs / STS-dev sentences, best of rounds.

For before/after comparisons of a refactor, run it alternately from each tree (the old one through
PYTHONPATH, with engine/kernels and engine/models linked to its kernels/ and models/):
  git worktree add /tmp/before REV
  ln -s /tmp/before/kernels /tmp/before/engine/kernels; ln -s /tmp/before/models /tmp/before/engine/models
  cd /tmp && PYTHONPATH=/tmp/before /work/main/.venv/bin/python /work/main/bench/experiments/tree_ab.py old1.json
  cd /work/main && .venv/bin/python bench/experiments/tree_ab.py new1.json
Data: $EMBED_DATA_DIR, else shared/data beside the repository (read here directly: an old tree may lack
engine.benchmark.data).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def texts(data: Path, n_docs: int, n_sents: int) -> dict[str, list[str]]:
    docs: list[str] = []
    with open(data / "scifact" / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            docs.append(f"{d.get('title', '')} {d['text']}".strip())
            if len(docs) >= n_docs:
                break
    sents: list[str] = []
    with open(data / "stsb" / "sts-dev.csv", encoding="utf-8") as f:
        for line in f:
            cols = line.rstrip("\n").split("\t")
            sents += [cols[5], cols[6]]
    return {"docs": docs, "sents": sents[:n_sents]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--docs", type=int, default=300)
    ap.add_argument("--sents", type=int, default=1200)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    import engine
    from engine import Embedder

    data = Path(os.environ.get("EMBED_DATA_DIR") or Path(__file__).resolve().parents[3] / "shared" / "data")
    sets = texts(data, args.docs, args.sents)
    embs = {
        "fp32": Embedder("all-MiniLM-L6-v2", threads=2),
        "int8": Embedder("all-MiniLM-L6-v2", model_precision="int8", runtime="onnxruntime", threads=2),
    }
    for e in embs.values():  # warm-up: JIT, session arenas
        e.encode(sets["docs"][:32]), e.encode(sets["sents"][:128])
    best: dict[str, float] = {}
    for _ in range(args.rounds):
        for name, e in embs.items():
            for kind, batch in sets.items():
                t = time.perf_counter()
                e.encode(batch, batch_size=32)
                rate = len(batch) / (time.perf_counter() - t)
                best[f"{name} {kind}"] = max(best.get(f"{name} {kind}", 0.0), rate)
    args.out.write_text(json.dumps({"tree": engine.__file__, "per_s": best}, indent=1) + "\n")
    print(engine.__file__, {k: round(v, 1) for k, v in best.items()})


if __name__ == "__main__":
    main()
