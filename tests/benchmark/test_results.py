"""engine/benchmark/results.py: what a tiny real run wrote (JSON schema, CSV, PNGs, the table), and
comparing two runs (hand-built result documents, and a real run with itself)."""

from __future__ import annotations

import csv
import json

import pytest

from engine import InputError
from engine.benchmark.contenders import device_unavailable
from engine.benchmark.results import (
    CELL_KEYS,
    SCHEMA,
    compare_results,
    csv_rows,
    format_comparison,
    format_table,
    load_results,
)

_ROW_TYPES = {
    "model": str,
    "device": str,
    "length": str,
    "batch_size": int,
    "contender": str,
    "precision": str,
    "label": str,
    "n_texts": int,
    "n_batches": int,
    "repeats": int,
    "tokens": int,
    "latency_ms": dict,
    "texts_per_s": float,
    "texts_per_s_median": float,
    "tokens_per_s": float,
    "wall_s": float,
    "threads": dict,
}


def test_tiny_run_writes_json_with_the_schema(tiny_run):
    doc = json.loads((tiny_run / "results.json").read_text())
    assert doc["schema"] == SCHEMA
    assert set(doc) >= {
        "created",
        "config",
        "environment",
        "models",
        "texts",
        "rows",
        "skipped",
        "rss_method",
        "load_average_end",
    }
    assert len(doc["environment"]["load_average"]) == 3 and len(doc["load_average_end"]) == 3
    assert doc["config"]["batch_sizes"] == [1, 4] and doc["config"]["threads"] == 1
    (model,) = doc["models"]
    info = doc["models"][model]
    assert info["dim"] == 32 and info["fingerprints"]["fp32"].count("/") == 3
    t = doc["texts"][model]["short"]
    assert t["target_tokens"] == 16 and 8 <= t["mean_tokens"] <= 16
    assert len(doc["rows"]) == 2  # 2 batch sizes x 1 length x engine only
    for row in doc["rows"]:
        for key, typ in _ROW_TYPES.items():
            assert isinstance(row[key], typ), (key, row[key])
        assert set(row["latency_ms"]) == {"p50", "p95", "p99", "mean", "min", "max"}
        assert row["latency_ms"]["p50"] <= row["latency_ms"]["p95"] <= row["latency_ms"]["p99"]
        assert row["n_texts"] == 8 and row["n_batches"] == 8 // row["batch_size"]
        assert row["texts_per_s"] > 0 and row["tokens_per_s"] > row["texts_per_s"]
        assert row["threads"]["intra_op"] == 1
        assert row["speedup_vs_st_torch"] is None  # baselines none
        assert row["peak_rss_mb"] is None or row["peak_rss_mb"] > 0
    if device_unavailable("cuda"):
        (s,) = [s for s in doc["skipped"] if s["device"] == "cuda"]
        assert "CUDAExecutionProvider" in s["reason"]


def test_tiny_run_writes_csv_and_pngs(tiny_run):
    with (tiny_run / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["batch_size"]) for r in rows] == [1, 4]
    assert float(rows[0]["p50_ms"]) > 0 and rows[0]["contender"] == "engine"
    pngs = sorted(p.name for p in tiny_run.glob("*.png"))
    assert pngs == ["latency_tiny-bert.png", "throughput_tiny-bert.png"]
    for p in tiny_run.glob("*.png"):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_table_and_csv_rows_from_a_run(tiny_run):
    doc = json.loads((tiny_run / "results.json").read_text())
    table = format_table(doc)
    assert "engine-fp32" in table and table.count("\n") >= 3
    flat = csv_rows(doc)
    assert flat[0]["p95_ms"] == doc["rows"][0]["latency_ms"]["p95"]


