"""The benchmark harness: statistics on a fake clock, text building, the results schema, the CLI,
comparing two runs (hand-built result documents), and a real pytest-benchmark run of a few of
bench/'s benchmarks grouped by parameter.

No timing is asserted anywhere: the fake clock makes the statistics exact, and the real runs
check only what was written, its structure, and values derived from the recorded times.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from engine import InputError
from engine.benchmark.chip import environment
from engine.benchmark.clock import FakeClock
from engine.benchmark.harness import (
    CELL_KEYS,
    SCHEMA,
    BenchConfig,
    Contender,
    MemoryProbe,
    _run_cell,
    best_batch_sizes,
    build_texts,
    compare_results,
    csv_rows,
    device_unavailable,
    format_comparison,
    format_table,
    latency_summary,
    load_results,
    measure,
    min_cosine,
    read_corpus,
)


def _timed(clock: FakeClock, durations, log=None, name=None):
    """A contender that takes the next scripted duration (seconds) on every call."""
    it = iter(durations)

    def fn(batch):
        if log is not None:
            log.append(name)
        clock.advance(next(it))
        return np.ones((len(batch), 2), dtype=np.float32)

    return fn


# -- statistics on a fake clock ----------------------------------------------------------
def test_latencies_and_throughput_on_fake_clock():
    clock = FakeClock()
    rng = np.random.default_rng(0)
    n_batches, repeats, warmup = 4, 3, 2
    durations = rng.uniform(0.001, 0.05, size=warmup + n_batches * repeats)
    batches = [["t"] * 8 for _ in range(n_batches)]
    m = measure({"a": _timed(clock, durations)}, batches, repeats, clock=clock, warmup=warmup)["a"]

    timed = durations[warmup:]  # the warm-up calls are never timed
    np.testing.assert_allclose(m.latencies_s, timed, rtol=0, atol=1e-12)
    passes = timed.reshape(repeats, n_batches).sum(axis=1)
    np.testing.assert_allclose(m.pass_s, passes, atol=1e-12)

    s = m.summary(n_texts=32, n_tokens=32 * 20)
    want = np.percentile(timed * 1e3, [50, 95, 99])
    assert [s["latency_ms"][k] for k in ("p50", "p95", "p99")] == pytest.approx(want, rel=1e-12)
    assert s["latency_ms"]["mean"] == pytest.approx(timed.mean() * 1e3)
    assert s["latency_ms"]["max"] == pytest.approx(timed.max() * 1e3)
    assert s["wall_s"] == pytest.approx(passes.min())
    assert s["texts_per_s"] == pytest.approx(32 / passes.min())
    assert s["texts_per_s_median"] == pytest.approx(32 / np.median(passes))
    assert s["tokens_per_s"] == pytest.approx(640 / passes.min())
    assert len(m.outputs) == n_batches  # the last pass's outputs are kept


@pytest.mark.parametrize(
    "lat", [[0.010], [0.003, 0.001], list(np.linspace(0.001, 0.1, 101))], ids=["one", "two", "many"]
)
def test_latency_summary_matches_numpy(lat):
    s = latency_summary(lat)
    a = np.asarray(lat) * 1e3
    for q in (50, 95, 99):
        assert s[f"p{q}"] == pytest.approx(np.percentile(a, q))
    assert s["min"] == pytest.approx(a.min())


def test_contenders_alternate_and_warm_up_first():
    clock = FakeClock()
    log: list[str] = []
    fns = {n: _timed(clock, [0.001] * 20, log, n) for n in ("x", "y", "z")}
    measure(fns, [["a"]], repeats=3, clock=clock, warmup=1)
    assert log == [
        "x",
        "y",
        "z",  # warm-up, one each
        "x",
        "y",
        "z",
        "z",
        "y",
        "x",
        "x",
        "y",
        "z",
    ]  # passes alternate direction


def test_speedup_and_cosine_against_the_torch_baseline_of_the_same_cell():
    clock = FakeClock()

    class FakeEmb:
        def tokenize(self, texts):
            return [np.zeros(10, dtype=np.int64) for _ in texts]

    vecs = np.eye(4, 3, dtype=np.float32)
    vecs[3] = [1, 1, 0]

    def contender(name, per_batch):
        def fn(batch):
            clock.advance(per_batch)
            return vecs[: len(batch)] if name != "st-torch" else vecs[: len(batch)] * 2.0  # cosine ignores scale

        return Contender(name, "fp32", fn, {"t": 1})

    cs = [contender("engine", 0.01), contender("st-torch", 0.03)]
    cfg = BenchConfig(n_texts=4, repeats=2)
    rows = _run_cell("m", "cpu", "short", 4, ["a", "b", "c", "d"], cs, cfg, clock, None, FakeEmb())
    by = {r["contender"]: r for r in rows}
    assert by["engine"]["speedup_vs_st_torch"] == pytest.approx(3.0)
    assert by["st-torch"]["speedup_vs_st_torch"] == pytest.approx(1.0)
    assert by["engine"]["min_cosine_vs_st_torch"] == pytest.approx(1.0)
    assert by["engine"]["tokens"] == 40 and by["engine"]["tokens_per_s"] == pytest.approx(40 / 0.01)
    assert best_batch_sizes({"rows": rows}) == {("m", "cpu", "fp32", "short"): 4}


def test_cell_without_baseline_has_no_speedup():
    clock = FakeClock()

    class FakeEmb:
        def tokenize(self, texts):
            return [np.zeros(3, dtype=np.int64) for _ in texts]

    c = Contender("engine", "fp32", _timed(clock, [0.01] * 10), {})
    rows = _run_cell("m", "cpu", "short", 2, ["a", "b"], [c], BenchConfig(n_texts=2, repeats=1), clock, None, FakeEmb())
    assert rows[0]["speedup_vs_st_torch"] is None and rows[0]["min_cosine_vs_st_torch"] is None


def test_measure_refuses_nonsense():
    with pytest.raises(InputError, match="repeats"):
        measure({"a": lambda b: None}, [["x"]], repeats=0)
    with pytest.raises(InputError, match="no batches"):
        measure({"a": lambda b: None}, [], repeats=1)
    with pytest.raises(InputError, match="no latencies"):
        latency_summary([])


def test_min_cosine():
    a = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    b = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    assert min_cosine(a, b) == pytest.approx(1 / np.sqrt(2))
    with pytest.raises(InputError, match="shapes"):
        min_cosine(a, b[:2])


def test_memory_probe_reads_a_peak():
    probe = MemoryProbe()
    probe.reset()
    peak = probe.peak_mb()
    assert probe.method in ("VmHWM", "ru_maxrss")
    assert peak is None or peak > 1.0  # a Python process holds more than 1 MB


# -- texts -------------------------------------------------------------------------------
def _count(words):
    return [1 + len(w) // 4 for w in words]  # a stand-in tokenizer: 1 token per 4 characters


@pytest.mark.parametrize("target", [8, 16, 64, 256])
def test_build_texts_hits_the_token_target(target):
    docs = read_corpus()
    texts = build_texts(docs, _count, target, n=50, special_tokens=2)
    assert len(texts) == 50
    toks = np.array([sum(_count(t.split())) + 2 for t in texts])
    assert toks.max() <= target or target <= 4
    assert toks.mean() >= target * 0.8  # greedy fill stops only when the next word does not fit
    assert len(set(texts)) > 40


def test_build_texts_wraps_a_small_corpus_into_distinct_texts():
    docs = ["alpha beta gamma delta", "epsilon zeta eta theta iota"]
    texts = build_texts(docs, lambda ws: [1] * len(ws), target_tokens=5, n=12, special_tokens=2)
    assert all(len(t.split()) == 3 for t in texts)
    assert len(set(texts)) >= 6
    # a corpus shorter than one text: every text is the whole stream (rotated), nothing loops forever
    one = build_texts(["a b"], lambda ws: [1] * len(ws), target_tokens=100, n=3)
    assert len(one) == 3 and all(sorted(t.split()) == ["a", "b"] for t in one)


def test_build_texts_with_real_tokenizer(tiny_embedder):
    specials = len(tiny_embedder.tokenize([""])[0])
    count = lambda ws: [len(x) - specials for x in tiny_embedder.tokenize(ws)]
    texts = build_texts(read_corpus(), count, 12, n=20, special_tokens=specials)
    lens = [len(x) for x in tiny_embedder.tokenize(texts)]
    assert max(lens) <= 12 and min(lens) >= 6


def test_read_corpus_formats(tmp_path):
    assert len(read_corpus()) == 200  # the built-in sample
    j = tmp_path / "c.jsonl"
    j.write_text('{"_id": "1", "title": "T", "text": "body one"}\n\n{"text": "two"}\n{"sentence": "three"}\n')
    assert read_corpus(j) == ["T body one", "two", "three"]
    t = tmp_path / "c.txt"
    t.write_text("line one\n\n  line two  \n")
    assert read_corpus(t) == ["line one", "line two"]
    with pytest.raises(InputError, match="does not exist"):
        read_corpus(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    with pytest.raises(InputError, match=r"bad\.jsonl:1: invalid JSON"):
        read_corpus(bad)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    with pytest.raises(InputError, match="no text"):
        read_corpus(empty)


# -- config and CLI ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"lengths": ("huge",)}, "length bucket"),
        ({"devices": ("tpu",)}, "device"),
        ({"baselines": ("fastembed",)}, "baseline"),
        ({"batch_sizes": (0, 8)}, "batch sizes"),
        ({"n_texts": 0}, "n_texts"),
        ({"repeats": 0}, "repeats"),
        ({"warmup": 0}, "warmup"),
        ({"models": ()}, "no model"),
    ],
    ids=["length", "device", "baseline", "batch", "n_texts", "repeats", "warmup", "model"],
)
def test_config_validation(kwargs, match):
    with pytest.raises(InputError, match=match):
        BenchConfig(**kwargs).validate()


def _args(*argv):
    from engine.cli import build_parser

    return build_parser().parse_args(["bench", *argv])


def test_cli_flags_become_a_config():
    from engine.cli.bench import config_from_args

    c = config_from_args(
        _args(
            "--model",
            "a,b",
            "--model",
            "c",
            "--batch-sizes",
            "1, 8",
            "--baselines",
            "none",
            "--precision",
            "fp32,int8",
            "--device",
            "cpu",
        )
    )
    assert c.models == ("a", "b", "c") and c.batch_sizes == (1, 8) and c.baselines == ()
    assert c.precisions == ("fp32", "int8") and c.devices == ("cpu",)
    assert c.lengths == ("short", "medium", "long") and c.n_texts == 256 and c.repeats == 3
    q = config_from_args(_args("--quick", "--repeats", "5"))
    assert q.batch_sizes == (1, 8, 32) and q.lengths == ("short", "medium") and q.n_texts == 64
    assert q.repeats == 5  # an explicit flag wins over --quick
    assert q.baselines == ("st-torch", "st-onnx", "st-openvino") and q.models == ("all-MiniLM-L6-v2",)


def test_cli_rejects_bad_batch_sizes(capsys):
    from engine.cli import main

    assert main(["bench", "--batch-sizes", "1,eight"]) == 1
    assert "comma list of integers" in capsys.readouterr().err


def test_import_stays_light():
    code = (
        "import sys, engine.benchmark.harness, engine.cli.bench; "
        "bad = [m for m in ('torch', 'matplotlib', 'sentence_transformers') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_environment_block():
    env = environment()
    assert isinstance(env["cpu"]["model"], str) and env["cpu"]["model"]
    assert isinstance(env["cpu"]["logical_cores"], int) and env["cpu"]["physical_cores"] >= 1
    assert all(isinstance(v, bool) for v in env["cpu"]["flags"].values())
    assert "avx512_vnni" in env["cpu"]["flags"]
    assert isinstance(env["gpu"], list)
    assert "CPUExecutionProvider" in env["onnxruntime_providers"]
    assert env["versions"]["onnxruntime"] and env["versions"]["numpy"]
    from engine.models.quantize import cpu_isa, int8_recipe

    assert env["int8_isa"] == cpu_isa() and env["int8_recipe"] == int8_recipe()
    assert env["onnxruntime"] == env["versions"]["onnxruntime"]
    assert len(env["load_average"]) == 3 and all(x >= 0 for x in env["load_average"])
    json.dumps(env)  # serializable as is


# -- a tiny real run, end to end through the CLI -----------------------------------------
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


@pytest.fixture(scope="module")
def tiny_run(tiny_model_dir, tiny_cache, tmp_path_factory):
    from engine.cli import main

    out = tmp_path_factory.mktemp("bench-out")
    rc = main(
        [
            "bench",
            "--model",
            str(tiny_model_dir),
            "--cache-dir",
            str(tiny_cache),
            "--device",
            "cpu,cuda",
            "--batch-sizes",
            "1,4",
            "--lengths",
            "short",
            "--n-texts",
            "8",
            "--repeats",
            "2",
            "--baselines",
            "none",
            "--threads",
            "1",
            "--no-progress",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    return out


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


@pytest.mark.slow
def test_tiny_run_with_both_baselines(tiny_model_dir, tiny_cache, tmp_path):
    """The baselines load offline and the engine's vectors match sentence-transformers torch."""
    from engine.benchmark.harness import run_grid

    cfg = BenchConfig(
        models=(str(tiny_model_dir),),
        devices=("cpu",),
        batch_sizes=(4,),
        lengths=("medium",),
        n_texts=8,
        repeats=1,
        baselines=("st-torch", "st-onnx"),
        threads=1,
        cache_dir=str(tiny_cache),
    )
    doc = run_grid(cfg, progress=False)
    by = {r["contender"]: r for r in doc["rows"]}
    assert set(by) == {"engine", "st-torch", "st-onnx"}, doc["skipped"]
    assert by["st-torch"]["speedup_vs_st_torch"] == pytest.approx(1.0)
    assert by["engine"]["min_cosine_vs_st_torch"] > 0.9999
    assert by["st-onnx"]["min_cosine_vs_st_torch"] > 0.9999


