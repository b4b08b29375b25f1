"""engine.integrations.langchain: langchain-tests' standard suites plus oracle checks on tiny models.

The oracles: ``Embedder`` on the same model, and for ``HuggingFaceEmbeddings``' arguments (model_name,
model_kwargs, encode_kwargs, query_encode_kwargs) ``SentenceTransformer.encode`` with those kwargs,
which is what HuggingFaceEmbeddings calls.
"""

from __future__ import annotations

import importlib
import sys

import numpy as np
import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("langchain_tests")

from langchain_tests.integration_tests import EmbeddingsIntegrationTests
from langchain_tests.unit_tests import EmbeddingsUnitTests

from engine import InputError, ModelNotFoundError
from engine.integrations.langchain import EngineEmbeddings

TEXTS = ["the quick brown fox", "numba compiles python loops", "héllo wörld café", "a"]


class _TinyModel:
    """Standard-suite settings: the in-test tiny BERT and its session cache (no network)."""

    @pytest.fixture(autouse=True)
    def _tiny(self, tiny_model_dir, tiny_cache):
        self._params = {"model": str(tiny_model_dir), "cache_dir": tiny_cache}

    @property
    def embeddings_class(self) -> type[EngineEmbeddings]:
        return EngineEmbeddings

    @property
    def embedding_model_params(self) -> dict:
        return self._params


class TestEngineEmbeddingsUnit(_TinyModel, EmbeddingsUnitTests):
    pass


# The suite's async tests need an event loop (pytest-asyncio comes with langchain-tests); the mark
# also lands on its sync tests, where pytest-asyncio only warns that it is unused.
@pytest.mark.asyncio
@pytest.mark.filterwarnings("ignore:.*is marked with '@pytest.mark.asyncio' but it is not an async function")
class TestEngineEmbeddingsIntegration(_TinyModel, EmbeddingsIntegrationTests):
    pass


@pytest.fixture(scope="module")
def lc(tiny_model_dir, tiny_cache) -> EngineEmbeddings:
    return EngineEmbeddings(model=str(tiny_model_dir), cache_dir=tiny_cache)


def test_vectors_are_the_embedders(lc, tiny_embedder):
    """The tiny model has no prompts, so queries and documents embed as plain encode does."""
    docs = lc.embed_documents(TEXTS)
    assert isinstance(docs, list) and all(type(v) is list and type(v[0]) is float for v in docs)
    np.testing.assert_array_equal(np.array(docs, np.float32), tiny_embedder.encode(TEXTS))
    np.testing.assert_array_equal(np.array(lc.embed_query(TEXTS[1]), np.float32), tiny_embedder.encode(TEXTS[1]))
    assert lc.embed_documents([]) == []
    assert lc.embedder.fingerprint == tiny_embedder.fingerprint


async def _both(lc):
    return await lc.aembed_documents(TEXTS), await lc.aembed_query(TEXTS[0])


def test_async_equals_sync(lc):
    import asyncio

    docs, query = asyncio.run(_both(lc))
    assert docs == lc.embed_documents(TEXTS) and query == lc.embed_query(TEXTS[0])


class _Stub:
    """Records which Embedder method each call went through."""

    def __init__(self, with_prompts: bool):
        self.calls = []
        if with_prompts:
            self.encode_query = lambda t: self._rec("query", t)
            self.encode_document = lambda t: self._rec("document", t)

    def _rec(self, kind, texts):
        self.calls.append(kind)
        return np.zeros(3, np.float32) if isinstance(texts, str) else np.zeros((len(texts), 3), np.float32)

    def encode(self, texts):
        return self._rec("encode", texts)


