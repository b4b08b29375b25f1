"""``select`` end to end on a tiny model and a synthetic BEIR folder; the recommendation rule."""

from __future__ import annotations

import json

import pytest

from engine.eval.evaluate import load_beir
from engine.eval.select import bytes_per_vector, recommend, run_select
from tests.conftest import write_beir

PNG = b"\x89PNG\r\n\x1a\n"


TOPICS = [
    "fox dog lazy jumps",
    "vectors numbers cosine similarity",
    "numba python loops machine code",
    "onnx runtime exported networks",
    "tokenizers split word pieces",
    "stitch time saves nine",
]


@pytest.fixture()
def synthetic_beir(tmp_path):
    docs = [
        {"_id": f"d{t}{j}", "title": TOPICS[t].split()[0], "text": f"{TOPICS[t]} {j}"}
        for t in range(6)
        for j in range(5)
    ]
    queries = [{"_id": f"q{t}", "text": TOPICS[t]} for t in range(6)]
    qrels = [(f"q{t}", f"d{t}{j}", 1 + (j == 0)) for t in range(6) for j in range(3)]
    return write_beir(tmp_path / "synthetic", docs, queries, qrels)


def test_select_writes_decision_record(synthetic_beir, tiny_model_dir, tiny_cache, tmp_path):
    ds = load_beir(synthetic_beir)
    out = tmp_path / "select"
    res = run_select(
        ds,
        [str(tiny_model_dir), "no-such-model-xyz"],
        out,
        precisions=("fp32",),
        dims=(None, 16, 8, 64),
        cache_dir=tiny_cache,
        speed_docs=16,
        log=lambda *a: None,
    )
    dims = sorted({r["dim"] for r in res["rows"]})
    assert dims == [8, 16, 32]  # 64 >= dim 32 is skipped
    assert {r["index_precision"] for r in res["rows"]} == {"fp32", "int8"}
    assert any(s["model"] == "no-such-model-xyz" for s in res["skipped"])
    rec = res["recommended"]
    assert rec["ndcg@10"] >= (1 - 0.01) * res["best"]["ndcg@10"]
    for r in res["rows"]:
        assert 0 <= r["ndcg@10"] <= 1 and 0 <= r["recall@100"] <= 1
        assert r["bytes_per_vector"] == (4 * r["dim"] if r["index_precision"] == "fp32" else r["dim"])
    png = (out / "pareto.png").read_bytes()
    assert png[:8] == PNG and len(png) > 1024
    md = (out / "decision.md").read_text()
    assert "## Decision" in md and "## Rule" in md and f"{rec['ndcg@10']:.4f}" in md
    assert json.loads((out / "results.json").read_text())["recommended"] == rec


def row(model, ndcg, speed, dim, ip="fp32", precision="fp32"):
    ram, disk = bytes_per_vector(dim, ip)
    return {
        "model": model,
        "precision": precision,
        "index_precision": ip,
        "dim": dim,
        "full_dim": 384,
        "ndcg@10": ndcg,
        "recall@100": 0.9,
        "encode_docs_per_s": speed,
        "query_ms": 100 / speed,
        "bytes_per_vector": ram,
        "disk_bytes_per_vector": disk,
    }


def test_recommend_rule():
    rows = [
        row("big", 0.70, 5, 768),
        row("small", 0.695, 20, 384),  # within 1% of 0.70 (floor 0.693)
        row("small", 0.694, 20, 384, ip="int8"),  # same speed, 4x fewer bytes: preferred
        row("small", 0.60, 20, 64, ip="int8"),  # fastest and smallest but too lossy
        row("small", 0.699, 25, 384, precision="int8"),  # faster model precision wins first
    ]
    rec = recommend(rows, tolerance=0.01)
    assert rec["best"] is rows[0]
    assert rec["recommended"] is rows[4]
    assert rec["runner_up"] is rows[2]  # different model precision than the winner, then fewest bytes
    assert rec["candidates"] == 4
    assert recommend(rows, tolerance=0.0)["recommended"] is rows[0]


def test_cli_eval_and_select(synthetic_beir, tiny_model_dir, tiny_cache, tmp_path, monkeypatch, capsys):
    from engine.cli import main

    monkeypatch.setenv("EMBED_ENGINE_CACHE", str(tiny_cache))
    out = tmp_path / "r.json"
    assert (
        main(
            [
                "eval",
                "--beir",
                str(synthetic_beir),
                "--model",
                str(tiny_model_dir),
                "--truncate-dim",
                "16",
                "--index-precision",
                "int8",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    res = json.loads(out.read_text())["retrieval"][0]
    assert res["dim"] == 16 and res["index_precision"] == "int8" and res["queries"] == 6
    assert "ndcg@10" in capsys.readouterr().out
    assert main(["eval", "--beir", str(synthetic_beir), "--split", "dev", "--model", str(tiny_model_dir)]) == 1
    assert "available splits: ['test']" in capsys.readouterr().err
    assert (
        main(
            [
                "select",
                "--corpus",
                str(synthetic_beir / "corpus.jsonl"),
                "--queries",
                str(synthetic_beir / "queries.jsonl"),
                "--qrels",
                str(synthetic_beir / "qrels" / "test.tsv"),
                "--models",
                str(tiny_model_dir),
                "--precisions",
                "fp32",
                "--index-precisions",
                "fp32",
                "--dims",
                "full",
                "8",
                "--speed-docs",
                "8",
                "--out",
                str(tmp_path / "sel"),
            ]
        )
        == 0
    )
    assert "**Use tiny-bert fp32 / index fp32" in capsys.readouterr().out