def test_tiny_run_records_each_contenders_runtime(tiny_model_dir, tiny_cache):
    """Every row names the runtime that ran it; the engine's is the one its Embedder chose."""
    pytest.importorskip("openvino", reason="the openvino extra is not installed")
    from engine.benchmark import harness
    from engine.benchmark.harness import run_grid

    cfg = BenchConfig(
        models=(str(tiny_model_dir),),
        devices=("cpu",),
        batch_sizes=(4,),
        lengths=("medium",),
        n_texts=8,
        repeats=1,
        baselines=("st-torch", "st-openvino"),
        threads=1,
        cache_dir=str(tiny_cache),
    )
    doc = run_grid(cfg, progress=False)
    rows = {r["contender"]: r for r in doc["rows"]}
    assert rows["engine"]["runtime"] == "onnxruntime" and rows["st-torch"]["runtime"] == "torch"
    skipped = {s["contender"] for s in doc["skipped"]}
    if "st-openvino" not in skipped:  # needs the peers extra (optimum-intel)
        assert rows["st-openvino"]["runtime"] == "openvino"
        assert rows["st-openvino"]["min_cosine_vs_st_torch"] > 0.9999
    assert "runtime" in harness.CSV_FIELDS


# -- comparing two runs (hand-built result documents) ------------------------------------
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