def _doc(
    rows,
    *,
    cpu="AMD EPYC",
    flags=("avx2", "avx512f"),
    fingerprints=None,
    threads=2,
    gpu=(),
    versions=None,
    created="2026-01-01T00:00:00+00:00",
):
    """A minimal results document: rows are (model, device, length, bs, contender, precision, texts/s)."""
    fps = fingerprints if fingerprints is not None else {"m": {"fp32": "m/fp32/8/aaaa", "int8": "m/int8/8/bbbb"}}
    return {
        "schema": SCHEMA,
        "created": created,
        "config": {"threads": threads, "n_texts": 64, "repeats": 2, "corpus": "built-in"},
        "environment": {
            "cpu": {"model": cpu, "flags": {f: f in flags for f in ("avx2", "avx512f", "amx_tile")}},
            "gpu": [{"name": g} for g in gpu],
            "versions": versions or {"onnxruntime": "1.32.0"},
        },
        "models": {m: {"fingerprints": f} for m, f in fps.items()},
        "rows": [dict(zip((*CELL_KEYS, "texts_per_s"), r)) for r in rows],
    }


def test_compare_gives_old_new_and_change_per_cell():
    old = _doc(
        [
            ("m", "cpu", "short", 1, "engine", "fp32", 100.0),
            ("m", "cpu", "short", 8, "engine", "fp32", 400.0),
            ("m", "cpu", "short", 8, "engine", "int8", 500.0),
            ("m", "cpu", "short", 8, "st-torch", "fp32", 200.0),
        ]
    )
    new = _doc(
        [
            ("m", "cpu", "short", 1, "engine", "fp32", 150.0),  # +50%
            ("m", "cpu", "short", 8, "engine", "fp32", 300.0),  # -25%
            ("m", "cpu", "short", 8, "st-torch", "fp32", 200.0),  # 0%
            ("m", "cpu", "short", 32, "engine", "fp32", 900.0),
        ]
    )  # new cell
    cmp = compare_results(old, new)
    by = {(c["batch_size"], c["contender"], c["precision"]): c for c in cmp["cells"]}
    assert by[(1, "engine", "fp32")]["change_pct"] == pytest.approx(50.0)
    assert by[(8, "engine", "fp32")]["change_pct"] == pytest.approx(-25.0)
    assert by[(8, "engine", "fp32")]["old"] == 400.0 and by[(8, "engine", "fp32")]["new"] == 300.0
    assert by[(8, "st-torch", "fp32")]["change_pct"] == pytest.approx(0.0)
    added = by[(32, "engine", "fp32")]
    assert (added["old"], added["new"], added["change_pct"], added["only"]) == (None, 900.0, None, "new")
    assert by[(8, "engine", "int8")]["only"] == "old" and by[(8, "engine", "int8")]["new"] is None
    # the new run's order first, then the cells only the old run has
    assert [c["only"] for c in cmp["cells"]] == [None, None, None, "new", "old"]
    assert cmp["cpu"]["same"] and not cmp["warnings"] and not cmp["notes"]
    assert all(f["same"] for f in cmp["fingerprints"]) and len(cmp["fingerprints"]) == 2

    text = format_comparison(cmp)
    assert "+50.0%" in text and "-25.0%" in text and "+0.0%" in text
    assert "only in new" in text and "only in old" in text
    assert "median change +0.0%" in text  # median of +50, -25, 0
    assert "1 only in the old run, 1 only in the new run" in text
    assert text.count("cpu: AMD EPYC  [avx2 avx512f]") == 2


def test_compare_refuses_different_model_exports_unless_forced():
    row = [("m", "cpu", "short", 1, "engine", "fp32", 100.0)]
    old = _doc(row)
    new = _doc(row, fingerprints={"m": {"fp32": "m/fp32/8/cccc"}})
    want = r"different model exports \(m fp32: old m/fp32/8/aaaa, new m/fp32/8/cccc\).*--force"
    with pytest.raises(InputError, match=want):
        compare_results(old, new)
    cmp = compare_results(old, new, force=True)
    assert cmp["cells"][0]["change_pct"] == pytest.approx(0.0)
    assert any("different model exports" in w and "--force" in w for w in cmp["warnings"])
    # a model in one run only, or a precision only one run exported, is no mismatch
    other = _doc([("n", "cpu", "short", 1, "engine", "fp32", 1.0)], fingerprints={"n": {"fp32": "n/fp32/8/dddd"}})
    assert [c["only"] for c in compare_results(old, other)["cells"]] == ["new", "old"]
    assert compare_results(old, _doc(row, fingerprints={"m": {"fp16": "m/fp16/8/eeee"}}))["fingerprints"] == []


