"""The binary first stage alone: ``engine.kernels.binary.topk_hamming`` vs ``faiss.IndexBinaryFlat.search``.

Both get the same sign bits (ours: ``pack_signs``, FAISS: ``np.packbits(x > 0, axis=1)``) and
return the m = k * oversample best rows per query (m = 400: k = 10, the binary Index's default
oversample 40); query packing is inside each timed call. ``--before REV`` adds the kernel as it
was at a git revision (``git show REV:kernels/binary.py``, imported from a temporary folder), so
one run gives the before/after table.

Data: search_bench.py's clustered unit vectors (1000 centres, noise 0.08 per coordinate, queries
near corpus points), generated and packed in blocks. Timing: a warm-up call per contender, then
rounds in alternating order; per contender the best round, and per pair the median of the
per-round time ratios (robust to another process taking a core for a while). Results are
checked: ours must equal ``--before`` exactly (rows and scores), and FAISS's distances must
equal ours (its tie order among equal distances may differ).

Numba and faiss-cpu each bring their own libgomp, so two OpenMP thread pools share the cores;
with the default wait policy the pool that just ran keeps spinning and slows the other (at 100k
rows, nq = 256: FAISS 300 ms against 116 ms passive; one query: ours 7.8 ms, FAISS 25 ms,
against 0.5 ms each). ``OMP_WAIT_POLICY=passive`` is set for both unless ``--omp-wait-policy ''``.

Run: .venv/bin/python bench/experiments/hamming_scan.py [--n 1000000,100000] [--nq 1,8,16,64,256,1024]
     [--m 400] [--dim 384] [--rounds 7] [--before HEAD] [--out bench/experiments/results/hamming_scan.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numba
import numpy as np

from engine.benchmark.chip import chip_line, environment
from engine.kernels.binary import pack_signs, topk_hamming

ROOT = Path(__file__).resolve().parents[2]


def make_bits(n, d, nq, seed=0, block=100_000):
    """(our codes (n, words) uint64, FAISS bits (n, d / 8) uint8, queries (nq, d) float32)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((1000, d), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    codes = np.empty((n, -(-d // 64)), np.uint64)
    fbits = np.empty((n, -(-d // 8)), np.uint8)
    picks = rng.integers(0, n, nq)
    q = np.empty((nq, d), np.float32)
    for a in range(0, n, block):
        b = min(n, a + block)
        x = centres[rng.integers(0, 1000, b - a)] + 0.08 * rng.standard_normal((b - a, d), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        codes[a:b] = pack_signs(x)
        fbits[a:b] = np.packbits(x > 0, axis=1)
        sel = (picks >= a) & (picks < b)
        q[sel] = x[picks[sel] - a]
    q += 0.05 * rng.standard_normal(q.shape, dtype=np.float32)
    return codes, fbits, q / np.linalg.norm(q, axis=1, keepdims=True)


def load_before(rev: str):
    """(``topk_hamming`` from kernels/binary.py at git revision ``rev``, the commit's hash), or
    (None, None) when git cannot show it. Read-only git: ``rev-parse`` and ``show``."""
    try:
        git = lambda *a: subprocess.run(["git", *a], cwd=ROOT, check=True, capture_output=True, text=True).stdout
        commit = git("rev-parse", "--short", rev).strip()
        src = git("show", f"{commit}:kernels/binary.py")
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"--before {rev}: git failed ({e}); skipping", file=sys.stderr)
        return None, None
    folder = Path(tempfile.mkdtemp(prefix="hamming_before_"))
    path = folder / "binary_before.py"
    path.write_text(src.replace("from .topk import", "from engine.kernels.topk import"))
    spec = importlib.util.spec_from_file_location("binary_before", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.topk_hamming, commit


def faiss_contender(fbits, d, m):
    try:
        import faiss
    except ImportError:
        print("faiss not installed (pip install faiss-cpu): skipping it", file=sys.stderr)
        return None, None
    index = faiss.IndexBinaryFlat(d)
    index.add(fbits)
    return (lambda q: index.search(np.packbits(q > 0, axis=1), m)), faiss.__version__


def check(outs, d):
    """'ok' or what differs: ours vs before (exact), ours vs FAISS (scores = d - 2 * distance)."""
    s, i = outs["ours"]
    notes = []
    if "before" in outs and not (np.array_equal(outs["before"][0], s) and np.array_equal(outs["before"][1], i)):
        notes.append("ours != before")
    if "faiss" in outs and not np.array_equal(d - 2 * outs["faiss"][0].astype(np.int64), s):
        notes.append("scores != faiss")
    return "; ".join(notes) or "ok"


def time_nq(contenders, q, rounds):
    """Best and per-round times of every contender on queries q (alternating order)."""
    outs = {name: fn(q) for name, fn in contenders.items()}  # warm-up (compiles, thread pools)
    times = {name: [] for name in contenders}
    for r in range(rounds):
        for name in list(contenders) if r % 2 == 0 else list(reversed(contenders)):
            t = time.perf_counter()
            outs[name] = contenders[name](q)
            times[name].append(time.perf_counter() - t)
    return times, outs


def run_n(n, args, before):
    codes, fbits, q_all = make_bits(n, args.dim, max(args.nq))
    contenders = {"ours": lambda q: topk_hamming(codes, q, args.dim, args.m)}
    fs, faiss_ver = faiss_contender(fbits, args.dim, args.m)
    if fs:
        contenders["faiss"] = fs
    if before:
        contenders["before"] = lambda q: before(codes, q, args.dim, args.m)
    rows = []
    for nq in args.nq:
        q = np.ascontiguousarray(q_all[:nq])
        rounds = args.rounds if nq <= 64 else max(3, args.rounds // 2)
        times, outs = time_nq(contenders, q, rounds)
        row = {"n": n, "nq": nq, "rounds": rounds, "check": check(outs, args.dim)}
        for name, ts in times.items():
            row[f"{name}_ms"] = min(ts) * 1e3
            if name != "ours":
                row[f"{name}/ours"] = statistics.median(a / b for a, b in zip(ts, times["ours"]))
        rows.append(row)
        print(
            "  " + ", ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True
        )
    return rows, faiss_ver


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", default="1000000,100000")
    ap.add_argument("--nq", default="1,8,16,64,256,1024")
    ap.add_argument("--m", type=int, default=400, help="rows kept per query (k * oversample)")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--rounds", type=int, default=7, help="timed rounds for nq <= 64 (half, >= 3, above)")
    ap.add_argument("--before", default="HEAD", help="git revision of the kernel to compare ('' to skip)")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    ap.add_argument(
        "--omp-wait-policy",
        default="passive",
        help="OMP_WAIT_POLICY for both OpenMP runtimes ('' keeps the environment's)",
    )
    args = ap.parse_args(argv)
    if args.omp_wait_policy:  # read when each libgomp loads: numba's at its first parallel call, FAISS's at import
        os.environ["OMP_WAIT_POLICY"] = args.omp_wait_policy
    args.nq = [int(v) for v in args.nq.split(",")]
    env = environment()
    print(chip_line(env))
    load0 = os.getloadavg()
    print(
        f"numba threads {numba.get_num_threads()} ({numba.__version__}), "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}, load average {load0}"
    )
    before, commit = load_before(args.before) if args.before else (None, None)
    if before:
        print(f"before = kernels/binary.py at {args.before} ({commit})")
    rows, faiss_ver = [], None
    for n in (int(v) for v in args.n.split(",")):
        print(f"n={n}, dim={args.dim}, m={args.m}", flush=True)
        r, faiss_ver = run_n(n, args, before)
        rows += r
    names = [c for c in ("ours", "faiss", "before") if f"{c}_ms" in rows[0]]
    print(f"\nbest of rounds (ms); ratios = median of per-round ratios; load average {load0} -> {os.getloadavg()}")
    print("| n | nq | " + " | ".join(names) + " | " + " | ".join(f"{c}/ours" for c in names[1:]) + " | check |")
    print("|---" * (2 * len(names) + 2) + "|")
    for row in rows:
        print(
            f"| {row['n']:,} | {row['nq']} | "
            + " | ".join(f"{row[c + '_ms']:,.2f}" for c in names)
            + " | "
            + " | ".join(f"{row[c + '/ours']:.2f}x" for c in names[1:])
            + f" | {row['check']} |"
        )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        doc = {
            "cpu": chip_line(env),
            "environment": env,
            "faiss": faiss_ver,
            "numba": numba.__version__,
            "threads": numba.get_num_threads(),
            "load_average": [load0, os.getloadavg()],
            "before": commit,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "rows": rows,
        }
        Path(args.out).write_text(json.dumps(doc, indent=2))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