def test_cli_compares_two_saved_runs(tmp_path, capsys):
    from engine.cli import main

    row = [("m", "cpu", "short", 1, "engine", "fp32", 100.0)]
    for name, doc in (
        ("old", _doc(row)),
        ("new", _doc([(*row[0][:-1], 120.0)])),
        ("other", _doc(row, fingerprints={"m": {"fp32": "m/fp32/8/ffff"}})),
    ):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(doc))
    assert main(["bench", "--compare", str(tmp_path / "old"), "--input", str(tmp_path / "new")]) == 0
    out = capsys.readouterr().out
    assert "+20.0%" in out and "100.0" in out and "120.0" in out
    assert main(["bench", "--compare", str(tmp_path / "old"), "--input", str(tmp_path / "other")]) == 1
    assert "different model exports" in capsys.readouterr().err
    assert main(["bench", "--compare", str(tmp_path / "old"), "--input", str(tmp_path / "other"), "--force"]) == 0
    assert "+0.0%" in capsys.readouterr().out
    assert main(["bench", "--compare", str(tmp_path / "missing")]) == 1  # checked before anything runs
    assert "does not exist" in capsys.readouterr().err


def test_tiny_run_compared_with_itself(tiny_run, capsys):
    from engine.cli import main

    assert main(["bench", "--compare", str(tiny_run), "--input", str(tiny_run / "results.json")]) == 0
    out = capsys.readouterr().out
    assert "2 cells in both runs, median change +0.0%; 0 only in the old run, 0 only in the new run" in out
    assert out.count("+0.0%") == 3 and "warning" not in out
    assert main(["bench", "--input", str(tiny_run)]) == 0  # a saved run's table; nothing runs
    assert capsys.readouterr().out == format_table(json.loads((tiny_run / "results.json").read_text())) + "\n"


