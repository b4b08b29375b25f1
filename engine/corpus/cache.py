"""A persistent, content-addressed embedding cache in SQLite (standard library): the engine's one cache.

``embed encode`` (the corpus driver) and ``embed eval/compare/select --embeddings-cache`` (through
``encode_cached``) read and write the same rows: the same text under the same model settings is
embedded once. A vector is stored under ``(namespace, text_key(text))`` (sha256 of the exact text,
``engine.corpus.readers.text_key``); a namespace is one combination of model fingerprint,
precision, truncate_dim, the normalization applied and the prompt text prepended to every text
(``""``: none), so vectors of different models, settings or prompts never mix (schema 2; a schema
1 file is migrated when opened, its namespaces getting the empty prompt they were embedded with).
Vectors are float32 BLOBs. The database runs in WAL mode: readers never block each other or a
writer, and each process opens its own connection. Lookups and inserts are batched.

A cached vector is the one the model produced when the text was first embedded, and a hit returns
it exactly (the same text embedded again in another batch can differ in the last bits).

The file is untrusted, being only a cache (``EmbeddingCache`` gives the rules): an invalid stored
row is a miss, a file that is not an engine cache is refused and left as it is, a damaged cache is
moved aside (never deleted) and a new one started, and damage found during a run never fails it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..errors import EngineError, InputError
from .readers import text_key
from .shards import stored_normalized

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2  # 2: namespaces have a prompt (version 1 files are migrated, their rows under "")
LOOKUP_CHUNK = 500  # keys per SELECT ... IN (...); well under SQLite's variable limit
UNIT_TOLERANCE = 1e-3  # a stored row of a normalized namespace with | |v|^2 - 1 | above this is a miss
_CORRUPT = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
_WHY = {  # SQLite primary result code -> what to do
    sqlite3.SQLITE_BUSY: "another process holds it locked; wait for it to finish",
    sqlite3.SQLITE_LOCKED: "another connection holds it locked; wait for it to finish",
    sqlite3.SQLITE_READONLY: "it is read-only; make it (and its folder) writable",
    sqlite3.SQLITE_FULL: "the disk is full; free some space",
    sqlite3.SQLITE_CANTOPEN: "check that its folder exists and is writable",
    sqlite3.SQLITE_PERM: "check its permissions",
    sqlite3.SQLITE_IOERR: "check the disk",
}

_NAMESPACES = """
CREATE TABLE IF NOT EXISTS namespaces (
    id INTEGER PRIMARY KEY,
    model TEXT NOT NULL,
    precision TEXT NOT NULL,
    truncate_dim INTEGER NOT NULL,  -- 0: full dimension
    normalize INTEGER NOT NULL,
    dim INTEGER NOT NULL,
    prompt TEXT NOT NULL DEFAULT '',  -- the text prepended to every text ('' for none)
    UNIQUE (model, precision, truncate_dim, normalize, prompt)
);
"""
_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID;
"""
    + _NAMESPACES
    + """
CREATE TABLE IF NOT EXISTS vectors (
    ns INTEGER NOT NULL,
    sha BLOB NOT NULL,              -- sha256 of the exact text, UTF-8
    vec BLOB NOT NULL,              -- float32, little-endian, dim values
    PRIMARY KEY (ns, sha)
) WITHOUT ROWID;
"""
)


def default_cache_path(cache_dir: str | os.PathLike | None = None) -> Path:
    """``<engine cache root>/embeddings.sqlite`` (``$EMBED_ENGINE_CACHE`` or ~/.cache/embed-engine)."""
    from ..models.fetch import cache_root

    return cache_root(cache_dir) / "embeddings.sqlite"


