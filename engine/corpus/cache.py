"""A persistent, content-addressed embedding cache in SQLite (standard library): the engine's one cache.

``embed encode`` (the corpus driver) and ``embed eval/compare/select --embeddings-cache`` (through
``encode_cached``) read and write the same rows: the same text under the same model settings is
embedded once. A vector is stored under ``(namespace, text_key(text))`` (sha256 of the exact text,
``engine.corpus.readers.text_key``); a namespace is one combination of
model fingerprint, precision, truncate_dim and normalization, so vectors of different models or
settings never mix. Vectors are float32 BLOBs. The database runs in WAL mode: readers never
block each other or a writer, and each process opens its own connection. Lookups and inserts
are batched (one statement per few hundred keys, one transaction per insert batch).

A cached vector is the one the model produced when the text was first embedded. Within a batch
onnxruntime pads texts to the longest one, so re-embedding the same text in another batch can
differ in the last bits (~1e-7); a cache hit returns the first result, exactly. A stored row of
the wrong length or with a non-finite value counts as a miss (and is rewritten when that text is
embedded again).
"""
from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..errors import InputError
from .readers import text_key

SCHEMA_VERSION = 1
LOOKUP_CHUNK = 500  # keys per SELECT ... IN (...); well under SQLite's variable limit

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS namespaces (
    id INTEGER PRIMARY KEY,
    model TEXT NOT NULL,
    precision TEXT NOT NULL,
    truncate_dim INTEGER NOT NULL,  -- 0: full dimension
    normalize INTEGER NOT NULL,
    dim INTEGER NOT NULL,
    UNIQUE (model, precision, truncate_dim, normalize)
);
CREATE TABLE IF NOT EXISTS vectors (
    ns INTEGER NOT NULL,
    sha BLOB NOT NULL,              -- sha256 of the exact text, UTF-8
    vec BLOB NOT NULL,              -- float32, little-endian, dim values
    PRIMARY KEY (ns, sha)
) WITHOUT ROWID;
"""


def default_cache_path(cache_dir: str | os.PathLike | None = None) -> Path:
    """``<engine cache root>/embeddings.sqlite`` (``$EMBED_ENGINE_CACHE`` or ~/.cache/embed-engine)."""
    from ..models.fetch import cache_root

    return cache_root(cache_dir) / "embeddings.sqlite"


class EmbeddingCache:
    """Text -> vector cache. Use one instance per process (or thread); it is a context manager.

    >>> with EmbeddingCache(path) as cache:
    ...     ns = cache.namespace(emb.fingerprint, "fp32", None, dim=384)
    ...     vecs, found = cache.get(ns, keys)
    ...     cache.put(ns, [k for k, f in zip(keys, found) if not f], new_vectors)
    """

    def __init__(self, path: str | os.PathLike | None = None, timeout: float = 60.0):
        self.path = Path(path) if path is not None else default_cache_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable at checkpoints, never corrupt
            self._db.executescript(_SCHEMA)  # idempotent; each statement is atomic
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            (version,) = self._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        except sqlite3.DatabaseError as e:
            raise InputError(f"cannot open the embedding cache {self.path}: {e}. Delete the file to start a new "
                             "cache, or pass another path (--cache PATH) or --no-cache") from e
        if int(version) != SCHEMA_VERSION:
            raise InputError(f"embedding cache {self.path} has schema {version}, this engine reads {SCHEMA_VERSION}; "
                             "delete it or pass another path with --cache")
        self._namespaces: dict[int, int] = {}

    @contextmanager
    def _transaction(self):
        self._db.execute("BEGIN IMMEDIATE")  # take the write lock now: no upgrade deadlock later
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def namespace(self, model: str, precision: str, truncate_dim: int | None, dim: int, normalize: bool = True) -> int:
        """The id of the (model fingerprint, precision, truncate_dim, normalize) space; created if new.

        ``dim`` is the stored vectors' length (truncate_dim when given).
        """
        key = (model, precision, int(truncate_dim or 0), int(bool(normalize)))
        with self._transaction():
            self._db.execute(
                "INSERT OR IGNORE INTO namespaces (model, precision, truncate_dim, normalize, dim) VALUES (?,?,?,?,?)",
                (*key, int(dim)),
            )
            ns, stored_dim = self._db.execute(
                "SELECT id, dim FROM namespaces WHERE model=? AND precision=? AND truncate_dim=? AND normalize=?", key
            ).fetchone()
        if stored_dim != dim:
            raise InputError(f"embedding cache {self.path}: {model} was cached with dim {stored_dim}, now {dim}; "
                             "the model changed without changing its fingerprint. Delete the cache file.")
        self._namespaces[ns] = stored_dim
        return ns

    def get(self, ns: int, keys: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
        """(vectors (n, dim) float32, found bool (n,)); rows of keys not found are zero."""
        dim = self._dim(ns)
        out = np.zeros((len(keys), dim), dtype=np.float32)
        found = np.zeros(len(keys), dtype=bool)
        where: dict[bytes, list[int]] = {}
        for i, k in enumerate(keys):
            where.setdefault(k, []).append(i)
        unique = list(where)
        nbytes = dim * 4
        for start in range(0, len(unique), LOOKUP_CHUNK):
            part = unique[start : start + LOOKUP_CHUNK]
            marks = ",".join("?" * len(part))
            rows = self._db.execute(f"SELECT sha, vec FROM vectors WHERE ns=? AND sha IN ({marks})", (ns, *part))
            for sha, vec in rows:
                v = np.frombuffer(vec, dtype="<f4") if len(vec) == nbytes else None
                if v is None or not np.isfinite(v).all():  # a damaged row counts as a miss and is rewritten
                    continue
                for i in where[sha]:
                    out[i] = v
                    found[i] = True
        return out, found

    def put(self, ns: int, keys: Sequence[bytes], vectors: np.ndarray) -> None:
        """Store vectors (n, dim) under keys, in one transaction; existing keys are replaced."""
        dim = self._dim(ns)
        vectors = np.ascontiguousarray(vectors, dtype="<f4")
        if vectors.shape != (len(keys), dim):
            raise InputError(f"put: vectors have shape {vectors.shape}, expected ({len(keys)}, {dim})")
        if not len(keys):
            return
        with self._transaction():
            self._db.executemany(
                "INSERT OR REPLACE INTO vectors (ns, sha, vec) VALUES (?,?,?)",
                ((ns, k, v.tobytes()) for k, v in zip(keys, vectors)),
            )

    def count(self, ns: int | None = None) -> int:
        if ns is None:
            return self._db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
        return self._db.execute("SELECT COUNT(*) FROM vectors WHERE ns=?", (ns,)).fetchone()[0]

    def _dim(self, ns: int) -> int:
        if ns not in self._namespaces:
            row = self._db.execute("SELECT dim FROM namespaces WHERE id=?", (ns,)).fetchone()
            if row is None:
                raise InputError(f"unknown cache namespace {ns}; get one from EmbeddingCache.namespace(...)")
            self._namespaces[ns] = row[0]
        return self._namespaces[ns]

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> EmbeddingCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EmbeddingCache({str(self.path)!r})"


def open_cache(path: str | os.PathLike) -> EmbeddingCache:
    """The cache in the SQLite file ``path``; a folder (one that exists, or a path ending in a
    separator) means ``path/embeddings.sqlite``."""
    folder = os.fspath(path).endswith(("/", os.sep))
    path = Path(path).expanduser()
    return EmbeddingCache(path / "embeddings.sqlite" if folder or path.is_dir() else path)


def encode_cached(embedder, texts: Sequence[str], cache: EmbeddingCache | str | os.PathLike | None = None,
                  batch_size: int = 32) -> np.ndarray:
    """Full-dimension unit vectors of ``texts`` (``embedder.encode``), reusing the cached ones.

    ``cache``: None (encode everything), an open ``EmbeddingCache``, or a path for ``open_cache``.
    Vectors live in the namespace (fingerprint, precision, truncate_dim=None, dim), under
    ``text_key(text)``: the rows ``embed encode`` writes without truncation. Only the missing
    texts are encoded, each distinct text once, and stored. Truncations are derived from these
    full vectors by the callers.

    >>> vecs = encode_cached(emb, ["a", "b", "a"], "vectors.sqlite")   # (3, emb.dim); "a" encoded once
    """
    if cache is None:
        return embedder.encode(list(texts), batch_size=batch_size)
    if not isinstance(cache, EmbeddingCache):
        with open_cache(cache) as store:
            return encode_cached(embedder, texts, store, batch_size)
    ns = cache.namespace(embedder.fingerprint, embedder.precision, None, embedder.dim)
    keys = [text_key(t) for t in texts]
    out, found = cache.get(ns, keys)
    missing = np.flatnonzero(~found)
    first: dict[bytes, int] = {}  # each missing text -> its first row
    for j in missing:
        first.setdefault(keys[j], int(j))
    if first:
        rows = list(first.values())
        new = embedder.encode([texts[j] for j in rows], batch_size=batch_size)
        cache.put(ns, list(first), new)
        out[rows] = new
        out[missing] = out[[first[keys[j]] for j in missing]]
    return out