# -- pytest-benchmark for real on a tiny subset of bench/ --------------------------------
def test_pytest_benchmark_groups_by_param(tiny_embedder, tiny_model_dir, tiny_cache, tmp_path):
    """`pytest bench/ --benchmark-group-by=param:device` runs and groups; every benchmark carries
    the suite's parameter names, so grouping by any of them works on the saved JSON too."""
    from pathlib import Path

    from pytest_benchmark.plugin import pytest_benchmark_group_stats

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "bench.json"
    # only pytest-benchmark among the installed pytest plugins: faster start, nothing else interferes
    env = {
        **os.environ,
        "BENCH_MODEL": str(tiny_model_dir),
        "EMBED_ENGINE_CACHE": str(tiny_cache),
        "BENCH_N": "2000",
        "BENCH_N_TEXTS": "8",
        "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
    }
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "pytest_benchmark.plugin",
        "-q",
        "-p",
        "no:cacheprovider",
        "-m",
        "not slow",
        "bench/test_bench_encode.py",
        "bench/test_bench_kernels.py",
        "-k",
        "(encode and cpu and fp32 and bs8) or (index_search and cpu) or calibrate",
        "--benchmark-only",
        "--benchmark-group-by=param:device",
        "--benchmark-min-rounds=1",
        "--benchmark-max-time=0.001",
        "--benchmark-warmup=off",
        f"--benchmark-json={out}",
    ]
    r = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert "benchmark 'device=cpu': 4 tests" in r.stdout, r.stdout[-4000:]
    doc = json.loads(out.read_text())
    chip = doc["machine_info"]["embed_engine"]  # the saved run names the chip
    assert chip["cpu"]["model"] and chip["int8_isa"] and chip["onnxruntime"]
    names = sorted(b["name"] for b in doc["benchmarks"])
    assert names == [
        "test_bench_calibrate",
        "test_bench_index_search[cpu-fp32]",
        "test_bench_index_search[cpu-int8]",
        "test_encode[tiny-bert-cpu-fp32-bs8]",
    ]
    for b in doc["benchmarks"]:
        assert b["group"] and set(b["params"]) >= {"model", "device", "precision", "batch_size"}, b
    enc = next(b for b in doc["benchmarks"] if b["name"].startswith("test_encode"))
    assert enc["params"] == {"model": str(tiny_model_dir), "device": "cpu", "precision": "fp32", "batch_size": 8}
    info = enc["extra_info"]
    assert info["n_texts"] == 8 and info["texts_per_s"] == pytest.approx(8 / enc["stats"]["min"])
    assert info["tokens_per_s"] == pytest.approx(info["tokens"] / enc["stats"]["min"]) and info["tokens"] > 8
    cal = next(b for b in doc["benchmarks"] if b["name"] == "test_bench_calibrate")
    assert cal["params"] == {"model": "n/a", "device": "cpu", "precision": "int8", "batch_size": "n/a"}
    # what `pytest-benchmark compare --group-by` does with the saved file: no KeyError for any name
    groups = dict(pytest_benchmark_group_stats(config=None, benchmarks=doc["benchmarks"], group_by="param:batch_size"))
    assert {k: len(v) for k, v in groups.items()} == {"batch_size=1": 2, "batch_size=8": 1, "batch_size=n/a": 1}
    groups = dict(pytest_benchmark_group_stats(config=None, benchmarks=doc["benchmarks"], group_by="param:precision"))
    assert {k: len(v) for k, v in groups.items()} == {"precision=fp32": 2, "precision=int8": 2}


