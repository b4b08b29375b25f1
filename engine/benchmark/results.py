"""A results document out and back: JSON, CSV and plots, printed tables, and two runs compared.

A results document is what ``run_grid`` returns; its JSON schema (``SCHEMA``) is described in
bench/README.md#result-schema. ``write_results`` writes it as results.json, results.csv and PNG
plots; ``format_table`` prints it short; ``load_results`` reads one back, and
``compare_results`` / ``format_comparison`` put two runs side by side per cell
(``embed bench --compare OLD``). matplotlib is imported only to draw the plots.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import statistics
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError

SCHEMA = "embed-engine.bench/1"


def short_name(model: str) -> str:
    """A model's name for tables: the folder name of a path, else the name as given."""
    return Path(model).name if os.sep in model else model


CSV_FIELDS = (
    "model",
    "device",
    "length",
    "batch_size",
    "contender",
    "precision",
    "runtime",
    "n_texts",
    "n_batches",
    "repeats",
    "tokens",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "mean_ms",
    "texts_per_s",
    "texts_per_s_median",
    "tokens_per_s",
    "wall_s",
    "peak_rss_mb",
    "threads",
    "speedup_vs_st_torch",
    "min_cosine_vs_st_torch",
    "gflops",
    "fraction_of_peak",
)


def csv_rows(result: dict) -> list[dict]:
    """The rows flattened for CSV (latency_ms.* -> *_ms, threads as JSON)."""
    out = []
    for r in result["rows"]:
        flat = {k: r.get(k) for k in CSV_FIELDS}
        for p in ("p50", "p95", "p99", "mean"):
            flat[f"{p}_ms"] = r["latency_ms"][p]
        flat["threads"] = json.dumps(r["threads"], sort_keys=True)
        out.append(flat)
    return out


def write_results(result: dict, out_dir: str | os.PathLike, plots: bool = True) -> dict[str, Any]:
    """Write a results document as results.json, results.csv and PNG plots.

    Args:
        result: a results document (``run_grid``).
        out_dir: the folder to write into (created when missing).
        plots: also draw the PNG plots (``engine.benchmark.plot``), when matplotlib is installed.

    Returns:
        ``{"json": path, "csv": path, "plots": [paths]}``, plus ``"plot_error"`` (the message)
        when the plots were asked for but matplotlib is missing.
    """
    import csv

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Any] = {"json": out / "results.json", "csv": out / "results.csv", "plots": []}
    paths["json"].write_text(json.dumps(result, indent=2, default=_json_default) + "\n")
    with paths["csv"].open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        w.writeheader()
        w.writerows(csv_rows(result))
    if plots and result["rows"]:
        try:
            from .plot import plot_results
        except ImportError as e:
            paths["plot_error"] = str(e)
        else:
            paths["plots"] = plot_results(result, out)
    return paths


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def format_table(result: dict) -> str:
    """A short fixed-width table of the rows, grouped by model, device and length."""
    head = (
        f"{'model':<18} {'dev':<4} {'length':<6} {'bs':>4} {'contender':<13} {'p50 ms':>9} {'p95 ms':>9} "
        f"{'texts/s':>9} {'tokens/s':>10} {'x st-torch':>10} {'GFLOP/s':>8} {'of peak':>7}"
    )
    lines = [head, "-" * len(head)]
    for r in result["rows"]:
        sp = r["speedup_vs_st_torch"]
        gf, frac = r.get("gflops"), r.get("fraction_of_peak")
        lines.append(
            f"{short_name(r['model'])[:18]:<18} {r['device'][:4]:<4} {r['length']:<6} {r['batch_size']:>4} "
            f"{r['label'][:13]:<13} {r['latency_ms']['p50']:>9.2f} {r['latency_ms']['p95']:>9.2f} "
            f"{r['texts_per_s']:>9.1f} {r['tokens_per_s']:>10,.0f} {(f'{sp:.2f}x') if sp else '-':>10} "
            f"{(f'{gf:.1f}') if gf is not None else '-':>8} {('%.1f%%' % (100 * frac)) if frac is not None else '-':>7}"
        )
    lines.append(_chip_and_peak(result))
    for s in result["skipped"]:
        lines.append(
            f"skipped: {short_name(s['model'])} {s['device']} {s['contender']} {s['precision']}: {s['reason']}"
        )
    return "\n".join(lines)


