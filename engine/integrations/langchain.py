"""LangChain embeddings backed by the engine: ``EngineEmbeddings`` (needs the ``langchain`` extra).

    >>> from engine.integrations.langchain import EngineEmbeddings
    >>> emb = EngineEmbeddings(model="all-MiniLM-L6-v2", threads=4)
    >>> len(emb.embed_query("what is numba?")), len(emb.embed_documents(["a", "b"]))
    (384, 2)

Use it wherever LangChain takes an ``Embeddings`` (vector stores, retrievers), e.g.
``InMemoryVectorStore(EngineEmbeddings())``.
"""
from __future__ import annotations

import os

from ..errors import InputError, missing_extra
from ..models import DEFAULT_MODEL

try:
    from langchain_core.embeddings import Embeddings
except ModuleNotFoundError as e:  # only a missing langchain_core, not a broken one
    if (e.name or "").split(".")[0] != "langchain_core":
        raise
    raise missing_extra("langchain-core", "langchain") from None

__all__ = ["EngineEmbeddings"]


class EngineEmbeddings(Embeddings):
    """``langchain_core.embeddings.Embeddings`` on an ``engine.Embedder``.

    Args:
        model: catalogue name or alias (``embed models``), or a local sentence-transformers folder.
        **embedder_kwargs: passed to ``engine.Embedder`` (``device``, ``model_precision``, ``threads``,
            ``cache_dir``, ...).

    The Embedder is built here, at construction: a wrong model name or a missing provider fails
    now rather than at the first query, the first-use export happens once, and the embed methods
    (including LangChain's async ones, which run the sync methods on executor threads; onnxruntime
    sessions are thread-safe) share one loaded model without locking. It is the ``embedder``
    attribute, for tuning (``batch_workers``, ``max_cells``) or for ``encode`` options.

    Queries go through ``Embedder.encode_query`` and documents through ``encode_document`` (the
    model's query/document prompts), or through ``encode`` where the Embedder has no such method.
    Vectors are the Embedder's defaults: float32 values as Python floats, unit length.
    """

    def __init__(self, model: str | os.PathLike = DEFAULT_MODEL, **embedder_kwargs) -> None:
        from ..embedder import Embedder

        self.model = model
        self.embedder = Embedder(model, **embedder_kwargs)

    def __repr__(self) -> str:
        return f"EngineEmbeddings({self.embedder!r})"

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """One vector (a list of dim floats) per text, in order."""
        if isinstance(texts, str):
            raise InputError("embed_documents takes a list of strings; for one text use embed_query or pass [text]")
        texts = list(texts)
        if not texts:
            return []
        encode = getattr(self.embedder, "encode_document", self.embedder.encode)
        return encode(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        """The vector of one query text, a list of dim floats."""
        if not isinstance(text, str):
            raise InputError(f"embed_query takes one string, got {type(text).__name__}; for a list use embed_documents")
        encode = getattr(self.embedder, "encode_query", self.embedder.encode)
        return encode(text).tolist()