@pytest.mark.parametrize(
    "with_prompts,expected",
    [(True, ["document", "query"]), (False, ["encode", "encode"])],
    ids=["encode_query/document", "encode-fallback"],
)
def test_uses_prompt_methods_when_present(lc, with_prompts, expected):
    stub = _Stub(with_prompts)
    lc2 = object.__new__(EngineEmbeddings)
    lc2.embedder, lc2.encode_kwargs, lc2.query_encode_kwargs, lc2.show_progress = stub, {}, {}, False
    assert lc2.embed_documents(["x", "y"]) == [[0.0] * 3] * 2
    assert lc2.embed_query("x") == [0.0] * 3
    assert stub.calls == expected


def test_wrong_argument_kinds(lc):
    with pytest.raises(InputError, match="embed_documents takes a list of strings"):
        lc.embed_documents("one string")
    with pytest.raises(InputError, match="embed_query takes one string"):
        lc.embed_query(["a", "b"])


def test_bad_model_fails_at_construction(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no-such-model"):
        EngineEmbeddings(model="no-such-model", cache_dir=tmp_path)


def test_missing_langchain_core_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "langchain_core", None)
    monkeypatch.delitem(sys.modules, "langchain_core.embeddings", raising=False)
    monkeypatch.delitem(sys.modules, "engine.integrations.langchain")
    with pytest.raises(ImportError, match=r"pip install 'embed-engine\[langchain\]'"):
        importlib.import_module("engine.integrations.langchain")


@pytest.fixture(scope="module")
def prompted_dir(tmp_path_factory):
    """A BERT without Normalize, similarity "dot" and query/document prompts: kwargs and prompts show."""
    from tests.st_tiny import build_transformer, write_stack

    folder = build_transformer(tmp_path_factory.mktemp("lc-prompted") / "bert", "bert")
    return write_stack(
        folder,
        pooling="mean",
        normalize=False,
        similarity_fn_name="dot",
        prompts={"query": "query: ", "document": "passage: "},
    )


def _st_floats(folder, texts, **kwargs):
    from sentence_transformers import SentenceTransformer

    return np.array(SentenceTransformer(str(folder), device="cpu").encode(texts, **kwargs).tolist(), np.float32)


@pytest.mark.parametrize(
    "encode_kwargs, query_encode_kwargs",
    [
        ({}, {}),
        ({"normalize_embeddings": True, "batch_size": 2}, {}),
        ({"prompt_name": "document", "truncate_dim": 8}, {"prompt": "search: ", "truncate_dim": 8}),
        ({"convert_to_tensor": True}, {"convert_to_numpy": False}),
    ],
    ids=["none", "docs-only", "both", "tensors"],
)
def test_huggingface_embeddings_arguments(prompted_dir, tiny_cache, encode_kwargs, query_encode_kwargs):
    """HuggingFaceEmbeddings(model_name=..., model_kwargs=..., encode_kwargs=..., query_encode_kwargs=...)
    ports by renaming the class; explicit kwargs give sentence-transformers' vectors for those kwargs, and
    without a prompt in them documents and queries get the model's prompts (encode_document / encode_query)."""
    import asyncio

    lc = EngineEmbeddings(
        model_name=str(prompted_dir),
        model_kwargs={"device": "cpu", "cache_dir": tiny_cache},
        encode_kwargs=encode_kwargs,
        query_encode_kwargs=query_encode_kwargs,
    )
    docs, query = lc.embed_documents(TEXTS), lc.embed_query(TEXTS[0])
    assert all(type(v) is list and type(v[0]) is float for v in docs) and type(query[0]) is float
    ref_kwargs = []
    for kwargs, prompt_name in ((encode_kwargs, "document"), (query_encode_kwargs or encode_kwargs, "query")):
        kwargs = {k: v for k, v in kwargs.items() if k not in ("convert_to_tensor", "convert_to_numpy")}
        if "prompt" not in kwargs:
            kwargs.setdefault("prompt_name", prompt_name)
        ref_kwargs.append(kwargs)
    doc_kwargs, query_kwargs = ref_kwargs
    ref_docs = _st_floats(prompted_dir, TEXTS, **doc_kwargs)
    ref_query = _st_floats(prompted_dir, TEXTS[0], **query_kwargs)
    np.testing.assert_allclose(np.array(docs, np.float32), ref_docs, rtol=1e-4, atol=1e-4 * np.abs(ref_docs).max())
    np.testing.assert_allclose(np.array(query, np.float32), ref_query, rtol=1e-4, atol=1e-4 * np.abs(ref_query).max())
    adocs, aquery = asyncio.run(_both(lc))
    assert adocs == docs and aquery == query