def _chip_and_peak(result: dict) -> str:
    """One line naming the chip, its int8 ISA class and the GEMM peaks measured in the run."""
    env = result.get("environment") or {}
    cpu = env.get("cpu") or {}
    peak = result.get("gemm_peak")
    rates = (
        (
            f"fp32 GEMM {peak['fp32_gflops']:.0f} GFLOP/s, int8 GEMM {peak['int8_gops']:.0f} GOP/s "
            f"({peak['threads']} threads, {'x'.join(map(str, peak['shape']))})"
        )
        if peak
        else "no GEMM peak measured"
    )
    return (
        f"chip: {cpu.get('model', 'unknown')}, int8 ISA class {env.get('int8_isa', 'unknown')}, "
        f"onnxruntime {env.get('onnxruntime', '-')}; peak: {rates}"
    )


def best_batch_sizes(result: dict, contender: str = "engine") -> dict[tuple, int]:
    """(model, device, precision, length) -> the batch size with the highest texts/s."""
    best: dict[tuple, tuple[float, int]] = {}
    for r in result["rows"]:
        if r["contender"] != contender:
            continue
        key = (r["model"], r["device"], r["precision"], r["length"])
        if key not in best or r["texts_per_s"] > best[key][0]:
            best[key] = (r["texts_per_s"], r["batch_size"])
    return {k: v[1] for k, v in best.items()}


# -- comparing runs --------------------------------------------------------------------------
# a cell of the grid: rows of two runs with the same values here are compared
CELL_KEYS = ("model", "device", "length", "batch_size", "contender", "precision")
# config keys that change what a cell measures; a difference is reported next to the comparison
_CONFIG_KEYS = ("n_texts", "repeats", "corpus")