def test_compare_warns_when_the_chips_or_threads_differ():
    row = [("m", "cpu", "short", 1, "engine", "fp32", 100.0), ("m", "cuda", "short", 1, "engine", "fp32", 900.0)]
    old = _doc(row, gpu=("NVIDIA L4",))
    new = _doc(
        row,
        cpu="Intel Xeon",
        flags=("avx2", "avx512f", "amx_tile"),
        threads=16,
        gpu=("NVIDIA H200",),
        versions={"onnxruntime": "1.33.0"},
    )
    cmp = compare_results(old, new)
    assert not cmp["cpu"]["same"]
    assert cmp["cpu"]["new"] == {"model": "Intel Xeon", "flags": ["amx_tile", "avx2", "avx512f"]}
    w = "\n".join(cmp["warnings"])
    assert "different CPUs (AMD EPYC -> Intel Xeon; +amx_tile)" in w and "not a speed change" in w
    assert "different GPUs (NVIDIA L4 -> NVIDIA H200)" in w
    assert "thread counts (2 -> 16)" in w
    assert cmp["notes"] == ["versions differ: onnxruntime 1.32.0 -> 1.33.0"]
    text = format_comparison(cmp)
    assert "old run  2026-01-01T00:00:00+00:00  cpu: AMD EPYC  [avx2 avx512f]  gpu: NVIDIA L4" in text
    assert "new run  2026-01-01T00:00:00+00:00  cpu: Intel Xeon  [amx_tile avx2 avx512f]  gpu: NVIDIA H200" in text
    assert text.count("warning: ") == 3 and "(3 warning(s) above)" in text
    # same CPU model, other ISA flags (e.g. a VM that hides AVX-512) is a different chip too
    masked = _doc(row, flags=("avx2",), gpu=("NVIDIA L4",))
    assert "-avx512f" in compare_results(old, masked)["warnings"][0]


def test_compare_rejects_documents_that_are_not_runs():
    good = _doc([("m", "cpu", "short", 1, "engine", "fp32", 1.0)])
    bad = _doc([])
    bad["rows"] = [{"model": "m", "device": "cpu"}]
    with pytest.raises(InputError, match="new run: row 0 lacks length, batch_size, contender, precision, texts_per_s"):
        compare_results(good, bad)


def test_load_results_reads_a_file_or_its_folder(tmp_path):
    doc = _doc([("m", "cpu", "short", 1, "engine", "fp32", 1.0)])
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.json").write_text(json.dumps(doc))
    assert load_results(tmp_path / "run") == doc == load_results(tmp_path / "run" / "results.json")
    with pytest.raises(InputError, match="does not exist"):
        load_results(tmp_path / "nowhere")
    (tmp_path / "x.json").write_text("{oops")
    with pytest.raises(InputError, match="is not JSON"):
        load_results(tmp_path / "x.json")
    (tmp_path / "y.json").write_text(json.dumps({"schema": "pytest-benchmark", "rows": []}))
    with pytest.raises(InputError, match="not an `embed bench` results file"):
        load_results(tmp_path / "y.json")


def test_tiny_run_compared_with_itself(tiny_run, capsys):
    from engine.cli import main

    assert main(["bench", "--compare", str(tiny_run), "--input", str(tiny_run / "results.json")]) == 0
    out = capsys.readouterr().out
    assert "2 cells in both runs, median change +0.0%; 0 only in the old run, 0 only in the new run" in out
    assert out.count("+0.0%") == 3 and "warning" not in out
    assert main(["bench", "--input", str(tiny_run)]) == 0  # a saved run's table; nothing runs
    assert capsys.readouterr().out == format_table(json.loads((tiny_run / "results.json").read_text())) + "\n"