# -- distance to the limit: GEMM peak and the model's FLOPs -----------------------------
@pytest.mark.parametrize("int8", [False, True], ids=["fp32-MatMul", "int8-MatMulInteger"])
def test_gemm_graph_computes_the_product(int8):
    """The hand-written protobuf is a valid ONNX model whose output is A @ B (numpy oracle)."""
    import onnxruntime as ort

    from engine.benchmark.chip import gemm_graph
    from engine.onnx_bytes import tensor

    m, k, n = 5, 7, 3
    model = gemm_graph(m, k, n, int8)
    rng = np.random.default_rng(0)  # gemm_graph's weights: the same generator and draw
    b = rng.integers(-127, 128, size=(k, n), dtype=np.int8) if int8 else rng.standard_normal((k, n)).astype(np.float32)
    assert tensor("B", b, 3 if int8 else 1) in model
    if int8:
        a = (np.arange(m * k).reshape(m, k) * 37 % 256).astype(np.uint8)
    else:
        a = rng.standard_normal((m, k)).astype(np.float32)
    got = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"A": a})[0]
    if int8:
        want = (a.astype(np.int64) - 128) @ b.astype(np.int64)  # a_zero_point 128
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, a @ b, rtol=1e-5, atol=1e-5)


def test_gemm_peak_on_a_tiny_shape():
    from engine.benchmark.chip import gemm_peak

    peak = gemm_peak(1, shape=(16, 32, 24), min_s=0.01)
    assert peak["shape"] == [16, 32, 24] and peak["threads"] == 1
    for k in ("fp32_gflops", "int8_gops", "int8_over_fp32"):
        assert np.isfinite(peak[k]) and peak[k] > 0, peak