@pytest.fixture(scope="module")
def cosine_dir(prompted_dir, tmp_path_factory):
    """prompted_dir's BERT as a cosine model (the default similarity) without Normalize: raw vectors not unit."""
    import shutil

    from tests.st_tiny import write_stack

    folder = shutil.copytree(prompted_dir, tmp_path_factory.mktemp("lc-cosine") / "bert")
    return write_stack(folder, pooling="mean", normalize=False, prompts={"query": "query: ", "document": "passage: "})


def test_default_is_huggingface_embeddings_default_for_a_cosine_model(cosine_dir, tiny_cache):
    """HuggingFaceEmbeddings' encode_kwargs default to normalize_embeddings=False: the model's output, also for a
    cosine model; normalize_embeddings=True in the kwargs gives unit vectors, as there."""
    plain = EngineEmbeddings(model_name=str(cosine_dir), model_kwargs={"cache_dir": tiny_cache})
    docs, query = np.array(plain.embed_documents(TEXTS), np.float32), np.array(plain.embed_query(TEXTS[0]), np.float32)
    ref_docs = _st_floats(cosine_dir, TEXTS, prompt_name="document", normalize_embeddings=False)
    ref_query = _st_floats(cosine_dir, TEXTS[0], prompt_name="query", normalize_embeddings=False)
    assert np.abs(np.linalg.norm(ref_docs, axis=1) - 1).min() > 0.1
    np.testing.assert_allclose(docs, ref_docs, rtol=1e-4, atol=1e-4 * np.abs(ref_docs).max())
    np.testing.assert_allclose(query, ref_query, rtol=1e-4, atol=1e-4 * np.abs(ref_query).max())
    unit = EngineEmbeddings(
        model_name=str(cosine_dir), model_kwargs={"cache_dir": tiny_cache}, encode_kwargs={"normalize_embeddings": True}
    )
    ref_unit = _st_floats(cosine_dir, TEXTS, prompt_name="document", normalize_embeddings=True)
    np.testing.assert_allclose(np.array(unit.embed_documents(TEXTS), np.float32), ref_unit, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(unit.embed_query(TEXTS[0])), 1, atol=1e-5)


def test_show_progress(lc, tiny_model_dir, tiny_cache, capsys):
    shown = EngineEmbeddings(model=str(tiny_model_dir), cache_dir=tiny_cache, show_progress=True)
    assert shown.embed_documents(TEXTS) == lc.embed_documents(TEXTS)
    assert "encode" in capsys.readouterr().err


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"encode_kwargs": {"normalise": True}}, r"unexpected keyword argument\(s\) normalise"),
        ({"query_encode_kwargs": {"prompt_name": "nope"}}, "prompt_name 'nope' is not one of the model's prompts"),
        ({"encode_kwargs": {"batch_size": 0}}, "batch_size must be a positive integer"),
        ({"model_name": "other-model"}, "name two models; pass one"),
        ({"model_kwargs": {"cache_dir": "x"}}, "cache_dir given both in model_kwargs and as keywords"),
    ],
    ids=["unknown", "prompt", "batch", "two-models", "twice"],
)
def test_bad_arguments_fail_at_construction(tiny_model_dir, tiny_cache, kwargs, match):
    with pytest.raises(InputError, match=match):
        EngineEmbeddings(model=str(tiny_model_dir), cache_dir=tiny_cache, **kwargs)
