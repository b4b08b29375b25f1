"""LangChain embeddings backed by the engine: ``EngineEmbeddings`` (needs the ``langchain`` extra).

    >>> from engine.integrations.langchain import EngineEmbeddings
    >>> emb = EngineEmbeddings(model="all-MiniLM-L6-v2", threads=4)
    >>> len(emb.embed_query("what is numba?")), len(emb.embed_documents(["a", "b"]))
    (384, 2)

Use it wherever LangChain takes an ``Embeddings`` (vector stores, retrievers), e.g.
``InMemoryVectorStore(EngineEmbeddings())``. It takes ``langchain_huggingface.HuggingFaceEmbeddings``'
arguments too, so ``HuggingFaceEmbeddings(model_name=..., model_kwargs={"device": "cpu"},
encode_kwargs={"normalize_embeddings": True})`` ports by changing the class name.
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
        model (or ``model_name``, HuggingFaceEmbeddings' name): catalogue name or alias
            (``embed models``), or a local sentence-transformers folder.
        model_kwargs: a dict of ``engine.Embedder`` arguments (``device``, ``model_precision``,
            ``threads``, ``cache_dir``, ``prompts``, ``truncate_dim``, ...); they may also be given
            as keywords here.
        encode_kwargs: ``encode`` keywords for documents (``batch_size``, ``normalize_embeddings``,
            ``prompt_name``, ``truncate_dim``, ...); checked here, so a wrong one fails at construction.
        query_encode_kwargs: the same for queries; empty: ``encode_kwargs`` (HuggingFaceEmbeddings' rule).
        show_progress: a progress bar while embedding documents.
        **embedder_kwargs: ``engine.Embedder`` arguments, as in ``model_kwargs``.

    Raises:
        InputError: ``model`` and ``model_name`` name two models, an argument is given both in
            ``model_kwargs`` and as a keyword, or an encode keyword is wrong (``Embedder.encode``'s
            checks); the Embedder's own errors (an unknown model, a missing provider) as it raises them.

    The Embedder is built here, at construction: a wrong model name or a missing provider fails
    now rather than at the first query, the first-use export happens once, and the embed methods
    (including LangChain's async ones, which run the sync methods on executor threads; onnxruntime
    sessions are thread-safe) share one loaded model without locking. It is the ``embedder``
    attribute, for tuning (``batch_workers``, ``max_cells``) or for ``encode`` options.

    Queries go through ``Embedder.encode_query`` and documents through ``encode_document`` (the
    model's query/document prompts unless the kwargs name one), or through ``encode`` where the
    Embedder has no such method. Vectors are float32 values as Python floats: the model's output,
    as HuggingFaceEmbeddings gives it (its default encode_kwargs hold normalize_embeddings=False),
    unit length only for a model ending in a Normalize module; pass
    ``encode_kwargs={"normalize_embeddings": True}`` (and the same in ``query_encode_kwargs`` when
    given) for unit vectors, e.g. for a vector store that scores by inner product. Differences
    from HuggingFaceEmbeddings: it sends every text through
    plain ``encode`` (no model prompts unless the kwargs give one) and replaces newlines with
    spaces first; this class embeds texts as given. ``multi_process`` and ``cache_folder`` are not
    taken (batches run on worker threads; the export cache is ``cache_dir``).
    """

    def __init__(
        self,
        model: str | os.PathLike = DEFAULT_MODEL,
        *,
        model_name: str | os.PathLike | None = None,
        model_kwargs: dict | None = None,
        encode_kwargs: dict | None = None,
        query_encode_kwargs: dict | None = None,
        show_progress: bool = False,
        **embedder_kwargs,
    ) -> None:
        from ..embedder import Embedder

        if model_name is not None:
            if model not in (DEFAULT_MODEL, model_name):
                raise InputError(f"model={model!r} and model_name={model_name!r} name two models; pass one")
            model = model_name
        both = sorted(set(model_kwargs or {}) & set(embedder_kwargs))
        if both:
            raise InputError(f"{', '.join(both)} given both in model_kwargs and as keywords; pass each once")
        self.model = model
        self.encode_kwargs = dict(encode_kwargs or {})
        self.query_encode_kwargs = dict(query_encode_kwargs or {})
        self.show_progress = bool(show_progress)
        self.embedder = Embedder(model, **(model_kwargs or {}), **embedder_kwargs)
        for kwargs in (self.encode_kwargs, self.query_encode_kwargs):
            self.embedder._plan(**kwargs)  # the Embedder's own argument checks, now rather than per call

    def __repr__(self) -> str:
        return f"EngineEmbeddings({self.embedder!r})"

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """One vector (a list of dim floats) per text, in order; a single string is an InputError."""
        if isinstance(texts, str):
            raise InputError("embed_documents takes a list of strings; for one text use embed_query or pass [text]")
        texts = list(texts)
        if not texts:
            return []
        kwargs = {"show_progress_bar": True, **self.encode_kwargs} if self.show_progress else self.encode_kwargs
        encode = getattr(self.embedder, "encode_document", self.embedder.encode)
        return _floats(encode(texts, **kwargs))

    def embed_query(self, text: str) -> list[float]:
        """The vector of one query text, a list of dim floats; a non-string is an InputError."""
        if not isinstance(text, str):
            raise InputError(f"embed_query takes one string, got {type(text).__name__}; for a list use embed_documents")
        encode = getattr(self.embedder, "encode_query", self.embedder.encode)
        return _floats(encode(text, **(self.query_encode_kwargs or self.encode_kwargs)))


def _floats(vectors) -> list:
    """Python lists of numbers from encode's output: an array, a tensor, or a list of tensors
    (convert_to_numpy=False, which HuggingFaceEmbeddings refuses)."""
    return [v.tolist() for v in vectors] if isinstance(vectors, list) else vectors.tolist()