def load_results(path: str | os.PathLike) -> dict:
    """Read back a results document written by ``write_results``.

    Args:
        path: its results.json, or the folder holding it.

    Returns:
        The document.

    Raises:
        InputError: the file is missing, is not JSON, is not of this ``SCHEMA`` or has malformed
            rows; the message names the file.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / "results.json"
    if not p.is_file():
        raise InputError(f"{p} does not exist; give the results.json of an `embed bench` run or its folder")
    try:
        doc = json.loads(p.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{p} is not JSON ({e}); give the results.json of an `embed bench` run") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        got = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
        raise InputError(f"{p} is not an `embed bench` results file (schema {got!r}, expected {SCHEMA!r})")
    _check_rows(doc, str(p))
    return doc


def _check_rows(doc: dict, name: str) -> None:
    rows = doc.get("rows")
    if not isinstance(rows, list):
        raise InputError(f"{name}: results have no 'rows' list")
    for i, r in enumerate(rows):
        missing = [k for k in (*CELL_KEYS, "texts_per_s") if not isinstance(r, dict) or k not in r]
        if missing:
            raise InputError(f"{name}: row {i} lacks {', '.join(missing)}")


def _cpu_of(doc: dict) -> dict:
    cpu = (doc.get("environment") or {}).get("cpu") or {}
    return {
        "model": cpu.get("model") or "unknown",
        "flags": sorted(f for f, on in (cpu.get("flags") or {}).items() if on),
    }


def compare_results(old: dict, new: dict, *, force: bool = False) -> dict:
    """Two results documents side by side, cell by cell.

    A cell is (model, device, length, batch_size, contender, precision); for each, the old and
    new texts/s (best pass) and ``change_pct = 100 * (new / old - 1)``. Cells found in one run
    only are kept with ``only`` = "old" or "new". Both runs' CPU model and ISA flags (and GPU
    names) come from their environment blocks; when they differ a warning says so, because a
    ratio across chips is not a speed change; so does a different thread count. Differences in
    texts per cell, repeats, corpus and library versions are reported as notes.

    Args:
        old: the earlier run's document.
        new: the later run's document.
        force: compare runs of different model exports anyway (a warning instead of an error).

    Returns:
        ``{"cells": [{model, device, length, batch_size, contender, precision, "old", "new",
        "change_pct", "only"}], "fingerprints": [{"model", "precision", "old", "new", "same"}],
        "cpu": {"old", "new", "same"}, "gpu": {"old", "new", "same"}, "created": {"old", "new"},
        "warnings": [str], "notes": [str]}``; cells in the new run's row order, then old-only ones.

    Raises:
        InputError: a model present in both runs has a different fingerprint for the same
            precision (other weights or export settings: the vectors, hence the work, differ),
            unless ``force``; or a document's rows are malformed.
    """
    _check_rows(old, "old run")
    _check_rows(new, "new run")
    warnings: list[str] = []
    notes: list[str] = []

    fingerprints = []
    for model, info in (new.get("models") or {}).items():
        old_fp = ((old.get("models") or {}).get(model) or {}).get("fingerprints") or {}
        for prec, fp in (info.get("fingerprints") or {}).items():
            if prec in old_fp:
                fingerprints.append(
                    {"model": model, "precision": prec, "old": old_fp[prec], "new": fp, "same": old_fp[prec] == fp}
                )
    differ = [f for f in fingerprints if not f["same"]]
    if differ:
        what = "; ".join(f"{f['model']} {f['precision']}: old {f['old']}, new {f['new']}" for f in differ)
        msg = (
            f"the runs benchmarked different model exports ({what}): other weights or export settings "
            "compute different vectors, so their texts/s are not comparable"
        )
        if not force:
            raise InputError(
                msg + ". Compare runs of the same model export, or pass --force (force=True) to compare anyway."
            )
        warnings.append(msg + " (compared anyway: --force)")

    def cells(doc):
        return {tuple(r[k] for k in CELL_KEYS): r for r in doc["rows"]}

    before, after = cells(old), cells(new)
    out = []
    for key, r in after.items():
        o = before.get(key)
        cell = dict(zip(CELL_KEYS, key))
        if o is None:
            out.append({**cell, "old": None, "new": r["texts_per_s"], "change_pct": None, "only": "new"})
        else:
            change = 100.0 * (r["texts_per_s"] / o["texts_per_s"] - 1.0) if o["texts_per_s"] else None
            out.append({**cell, "old": o["texts_per_s"], "new": r["texts_per_s"], "change_pct": change, "only": None})
    out += [
        {**dict(zip(CELL_KEYS, key)), "old": o["texts_per_s"], "new": None, "change_pct": None, "only": "old"}
        for key, o in before.items()
        if key not in after
    ]

    cpu_old, cpu_new = _cpu_of(old), _cpu_of(new)
    same_cpu = cpu_old == cpu_new
    if not same_cpu:
        gained = sorted(set(cpu_new["flags"]) - set(cpu_old["flags"]))
        lost = sorted(set(cpu_old["flags"]) - set(cpu_new["flags"]))
        flags = ", ".join([f"+{f}" for f in gained] + [f"-{f}" for f in lost]) or "same ISA flags"
        warnings.append(
            f"the runs are from different CPUs ({cpu_old['model']} -> {cpu_new['model']}; {flags}): "
            "a ratio across chips is not a speed change"
        )
    gpu_old = [g.get("name") for g in (old.get("environment") or {}).get("gpu") or []]
    gpu_new = [g.get("name") for g in (new.get("environment") or {}).get("gpu") or []]
    if gpu_old != gpu_new and any(c["device"].startswith("cuda") and c["only"] is None for c in out):
        warnings.append(
            f"the runs are from different GPUs ({', '.join(gpu_old) or 'none'} -> "
            f"{', '.join(gpu_new) or 'none'}): a ratio across GPUs is not a speed change"
        )

    cfg_old, cfg_new = old.get("config") or {}, new.get("config") or {}
    if cfg_old.get("threads") != cfg_new.get("threads"):
        warnings.append(
            f"the runs used different thread counts ({cfg_old.get('threads')} -> "
            f"{cfg_new.get('threads')}): texts/s scale with threads"
        )
    changed = [
        f"{k} {cfg_old[k]} -> {cfg_new[k]}"
        for k in _CONFIG_KEYS
        if k in cfg_old and k in cfg_new and cfg_old[k] != cfg_new[k]
    ]
    if changed:
        notes.append("config differs: " + ", ".join(changed))
    v_old = (old.get("environment") or {}).get("versions") or {}
    v_new = (new.get("environment") or {}).get("versions") or {}
    changed = [
        f"{p} {v_old.get(p, '-')} -> {v_new.get(p, '-')}"
        for p in sorted(set(v_old) | set(v_new))
        if v_old.get(p) != v_new.get(p)
    ]
    if changed:
        notes.append("versions differ: " + ", ".join(changed))

    return {
        "cells": out,
        "fingerprints": fingerprints,
        "cpu": {"old": cpu_old, "new": cpu_new, "same": same_cpu},
        "gpu": {"old": gpu_old, "new": gpu_new, "same": gpu_old == gpu_new},
        "created": {"old": old.get("created"), "new": new.get("created")},
        "warnings": warnings,
        "notes": notes,
    }


def format_comparison(cmp: dict) -> str:
    """``compare_results``' output as text: both runs' CPUs, a line per cell (old and new texts/s,
    change in percent, or the run it is missing from), a summary, then warnings and notes."""
    lines = []
    for side in ("old", "new"):
        cpu = cmp["cpu"][side]
        gpu = cmp["gpu"][side]
        lines.append(
            f"{side} run  {cmp['created'][side] or '(no date)'}  cpu: {cpu['model']}  "
            f"[{' '.join(cpu['flags']) or 'no flags recorded'}]" + (f"  gpu: {', '.join(gpu)}" if gpu else "")
        )
    lines += [f"warning: {w}" for w in cmp["warnings"]]
    lines += [f"note: {n}" for n in cmp["notes"]]
    head = (
        f"{'model':<18} {'dev':<4} {'length':<6} {'bs':>4} {'contender':<13} "
        f"{'old texts/s':>11} {'new texts/s':>11} {'change':>9}"
    )
    lines += ["", head, "-" * len(head)]
    for c in cmp["cells"]:
        label = f"{c['contender']}-{c['precision']}"
        old = "-" if c["old"] is None else f"{c['old']:.1f}"
        new = "-" if c["new"] is None else f"{c['new']:.1f}"
        change = f"only in {c['only']}" if c["only"] else "-" if c["change_pct"] is None else f"{c['change_pct']:+.1f}%"
        lines.append(
            f"{short_name(c['model'])[:18]:<18} {c['device'][:4]:<4} {c['length']:<6} {c['batch_size']:>4} "
            f"{label[:13]:<13} {old:>11} {new:>11} {change:>9}"
        )
    both = [c["change_pct"] for c in cmp["cells"] if c["change_pct"] is not None]
    only = {s: sum(c["only"] == s for c in cmp["cells"]) for s in ("old", "new")}
    summary = f"{len(both)} cells in both runs"
    if both:
        summary += f", median change {statistics.median(both):+.1f}%"
    summary += f"; {only['old']} only in the old run, {only['new']} only in the new run"
    if cmp["warnings"]:
        summary += f" ({len(cmp['warnings'])} warning(s) above)"
    lines += ["", summary]
    return "\n".join(lines)


def default_out_dir(now: _dt.datetime | None = None) -> Path:
    """bench/results/<timestamp> inside a checkout of this project, else ./bench-results/<timestamp>."""
    stamp = (now or _dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
    base = Path("bench") / "results" if Path("bench").is_dir() else Path("bench-results")
    return base / stamp
