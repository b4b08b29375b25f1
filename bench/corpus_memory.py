"""Issue-6 check: ``embed encode`` memory does not grow with the corpus (10k vs 100k documents).

Synthesises corpora from SciFact (documents repeated with unique ids ``<_id>-<copy>``, text cut
to ``--max-chars`` so 100k documents finish in minutes on two cores), writes each to a temporary
jsonl, and runs ``embed_corpus`` on it in a fresh subprocess per size (--no-cache, default shard
size 10,000). The child reports its own peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``)
and the run summary. Before the corpus, each child embeds one batch of the largest possible
shape (batch_size x max_seq_length): onnxruntime's memory arena keeps the high-water mark of the
largest padded batch it has seen, which depends on the longest texts met (a bigger sample of
SciFact holds longer ones), not on the number of documents. Without this step MiniLM measured
437.6 MB at 2k docs (longest text 67 tokens) and 526.0 MB at 10k (74 tokens), shard size 1,000.
Pass when the largest run's peak is within ``--tolerance`` (20%) of the smallest's. Writes JSON.

    .venv/bin/python bench/corpus_memory.py [--sizes 10000,100000] [--model all-MiniLM-L6-v2]
        [--max-chars 120] [--data DIR] [--out bench/results/corpus_memory.json]

``--model`` accepts a sentence-transformers folder; ``--tiny`` builds the tests' tiny random BERT
(``tests.conftest.build_tiny_model`` in a child run from the repository root; hidden 32,
max_seq_length 16; export cached in the temporary folder) for a run that finishes on a busy
machine. The JSON records which model was used and the machine (``environment()``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from engine.benchmark.data import data_dir

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys
from engine.corpus import embed_corpus
from engine.embedder import Embedder
cfg = json.loads(sys.argv[1])
emb = Embedder(cfg["model"])
# onnxruntime's arena keeps the high-water mark of the largest padded batch; one batch of the
# largest possible shape (batch_size x max_seq_length) makes that the same in every run
emb.encode(["word " * emb.max_seq_length] * cfg["batch_size"], batch_size=cfg["batch_size"])
warm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
s = embed_corpus(cfg["src"], cfg["out"], emb, cache=False, shard_size=cfg["shard_size"],
                 batch_size=cfg["batch_size"], progress=cfg["progress"])
print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "rss_after_warmup_mb": warm, "summary": s.as_dict()}))
"""
# run with cwd = the repository root, so that the tests package is importable
BUILD_TINY = (
    "import sys, pathlib; from tests.conftest import build_tiny_model; build_tiny_model(pathlib.Path(sys.argv[1]))"
)


def scifact_corpus(arg: str | None) -> Path:
    """SciFact's corpus.jsonl under --data, else under the benchmark data folder (``data_dir``)."""
    path = (Path(arg) if arg else data_dir(must_exist=False)) / "scifact" / "corpus.jsonl"
    if not path.is_file():
        sys.exit(
            f"SciFact not found at {path}: pass --data DIR (a folder holding scifact/corpus.jsonl) "
            "or set EMBED_DATA_DIR"
        )
    return path


def synthesise(src: Path, n: int, max_chars: int, dest: Path) -> None:
    docs = [json.loads(line) for line in src.read_text(encoding="utf-8").splitlines() if line.strip()]
    with open(dest, "w", encoding="utf-8") as f:
        for k, d in enumerate(itertools.islice(itertools.cycle(docs), n)):
            copy = k // len(docs)
            f.write(
                json.dumps(
                    {"_id": f"{d['_id']}-{copy}", "title": d.get("title", "")[:60], "text": d["text"][:max_chars]}
                )
                + "\n"
            )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--model", default="all-MiniLM-L6-v2")
    ap.add_argument("--tiny", action="store_true", help="use the tests' tiny random model instead of --model")
    ap.add_argument("--max-chars", type=int, default=120)
    ap.add_argument("--shard-size", type=int, default=10_000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--tolerance", type=float, default=0.20)
    ap.add_argument(
        "--data", default=None, help="folder with scifact/corpus.jsonl (default $EMBED_DATA_DIR, else ../shared/data)"
    )
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "corpus_memory.json"))
    args = ap.parse_args()
    corpus = scifact_corpus(args.data)
    runs = []
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    with tempfile.TemporaryDirectory(prefix="corpus-memory-") as tmp:
        if args.tiny:
            args.model = str(Path(tmp) / "tiny-bert")
            subprocess.run([sys.executable, "-c", BUILD_TINY, args.model], cwd=REPO, env=env, check=True)
            env["EMBED_ENGINE_CACHE"] = str(Path(tmp) / "cache")  # keep the tiny export out of the user's cache
        # warm-up child: the first use of a model exports it (torch in memory); no measured run may pay that
        warm = Path(tmp) / "warm.jsonl"
        synthesise(corpus, 100, args.max_chars, warm)
        subprocess.run(
            [
                sys.executable,
                "-c",
                CHILD,
                json.dumps(
                    {
                        "src": str(warm),
                        "out": str(Path(tmp) / "out-warm"),
                        "model": args.model,
                        "shard_size": args.shard_size,
                        "batch_size": args.batch_size,
                        "progress": False,
                    }
                ),
            ],
            stdout=subprocess.DEVNULL,
            env=env,
            check=True,
        )
        for n in (int(x) for x in args.sizes.split(",")):
            src = Path(tmp) / f"corpus-{n}.jsonl"
            synthesise(corpus, n, args.max_chars, src)
            cfg = {
                "src": str(src),
                "out": str(Path(tmp) / f"out-{n}"),
                "model": args.model,
                "shard_size": args.shard_size,
                "batch_size": args.batch_size,
                "progress": args.progress,
            }
            t0 = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-c", CHILD, json.dumps(cfg)], stdout=subprocess.PIPE, text=True, env=env, check=False
            )
            if proc.returncode:
                sys.exit(f"run with {n} docs failed (exit {proc.returncode})")
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            res.update(docs=n, input_mb=src.stat().st_size / 2**20, wall_s=time.perf_counter() - t0)
            runs.append(res)
            s = res["summary"]
            print(
                f"{n:>8} docs  peak RSS {res['peak_rss_mb']:8.1f} MB (after warm-up "
                f"{res['rss_after_warmup_mb']:.1f})  input {res['input_mb']:6.1f} MB  "
                f"{s['seconds']:7.1f}s  {s['docs_per_s']:8.1f} docs/s  shards {s['shards']}"
            )
            src.unlink()
    lo, hi = min(r["peak_rss_mb"] for r in runs), max(r["peak_rss_mb"] for r in runs)
    growth = hi / lo - 1
    ok = growth <= args.tolerance
    print(f"peak RSS growth {growth:+.1%} (limit {args.tolerance:.0%}): {'PASS' if ok else 'FAIL'}")
    from engine.benchmark.chip import environment

    result = {
        "model": "tiny (tests/conftest.py)" if args.tiny else args.model,
        "max_chars": args.max_chars,
        "shard_size": args.shard_size,
        "cache": False,
        "runs": runs,
        "growth": growth,
        "tolerance": args.tolerance,
        "pass": ok,
        "environment": environment(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
