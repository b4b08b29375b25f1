"""Every per-ISA figure of issue 19 in one command, for a machine whose kind has no row yet.

    .venv/bin/python bench/isa_report.py [--out DIR] [--skip quality,speed,search,threshold,profile,scan] [--quick]

Runs the bench scripts behind the per-ISA tables one after the other (never side by side: each one
times something) and keeps their JSON and logs in one folder, default
``bench/results/isa/<int8 ISA class>_<YYYY-MM-DD>/`` (``<class>-emulated_...`` under
bench/isa_emulation/run.py, which runs it as on an AVX2 / AVX-VNNI / AVX-512-without-VNNI CPU):

=========  ==================================================================  ==========
step       command                                                             ~minutes*
=========  ==================================================================  ==========
quality    ``int8_quality.py`` with this CPU's recipe, then with the other     8
           recipe (on AVX2 ``vnni``'s products saturate: how much it costs,
           or the export gate's refusal, is the finding)
speed      ``int8_speed.py --rounds 3 --also-recipe <other>``: engine fp32,     8
           int8 (both recipes) vs sentence-transformers, 1,000 SciFact docs
           and 2,000 STS-dev sentences, plus the GEMM peak
search     ``search_bench.py`` 1M x 384, nq 1 ... 1024: int8 vs fp32 vs FAISS     8
threshold  ``experiments/int8_gemm_threshold.py``: from how many queries the  1
           blocked int8 GEMM beats the scan here (``GEMM_MIN_QUERIES_BY_ISA``)
profile    ``experiments/int8_profile.py --runtime-graph --threads 1`` on a     1
           docs batch and on a sentence batch: where the time goes per op
scan       ``experiments/int8_scan_dot.py``: the one-query int8 scans           1
=========  ==================================================================  ==========

(*on a 2-core machine; ``--quick`` cuts texts and rounds to about a third, for a trial.)

``summary.json`` holds each step's command, exit status and seconds and the figures the issue's
targets name (int8 and fp32 x sentence-transformers, int8 / fp32 index per nq, quality ratios),
next to ``environment()`` (CPU model, flags, ISA class, recipe, onnxruntime). A failed step is
recorded and the next one runs. The tables in bench/experiments/int8_experiments.md ("Recipes per
ISA", "Quality per ISA", "int8 search") get their new rows from this folder.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
STEPS = ("quality", "speed", "search", "threshold", "profile", "scan")


def _figures(step: str, out: Path) -> dict:
    """The target-relevant figures of one step's JSON files (empty when a file is missing)."""

    def load(name):
        p = out / name
        return json.loads(p.read_text()) if p.is_file() else None

    if step == "quality":
        keep = (
            "int8_recipe",
            "ndcg_ratio",
            "cosine_docs_mean",
            "cosine_docs_min",
            "cosine_sents_mean",
            "cosine_sents_min",
            "targets",
        )
        return {
            name: {k: d.get(k) for k in keep}
            for name in ("quality_own.json", "quality_other.json")
            if (d := load(name))
        }
    if step == "speed" and (d := load("speed.json")):
        ref = next(k for k in d if k.startswith("speedup_vs_"))
        return {
            "best_round": d[ref],
            "paired_rounds": d.get(next(k for k in d if k.startswith("paired_round"))),
            "gemm_peak": {k: d["gemm_peak"][k] for k in ("fp32_gflops", "int8_gops")},
            "limit": d.get("limit"),
        }
    if step == "threshold" and (d := load("gemm_threshold.json")):
        return {"gemm_wins_from": d["gemm_wins_from"], "rows": d["rows"]}
    if step == "search" and (d := load("search.json")):
        return {"ratios": d.get("ratios"), "targets": d.get("targets")}
    return {}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--skip", default="", help=f"comma-separated steps to skip, of {','.join(STEPS)}")
    ap.add_argument("--quick", action="store_true", help="fewer texts and rounds (a trial, not a table row)")
    ap.add_argument("--data", type=Path, default=None, help="folder with scifact/ and stsb/ (scripts' default)")
    args = ap.parse_args(argv)

    from engine.benchmark.chip import environment

    env = environment()
    isa, own = env["int8_isa"], env["int8_recipe"]
    other = "rr" if own != "rr" else "vnni"
    skip = {s for s in args.skip.split(",") if s}
    if skip - set(STEPS):
        ap.error(f"unknown steps {sorted(skip - set(STEPS))}; steps are {', '.join(STEPS)}")
    kind = f"{isa}-emulated" if env.get("isa_emulation") else isa  # bench/isa_emulation/run.py
    out = args.out or BENCH / "results" / "isa" / f"{kind}_{datetime.date.today().isoformat()}"
    out.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    data = ["--data", str(args.data)] if args.data else []
    q = args.quick
    speed_texts = ["--docs", "100", "--sents", "500", "--rounds", "2"] if q else ["--rounds", "3"]
    search_size = (
        ["--n", "200000", "--rounds", "3", "--rounds-large", "1"]
        if q
        else ["--n", "1000000", "--rounds", "5", "--rounds-large", "3"]
    )
    commands = {
        "quality": [
            [py, BENCH / "int8_quality.py", *data, "--out", out / "quality_own.json"],
            [py, BENCH / "int8_quality.py", *data, "--recipe", other, "--out", out / "quality_other.json"],
        ],
        "speed": [
            [py, BENCH / "int8_speed.py", *data, *speed_texts, "--also-recipe", other, "--out", out / "speed.json"]
        ],
        "search": [
            [
                py,
                BENCH / "search_bench.py",
                *search_size,
                "--dim",
                "384",
                "--nq",
                "1,4,16,64,256,1024",
                "-k",
                "10",
                "--skip",
                "numpy",
                "--out",
                out / "search.json",
            ]
        ],
        "threshold": [
            [
                py,
                BENCH / "experiments" / "int8_gemm_threshold.py",
                "--rounds",
                "3" if q else "5",
                "--out",
                out / "gemm_threshold.json",
            ]
            + (["--n", "200000"] if q else [])
        ],
        "profile": [
            [
                py,
                BENCH / "experiments" / "int8_profile.py",
                *data,
                "--runtime-graph",
                "--threads",
                "1",
                "--runs",
                "5" if q else "20",
                "--texts",
                texts,
            ]
            for texts in ("docs", "sents")
        ],
        "scan": [
            [py, BENCH / "experiments" / "int8_scan_dot.py", "--rounds", "3" if q else "7"]
            + (["--n", "200000"] if q else [])
        ],
    }
    summary = {
        "isa": isa,
        "recipe": own,
        "other_recipe": other,
        "quick": q,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "steps": {},
        "environment": env,
    }
    for step in STEPS:
        if step in skip:
            continue
        runs = []
        for i, cmd in enumerate(commands[step]):
            cmd = [str(c) for c in cmd]
            log = out / f"{step}{i if len(commands[step]) > 1 else ''}.log"
            print(f"[{step}] {' '.join(cmd)}  (log: {log})", flush=True)
            t = time.perf_counter()
            with open(log, "w") as fh:
                rc = subprocess.call(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=BENCH.parent)
            runs.append(
                {"command": " ".join(cmd), "exit": rc, "seconds": round(time.perf_counter() - t, 1), "log": log.name}
            )
            if rc:
                print(f"[{step}] exited {rc}; see {log}", flush=True)
        summary["steps"][step] = {"runs": runs, "figures": _figures(step, out)}
        (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(f"wrote {out / 'summary.json'}")
    return 0 if all(r["exit"] == 0 for s in summary["steps"].values() for r in s["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