class EmbeddingCache:
    """Text -> vector cache. Use one instance per process (or thread); it is a context manager.

    ``rejected_rows``: stored rows found invalid and served as misses; ``disabled``: the database
    was found damaged during this instance's life and set aside. The file is untrusted:

    * A stored row of the wrong byte length, with a non-finite value, or (in a normalized
      namespace) not of unit length (``| |v|^2 - 1 | > UNIT_TOLERANCE``) is a miss, counted in
      ``rejected_rows``; the fresh vector replaces it on ``put``.
    * A file that is not an engine cache (not SQLite, or another program's SQLite database) is
      refused (``InputError``) and left as it is: ``--cache`` pointed at the wrong file.
    * A damaged cache (an SQLite file that SQLite reports corrupt) found when the cache is opened
      is moved aside, never deleted: renamed ``<name>.corrupt-<YYYYmmddTHHMMSS>`` (its
      ``-wal``/``-shm`` files alike), and a new cache is started, with a warning in the log.
    * Damage found later, by a lookup or an insert, must not fail the run: the file is moved aside
      the same way (unless another process already did), one warning is logged, and this instance
      goes on without a database (``disabled``): every lookup is a miss, inserts are dropped. The
      next one opened on the path starts a new cache.
    * Any other SQLite error (locked past ``timeout``, read-only, disk full, cannot open) is an
      ``EngineError`` naming the file and what to do.

    >>> with EmbeddingCache(path) as cache:
    ...     ns = cache.namespace(emb.fingerprint, "fp32", None, dim=384)
    ...     vecs, found = cache.get(ns, keys)
    ...     cache.put(ns, [k for k, f in zip(keys, found) if not f], new_vectors)
    """

    def __init__(self, path: str | os.PathLike | None = None, timeout: float = 60.0):
        self.path = Path(path) if path is not None else default_cache_path()
        self.timeout = timeout
        self.rejected_rows = 0
        self.disabled = False
        self._namespaces: dict[int, tuple[int, bool]] = {}  # id -> (dim, normalize)
        self._ids: dict[tuple, int] = {}  # namespace key -> id, as handed out
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise EngineError(
                f"cannot create the folder of the embedding cache {self.path}: {e.strerror or e}; "
                "pass another path (--cache PATH) or --no-cache"
            ) from e
        _refuse_foreign(self.path)
        try:
            self._db = self._connect()
        except sqlite3.DatabaseError as e:
            if _code(e) not in _CORRUPT:
                raise self._error(e, "open it") from e
            moved = self._move_aside()
            try:
                self._db = self._connect()
            except sqlite3.DatabaseError as e2:
                raise self._error(e2, "start a new one") from e2
            log.warning(
                "embedding cache %s was damaged (%s): moved it to %s and started a new one; texts not "
                "cached yet are embedded again",
                self.path,
                e,
                moved,
            )

    def _connect(self) -> sqlite3.Connection:
        self._identity = _identity(self.path)
        db = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        try:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if tables and "meta" not in tables:  # another program's database: never written to
                raise InputError(
                    _foreign_message(self.path, f"an SQLite database with the tables {', '.join(sorted(tables)[:5])}")
                )
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable at checkpoints, never corrupt
            db.executescript(_SCHEMA)  # idempotent; each statement is atomic
            db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            (version,) = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if str(version) == "1":
                version = _migrate_v1(db)
        except BaseException:
            db.close()
            raise
        if self._identity is None:  # sqlite made the file
            self._identity = _identity(self.path)
        if str(version) != str(SCHEMA_VERSION):
            db.close()
            raise InputError(
                f"embedding cache {self.path} has schema {version}, this engine reads {SCHEMA_VERSION}; "
                "delete it or pass another path with --cache"
            )
        return db

    @contextmanager
    def _transaction(self):
        self._db.execute("BEGIN IMMEDIATE")  # take the write lock now: no upgrade deadlock later
        try:
            yield
        except BaseException:
            if self._db.in_transaction:  # SQLite may have rolled back itself (disk full, corruption)
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def namespace(
        self,
        model: str,
        precision: str,
        truncate_dim: int | None,
        dim: int,
        normalize: bool = True,
        prompt: str | None = None,
    ) -> int:
        """The id of the (model fingerprint, precision, truncate_dim, normalize, prompt) space; created if new.

        ``dim`` is the stored vectors' length (truncate_dim when given); ``normalize`` whether the
        vectors were L2-normalized; ``prompt`` the text prepended to every text before embedding
        (None or ``""``: none, the namespaces of schema 1).
        """
        if prompt is not None and not isinstance(prompt, str):
            raise InputError(f"prompt must be a string or None, got {type(prompt).__name__}")
        key = (model, precision, int(truncate_dim or 0), int(bool(normalize)), prompt or "")
        if not self.disabled:
            try:
                with self._transaction():
                    self._db.execute(
                        "INSERT OR IGNORE INTO namespaces (model, precision, truncate_dim, normalize, "
                        "prompt, dim) VALUES (?,?,?,?,?,?)",
                        (*key, int(dim)),
                    )
                    ns, stored_dim = self._db.execute(
                        "SELECT id, dim FROM namespaces WHERE model=? AND precision=? AND truncate_dim=? AND "
                        "normalize=? AND prompt=?",
                        key,
                    ).fetchone()
            except sqlite3.DatabaseError as e:
                self._damaged(e, "add a namespace to it")
        if self.disabled:  # the id handed out before, or a stand-in: lookups miss, inserts are dropped
            ns, stored_dim = self._ids.setdefault(key, -1 - sum(i < 0 for i in self._ids.values())), dim
        if stored_dim != dim:
            raise InputError(
                f"embedding cache {self.path}: {model} was cached with dim {stored_dim}, now {dim}; "
                "the model changed without changing its fingerprint. Delete the cache file."
            )
        self._namespaces[ns] = (stored_dim, bool(normalize))
        self._ids[key] = ns
        return ns

    def get(self, ns: int, keys: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
        """(vectors (n, dim) float32, found bool (n,)); rows of keys not found (or rejected) are zero."""
        dim, normalize = self._space(ns)
        out = np.zeros((len(keys), dim), dtype=np.float32)
        found = np.zeros(len(keys), dtype=bool)
        if self.disabled:
            return out, found
        where: dict[bytes, list[int]] = {}
        for i, k in enumerate(keys):
            where.setdefault(k, []).append(i)
        unique = list(where)
        try:
            for start in range(0, len(unique), LOOKUP_CHUNK):
                part = unique[start : start + LOOKUP_CHUNK]
                marks = ",".join("?" * len(part))
                rows = self._db.execute(
                    f"SELECT sha, vec FROM vectors WHERE ns=? AND sha IN ({marks})", (ns, *part)
                ).fetchall()
                self._fill(rows, where, dim, normalize, out, found)
        except sqlite3.DatabaseError as e:
            self._damaged(e, "read from it")
            out[:], found[:] = 0, False
        return out, found

    def _fill(self, rows, where: dict[bytes, list[int]], dim: int, normalize: bool, out, found) -> None:
        """Copy the valid stored rows to their places in out; count the others in rejected_rows."""
        sized = [
            (where[sha], vec) for sha, vec in rows if isinstance(vec, bytes) and len(vec) == dim * 4 and sha in where
        ]
        self.rejected_rows += len(rows) - len(sized)
        if not sized:
            return
        vecs = np.frombuffer(b"".join(v for _, v in sized), dtype="<f4").reshape(len(sized), dim)
        with np.errstate(over="ignore", invalid="ignore"):
            ok = np.isfinite(vecs).all(axis=1)
            if normalize:
                ok &= np.abs(np.einsum("ij,ij->i", vecs, vecs, dtype=np.float64) - 1.0) <= UNIT_TOLERANCE
        self.rejected_rows += int(len(ok) - ok.sum())
        good = np.flatnonzero(ok).tolist()
        dst = [i for r in good for i in sized[r][0]]
        src = [r for r in good for _ in sized[r][0]]
        out[dst] = vecs[src]
        found[dst] = True

    def put(self, ns: int, keys: Sequence[bytes], vectors: np.ndarray) -> None:
        """Store vectors (n, dim) under keys, in one transaction; existing keys are replaced."""
        dim, _ = self._space(ns)
        vectors = np.ascontiguousarray(vectors, dtype="<f4")
        if vectors.shape != (len(keys), dim):
            raise InputError(f"put: vectors have shape {vectors.shape}, expected ({len(keys)}, {dim})")
        if not len(keys) or self.disabled:
            return
        try:
            with self._transaction():
                self._db.executemany(
                    "INSERT OR REPLACE INTO vectors (ns, sha, vec) VALUES (?,?,?)",
                    ((ns, k, v.tobytes()) for k, v in zip(keys, vectors)),
                )
        except sqlite3.DatabaseError as e:
            self._damaged(e, "write to it")

    def count(self, ns: int | None = None) -> int:
        """Rows stored (in namespace ns); 0 once disabled."""
        if self.disabled:
            return 0
        try:
            if ns is None:
                return self._db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
            return self._db.execute("SELECT COUNT(*) FROM vectors WHERE ns=?", (ns,)).fetchone()[0]
        except sqlite3.DatabaseError as e:
            self._damaged(e, "count its rows")
            return 0

    def _space(self, ns: int) -> tuple[int, bool]:
        """(dim, normalize) of namespace ns."""
        if ns not in self._namespaces and not self.disabled:
            try:
                row = self._db.execute("SELECT dim, normalize FROM namespaces WHERE id=?", (ns,)).fetchone()
            except sqlite3.DatabaseError as e:
                self._damaged(e, "read from it")
                row = None
            if row is not None:
                self._namespaces[ns] = (row[0], bool(row[1]))
        if ns not in self._namespaces:
            raise InputError(f"unknown cache namespace {ns}; get one from EmbeddingCache.namespace(...)")
        return self._namespaces[ns]

    def _damaged(self, e: sqlite3.DatabaseError, doing: str) -> None:
        """A database error during the run: corruption disables the cache (class docstring), others raise."""
        if _code(e) not in _CORRUPT:
            raise self._error(e, doing) from e
        self.disabled = True
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        try:
            moved = self._move_aside()
        except EngineError as why:
            moved = f"nowhere ({why}); delete it"
        log.warning(
            "embedding cache %s is damaged (%s): this run goes on without it (every text is embedded); "
            "moved it to %s, so the next run starts a new cache",
            self.path,
            e,
            moved,
        )

    def _move_aside(self) -> Path | str:
        """Rename the damaged file and its -wal/-shm files to <name>.corrupt-<time>; never delete them."""
        if _identity(self.path) != self._identity:
            return "(already moved by another process)"
        stamp = time.strftime("%Y%m%dT%H%M%S")
        target, n = self.path.with_name(f"{self.path.name}.corrupt-{stamp}"), 1
        while target.exists():
            target, n = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}"), n + 1
        try:
            os.rename(self.path, target)
            for suffix in ("-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.rename(f"{self.path}{suffix}", f"{target}{suffix}")
        except OSError as e:
            raise EngineError(
                f"embedding cache {self.path} is damaged and cannot be moved aside ({e.strerror or e}); "
                "delete it, or pass another path (--cache PATH) or --no-cache"
            ) from e
        return target

    def _error(self, e: sqlite3.Error, doing: str) -> EngineError:
        code = _code(e)
        why = "" if code is None else _WHY.get(code, "")
        return EngineError(
            f"embedding cache {self.path}: cannot {doing}: {e}; {why + ', or ' if why else ''}"
            "pass another path (--cache PATH) or --no-cache"
        )

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> EmbeddingCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EmbeddingCache({str(self.path)!r})"


def _migrate_v1(db: sqlite3.Connection) -> str:
    """Schema 1 -> 2 in one transaction: namespaces get a prompt column, the old ones the empty
    prompt (what they were embedded with). Another process may have migrated first: re-read."""
    db.execute("BEGIN IMMEDIATE")
    try:
        (version,) = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        if str(version) == "1":
            db.execute("ALTER TABLE namespaces RENAME TO namespaces_v1")
            db.execute(_NAMESPACES)
            db.execute(
                "INSERT INTO namespaces (id, model, precision, truncate_dim, normalize, dim, prompt) "
                "SELECT id, model, precision, truncate_dim, normalize, dim, '' FROM namespaces_v1"
            )
            db.execute("DROP TABLE namespaces_v1")
            db.execute("UPDATE meta SET value=? WHERE key='schema'", (str(SCHEMA_VERSION),))
            version = str(SCHEMA_VERSION)
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return version


_SQLITE_HEADER = b"SQLite format 3\x00"


def _refuse_foreign(path: Path) -> None:
    """An InputError for an existing file that is not SQLite (a corpus, a results file passed as
    --cache by mistake): only a damaged *cache* is moved aside, any other file is left as it is.
    An empty file (just created) is fine."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(_SQLITE_HEADER))
    except OSError:  # absent (a new cache), or unreadable: sqlite reports that
        return
    if head and head != _SQLITE_HEADER:
        raise InputError(_foreign_message(path, "not an SQLite file"))


def _foreign_message(path: Path, what: str) -> str:
    return (
        f"{path} is not an embedding cache ({what}); it is left as it is. Pass the path of an existing "
        "cache or of a new file to create one (--cache PATH), or --no-cache"
    )


def _code(e: sqlite3.Error) -> int | None:
    """SQLite's primary result code of e (extended codes carry it in the low byte)."""
    code = getattr(e, "sqlite_errorcode", None)
    return None if code is None else code & 0xFF


def _identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the file at path, or None: tells whether it is still the file opened."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def open_cache(path: str | os.PathLike) -> EmbeddingCache:
    """The cache in the SQLite file ``path``; a folder (one that exists, or a path ending in a
    separator) means ``path/embeddings.sqlite``."""
    folder = os.fspath(path).endswith(("/", os.sep))
    path = Path(path).expanduser()
    return EmbeddingCache(path / "embeddings.sqlite" if folder or path.is_dir() else path)


def encode_cached(
    embedder,
    texts: Sequence[str],
    cache: EmbeddingCache | str | os.PathLike | None = None,
    batch_size: int = 32,
    prompt: str | None = None,
    normalize: bool | None = None,
) -> np.ndarray:
    """Full-dimension vectors of ``texts`` (``embedder.encode``), reusing the cached ones.

    ``cache``: None (encode everything), an open ``EmbeddingCache``, or a path for ``open_cache``.
    ``prompt``: the prompt text to prepend (``encode(prompt=...)``); None: ``encode``'s default
    (no prompt unless the model has a default prompt name; the eval callers' case).
    ``normalize``: L2-normalize (``encode(normalize_embeddings=...)``); None: the rule of the
    vectors ``embed encode`` stores (``shards.stored_normalized``: unit vectors for a cosine
    model, the model's output for others). A duck-typed embedder (no ``stack``) is called with
    batch_size and prompt only, its vectors taken as they come (unit ones unless ``normalize=False``).
    Vectors live in the namespace (fingerprint, precision, truncate_dim=None, dim, the
    normalization applied, the prompt actually prepended), under ``text_key(text)``: the rows
    ``embed encode`` writes without truncation for that prompt, and never the rows of the other
    normalization. Only the missing texts are encoded, each distinct text once, and stored.
    Truncations are derived from these full vectors by the callers.

    >>> vecs = encode_cached(emb, ["a", "b", "a"], "vectors.sqlite")   # (3, emb.dim); "a" encoded once
    """
    stack = getattr(embedder, "stack", None)  # an Embedder; duck-typed embedders: cosine, no default prompt
    if normalize is None:
        normalize = stored_normalized(getattr(stack, "similarity_fn_name", "cosine"))
    kwargs: dict[str, str | bool] = {} if prompt is None else {"prompt": prompt}
    if stack is not None:
        kwargs["normalize_embeddings"] = bool(normalize)
    if cache is None:
        return embedder.encode(list(texts), batch_size=batch_size, **kwargs)
    if not isinstance(cache, EmbeddingCache):
        with open_cache(cache) as store:
            return encode_cached(embedder, texts, store, batch_size, prompt, normalize)
    resolve = getattr(embedder, "resolve_prompt", None)
    used = resolve(prompt) if resolve is not None else prompt  # the text encode prepends
    ns = cache.namespace(embedder.fingerprint, embedder.precision, None, embedder.dim, normalize=normalize, prompt=used)
    keys = [text_key(t) for t in texts]
    out, found = cache.get(ns, keys)
    missing = np.flatnonzero(~found)
    first: dict[bytes, int] = {}  # each missing text -> its first row
    for j in missing:
        first.setdefault(keys[j], int(j))
    if first:
        rows = list(first.values())
        new = embedder.encode([texts[j] for j in rows], batch_size=batch_size, **kwargs)
        cache.put(ns, list(first), new)
        out[rows] = new
        out[missing] = out[[first[keys[j]] for j in missing]]
    return out