def test_model_flops_per_token_tiny_model_by_hand(tiny_embedder):
    from engine.benchmark.chip import limit_fields, model_flops_per_token, transformer_shape

    shape = transformer_shape(tiny_embedder)
    assert shape == {"layers": 2, "hidden": 32, "intermediate": 64}  # conftest's BertConfig
    # per layer: Q, K, V, O 4 x (2 x 32 x 32) = 8192; FFN 2 x (2 x 32 x 64) = 8192;
    # scores and context at 10 tokens 2 x (2 x 10 x 32) = 1280; two layers
    assert model_flops_per_token(tiny_embedder, 10) == 2 * (8192 + 8192 + 1280)
    # all-MiniLM-L6-v2 (6 x 384 / 1536) at its 239-token SciFact mean, by hand: 6 x (1,179,648 + 2,359,296 + 367,104)
    minilm = {"layers": 6, "hidden": 384, "intermediate": 1536}
    assert model_flops_per_token(None, 239, minilm) == 6 * 3_906_048
    peak = {"fp32_gflops": 100.0, "int8_gops": 400.0}
    assert limit_fields(1e6, 2e5, "int8", peak) == {"gflops": 200.0, "fraction_of_peak": 0.5}
    assert limit_fields(1e6, 2e5, "fp32", peak) == {"gflops": 200.0, "fraction_of_peak": 2.0}
    assert limit_fields(1e6, None, "fp32", peak) == {"gflops": None, "fraction_of_peak": None}


def test_tiny_run_reports_the_chip_and_fraction_of_peak(tiny_run, tiny_embedder):
    from engine.benchmark.chip import model_flops_per_token

    doc = json.loads((tiny_run / "results.json").read_text())
    env, peak = doc["environment"], doc["gemm_peak"]
    assert env["int8_isa"] and env["onnxruntime"] == env["versions"]["onnxruntime"]
    assert peak["threads"] == 1 and peak["fp32_gflops"] > 0 and peak["int8_gops"] > 0
    (model,) = doc["models"]
    mean_tokens = doc["texts"][model]["short"]["mean_tokens"]
    for row in doc["rows"]:
        # texts are the same across cells but a cell uses its first n_texts: recompute from the row
        flops = model_flops_per_token(tiny_embedder, row["tokens"] / row["n_texts"])
        assert row["gflops"] == pytest.approx(row["tokens_per_s"] * flops / 1e9, rel=1e-2, abs=0.01)
        assert row["fraction_of_peak"] == pytest.approx(row["gflops"] / peak["fp32_gflops"], rel=1e-2, abs=1e-3)
    assert 8 <= mean_tokens <= 16
    table = format_table(doc)
    assert "of peak" in table and f"int8 ISA class {env['int8_isa']}" in table
