"""Fixtures and helpers of the corpus tests: two tiny sentence-transformers folders with prompts.

The oracle of the prompt tests is sentence-transformers itself on tiny random-weight folders
(tests/st_tiny.py): one cosine model with query/document prompts and one whose similarity_fn_name
is "dot" (no Normalize module, so its raw vectors are not unit length). The corpus output must
equal ``SentenceTransformer(folder).encode_document(texts)`` (normalized for the cosine model, raw
for the dot model), ``embed search`` a brute-force numpy search with its ``encode_query`` vectors,
and the cache must never serve a vector embedded with another prompt.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from engine import Embedder
from engine.corpus.shards import iter_shards
from tests.conftest import SENTENCES
from tests.st_tiny import build_transformer, write_stack

PROMPTS = {"query": "query: ", "document": "passage: ", "other": "represent this: "}


TEXTS = [
    *SENTENCES,
    "héllo wörld café naïve",
    "tokenizers split words into word pieces",
    "",
    "the quick brown fox jumps over the lazy dog " * 6,
]


QUERIES = ["fast fox", "python compiler", "vectors of numbers", "time"]


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return build_transformer(tmp_path_factory.mktemp("prompt-bert") / "bert", "bert")


@pytest.fixture(scope="module")
def st_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("prompt-cache")


def _folder(bert, tmp_path_factory, name, **stack):
    folder = shutil.copytree(bert, tmp_path_factory.mktemp(name) / "model")
    return write_stack(folder, prompts=PROMPTS, **stack)


@pytest.fixture(scope="module")
def cosine_model(bert, tmp_path_factory, st_cache):
    folder = _folder(bert, tmp_path_factory, "cos", pooling="mean", normalize=False)
    return folder, Embedder(str(folder), cache_dir=st_cache)


@pytest.fixture(scope="module")
def dot_model(bert, tmp_path_factory, st_cache):
    folder = _folder(bert, tmp_path_factory, "dot", pooling="mean", normalize=False, similarity_fn_name="dot")
    return folder, Embedder(str(folder), cache_dir=st_cache)


def st_model(folder):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cpu")


def normalized(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def write_texts(path, texts):
    path.write_text("".join(json.dumps({"_id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    return path


def output_vectors(out):
    return np.concatenate([v for _, _, v in iter_shards(out)])
