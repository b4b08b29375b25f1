"""The model lab on three tiny random BERTs: real PNG files, sane agreement numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.eval.lab import (
    agreement,
    cosine_matrix,
    label_consistency,
    load_texts,
    neighbours,
    onnx_stats,
    run_lab,
)
from tests.conftest import build_tiny_model

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def three_tiny(tmp_path_factory, tiny_model_dir):
    """The session's tiny model (seed 0, already exported) and two more with other seeds."""
    root = tmp_path_factory.mktemp("lab-models")
    return [str(tiny_model_dir)] + [str(build_tiny_model(root / f"tiny-{s}", seed=s)) for s in (1, 2)]


def test_lab_writes_json_and_pngs(three_tiny, tiny_cache, tmp_path):
    texts = tmp_path / "texts.jsonl"
    words = ["fox dog lazy", "vectors numbers cosine", "numba python loops", "onnx runtime networks"]
    rows = [{"_id": f"t{i}", "title": "", "text": f"{words[i % 4]} {i}", "label": f"g{i % 4}"} for i in range(24)]
    texts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = run_lab(
        [*three_tiny, "no-such-model-xyz"],
        tmp_path / "lab",
        texts_path=texts,
        limit=12,
        cache_dir=tiny_cache,
        log=lambda *a: None,
    )
    assert len(res["models"]) == 3 and res["skipped"][0]["model"] == "no-such-model-xyz"
    for r in res["models"].values():
        assert r["dim"] == 32 and r["parameters"] > 10_000 and r["onnx_bytes"] > 10_000
        assert r["texts_per_s"] > 0 and 0 <= r["label_top5_consistency"] <= 1
    assert len(res["agreement"]) == 3
    for a in res["agreement"].values():
        assert -1 <= a["spearman"] <= 1 and 0 <= a["top5_overlap"] <= 1
    for name in ("similarity_heatmaps.png", "agreement.png", "tsne.png"):
        data = (tmp_path / "lab" / name).read_bytes()
        assert data[:8] == PNG and len(data) > 1024, name
    saved = json.loads((tmp_path / "lab" / "lab.json").read_text())
    assert saved["files"]["tsne"] == "tsne.png" and saved["labels"] == "topic"


def test_parameter_count_matches_weights(tiny_embedder, tiny_model_dir, tiny_cache):
    from safetensors.numpy import load_file

    from engine.models.export import load_or_export

    stats = onnx_stats(load_or_export(str(tiny_model_dir), cache_dir=tiny_cache).onnx_path)
    weights = sum(v.size for k, v in load_file(str(tiny_model_dir / "model.safetensors")).items() if "pooler" not in k)
    # the exported graph holds the encoder weights (no pooler); the exporter shares identical
    # tensors (untrained LayerNorm ones/zeros) and adds a few small graph constants
    assert 0.95 * weights <= stats["parameters"] <= 1.05 * weights


def test_agreement_of_identical_and_permuted_models():
    rng = np.random.default_rng(0)
    v = rng.standard_normal((20, 8))
    s = cosine_matrix(v)
    same = agreement(s, s)
    assert same["spearman"] == pytest.approx(1.0) and same["top5_overlap"] == 1.0
    other = agreement(s, cosine_matrix(rng.standard_normal((20, 8))))
    assert other["spearman"] < 0.5 and other["top5_overlap"] < 0.6
    assert 0 not in neighbours(s)[0]  # self is never its own neighbour


def test_label_consistency_by_hand():
    # two tight groups far apart: every neighbour within the top-1 shares the label
    v = np.array([[1, 0], [0.99, 0.1], [0, 1], [0.1, 0.99]], dtype=float)
    assert label_consistency(cosine_matrix(v), ["a", "a", "b", "b"], k=1) == 1.0
    assert label_consistency(cosine_matrix(v), ["a", "b", "a", "b"], k=1) == 0.0


def test_tsne_without_labels_uses_kmeans(tmp_path):
    from engine.eval.lab import plot_tsne

    rng = np.random.default_rng(0)
    path = plot_tsne({"a": rng.standard_normal((30, 8)), "b": rng.standard_normal((30, 8))}, None, tmp_path / "t.png")
    data = path.read_bytes()
    assert data[:8] == PNG and len(data) > 1024


def test_sample_corpus_labels():
    ids, texts, labels = load_texts()
    assert len(texts) == 200 and len(set(labels)) == 20
    assert labels[0] == labels[9] != labels[10] and ids[10] == "d011"
