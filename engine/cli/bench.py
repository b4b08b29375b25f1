"""``embed bench``: latency and throughput over batch sizes and text lengths, CPU vs GPU,
side by side with sentence-transformers; writes JSON, CSV and PNG plots. ``--compare OLD`` puts
this run (or a saved one, ``--input``) beside an earlier one, cell by cell.

The harness (``engine.benchmark``) is imported when the command runs, not when the CLI loads.
"""

from __future__ import annotations

import sys

QUICK = {"batch_sizes": "1,8,32", "lengths": "short,medium", "n_texts": 64, "repeats": 2}


def register(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="latency/throughput grid vs sentence-transformers; writes JSON, CSV, PNG",
        description="Time the engine over model x precision x device x length bucket x batch size, "
        "with sentence-transformers (torch and onnx backends) timed on the same texts in the same run.",
    )
    p.add_argument(
        "--model",
        action="append",
        default=None,
        help="model name or folder; repeatable or comma list (default all-MiniLM-L6-v2)",
    )
    p.add_argument(
        "--model-precisions",
        "--precision",
        dest="precision",
        default="fp32",
        help="comma list of fp32,bf16,int8,fp16 (default fp32; --precision is the former name)",
    )
    p.add_argument(
        "--device",
        default="cpu,cuda",
        help="comma list of cpu,cuda (default both; cuda is skipped with the reason when unavailable)",
    )
    p.add_argument("--batch-sizes", default=None, help="comma list (default 1,2,4,8,16,32,64,128,256)")
    p.add_argument("--lengths", default=None, help="comma list of short (~16 tokens), medium (~64), long (~256)")
    p.add_argument(
        "--corpus",
        default=None,
        help="a .jsonl (title/text) or text file (one doc per line) to cut texts from "
        "(default: the built-in sample corpus)",
    )
    p.add_argument("--n-texts", type=int, default=None, help="texts per cell (default 256)")
    p.add_argument("--repeats", type=int, default=None, help="timed passes per contender and cell (default 3)")
    p.add_argument("--threads", type=int, default=None, help="threads for every contender (default physical cores)")
    p.add_argument(
        "--baselines",
        default="st-torch,st-onnx,st-openvino",
        help="comma list of st-torch, st-onnx, st-openvino (the peers extra), st-torch-bf16, or none "
        "(default st-torch,st-onnx,st-openvino; one that cannot load is skipped with the reason)",
    )
    p.add_argument(
        "--out", default=None, help="output folder (default bench/results/<timestamp> or ./bench-results/<timestamp>)"
    )
    p.add_argument(
        "--cache-dir", default=None, help="engine cache (default $EMBED_ENGINE_CACHE or ~/.cache/embed-engine)"
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a small grid for a first look: batch sizes 1,8,32, short and medium texts, "
        "64 texts, 2 repeats (explicit flags win)",
    )
    p.add_argument("--no-plots", action="store_true", help="write JSON and CSV only")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument(
        "--compare",
        metavar="OLD",
        default=None,
        help="an earlier run's results.json (or its folder): after this run, print per cell the old "
        "and new texts/s and the change in percent, and both runs' CPUs",
    )
    p.add_argument(
        "--input",
        metavar="RUN",
        default=None,
        help="use a saved run's results.json (or its folder) instead of running the grid: "
        "print its table, or with --compare, compare it to OLD; nothing is timed",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="with --compare: compare runs whose model fingerprints differ (refused otherwise)",
    )
    p.set_defaults(func=cmd_bench)


def _ints(text: str, flag: str) -> tuple[int, ...]:
    from ..benchmark.grid import parse_list
    from ..errors import InputError

    try:
        return tuple(int(x) for x in parse_list(text))
    except ValueError:
        raise InputError(f"{flag} takes a comma list of integers, e.g. 1,8,32; got {text!r}") from None


def config_from_args(args):
    """A BenchConfig from parsed arguments (--quick fills what was not given)."""
    from ..benchmark.grid import DEFAULT_BATCH_SIZES, BenchConfig, parse_list
    from ..models import DEFAULT_MODEL

    quick = QUICK if args.quick else {}
    batch = args.batch_sizes or quick.get("batch_sizes")
    lengths = args.lengths or quick.get("lengths") or "short,medium,long"
    baselines = [] if args.baselines.strip().lower() == "none" else parse_list(args.baselines)
    return BenchConfig(
        models=tuple(parse_list(args.model) or [DEFAULT_MODEL]),
        precisions=tuple(parse_list(args.precision)),
        devices=tuple(parse_list(args.device)),
        batch_sizes=_ints(batch, "--batch-sizes") if batch else DEFAULT_BATCH_SIZES,
        lengths=tuple(parse_list(lengths)),
        n_texts=args.n_texts or quick.get("n_texts", 256),
        repeats=args.repeats or quick.get("repeats", 3),
        baselines=tuple(baselines),
        threads=args.threads,
        corpus=args.corpus,
        cache_dir=args.cache_dir,
    )


def cmd_bench(args) -> int:
    from pathlib import Path

    from ..benchmark.grid import run_grid
    from ..benchmark.results import (
        best_batch_sizes,
        compare_results,
        default_out_dir,
        format_comparison,
        format_table,
        load_results,
        write_results,
    )

    baseline = load_results(args.compare) if args.compare else None  # a bad OLD fails before the run
    if args.input:
        result = load_results(args.input)
        if baseline is None:
            print(format_table(result))
    else:
        config = config_from_args(args)
        config.validate()
        out = Path(args.out) if args.out else default_out_dir()
        result = run_grid(config, progress=not args.no_progress)
        paths = write_results(result, out, plots=not args.no_plots)
        print(format_table(result))
        for (model, device, precision, length), bs in best_batch_sizes(result).items():
            print(f"best batch size  {model} {device} {precision} {length}: {bs}")
        print(f"\nwrote {paths['json']}\n      {paths['csv']}")
        for p in paths["plots"]:
            print(f"      {p}")
        if "plot_error" in paths:
            print(f"plots skipped: {paths['plot_error']}", file=sys.stderr)
    if baseline is not None:
        new = args.input or "this run"
        print(f"\ncomparing {args.compare} (old) with {new} (new)")
        print(format_comparison(compare_results(baseline, result, force=args.force)))
    return 0
