"""A flat (exact-scan) vector index by cosine or dot product: fp32, or int8 / binary codes with exact rescoring.

* **Metric** (``metric=``, the model's ``similarity_fn_name``, saved in the file). ``"cosine"``
  L2-normalizes rows and queries (copies) on ``add`` and ``search``, so raw and unit vectors give
  the same results and scores are cosines in [-1, 1]; ``"dot"`` keeps vectors as given and scores
  are inner products (zero vectors allowed; ``||v||^2 <= format.DOT_MAX_SQ``, so no score can
  overflow). "euclidean" and "manhattan" are refused with the workaround. NaN/inf, a wrong
  dimension and, for cosine, zero vectors (a norm below float32's smallest normal number) raise
  :class:`~engine.errors.InputError` naming the rows.
* **Results.** ``search(queries (nq, dim), k)`` returns ``(scores float32 (nq, k'), ids (nq, k'))``,
  ``k' = min(k, len(index))`` (no padding), best first, equal scores in insertion order; a 1-d
  query gives 1-d arrays. No non-finite score and no placeholder id ever leaves ``search``.
* **Ids.** int64 or str, one kind per index, unique. Default ids are running integers from
  ``len(index)`` while all ids are default, else after the largest id; string ids are explicit.
* **Model.** Known, differing fingerprints (the index's, the caller's) make ``add``, ``search`` and
  ``search_text`` raise :class:`~engine.errors.ModelMismatchError`; a model-less empty index adopts its first ``add``'s.
* **Precision** (:mod:`engine.index.codecs`). int8 and binary rank ``k * oversample`` candidates by
  their codes and re-rank them exactly against the fp32 rows: scores are exact for every precision.
  After ``Index.load(path, mmap=True)`` the fp32 rows stay memory-mapped (codes, scales and ids are
  resident) and a search reads only its candidates' rows.

Persistence (:mod:`engine.index.format`): one checksummed file; ``Index.load`` checks every value it
trusts unless ``mmap=True, verify=False`` (trusted files), and ``search`` still refuses a bad row then,
naming the file.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from engine.arguments import positive_int
from engine.errors import EngineError, IndexFormatError, InputError, ModelMismatchError
from engine.kernels.normalize import l2_normalize

from . import format as fmt
from .codecs import CODECS, DEFAULT_OVERSAMPLE, DEFAULT_OVERSAMPLE_BINARY
from .ids import check_unique, parse_ids

__all__ = ["DEFAULT_OVERSAMPLE", "DEFAULT_OVERSAMPLE_BINARY", "Index"]

PRECISIONS = fmt.PRECISIONS
METRICS = fmt.METRICS
# similarity functions of sentence-transformers the index cannot scan: what to do instead
_DISTANCES = ("euclidean", "manhattan")
TINY = float(np.finfo(np.float32).tiny)  # a row with a smaller norm is a zero vector
SMALL_SQ = 1e-30  # float32 squared norms below this may have underflowed: recomputed in float64
FLT_MAX = float(np.finfo(np.float32).max)


class Index:
    """Exact cosine- or dot-product-similarity index over fixed-dimension vectors.

    See the module docstring for the semantics of metrics, ids, models and precisions, and
    :mod:`engine.index.format` for the file.

    Args:
        dim: Dimension of the vectors.
        precision: How rows are stored and searched: "fp32", "int8" or "binary"
            (:mod:`engine.index.codecs`).
        model: Fingerprint of the embedder the vectors come from (``Embedder.fingerprint``),
            None if unknown.
        metric: "cosine" or "dot": the model's ``similarity_fn_name``.
        oversample: Candidates per result the int8 / binary first stage keeps for rescoring
            (default ``DEFAULT_OVERSAMPLE`` = 4 for int8, ``DEFAULT_OVERSAMPLE_BINARY`` = 40 for binary).
        scales: int8 per-dimension scales to use instead of calibrating them on the first ``add``.

    Raises:
        InputError: ``dim``, ``precision``, ``model``, ``metric`` (a distance names the
            workaround), ``oversample`` or ``scales`` (not int8, or not ``dim`` finite positive
            numbers) is invalid.
    """

    def __init__(
        self,
        dim: int,
        precision: str = "fp32",
        model: str | None = None,
        *,
        metric: str = "cosine",
        oversample: int | None = None,
        scales: np.ndarray | None = None,
    ) -> None:
        dim = positive_int(dim, "dim")
        if precision not in PRECISIONS:
            raise InputError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if model is not None and not isinstance(model, str):
            raise InputError(f"model must be a fingerprint string or None, got {type(model).__name__}")
        if metric in _DISTANCES:
            raise InputError(
                f"Index(metric={metric!r}): the index ranks by cosine or dot product, not by {metric} distance "
                f"(a model whose similarity_fn_name is {metric!r}). If the model is a cosine model trained with "
                f"{metric} similarity, encode with normalize=True and use metric='cosine' (for unit vectors "
                "euclidean distance ranks as cosine does); otherwise use an index that scans that distance "
                "(e.g. faiss IndexFlatL2)"
            )
        if metric not in METRICS:
            raise InputError(f"metric must be one of {METRICS} (the model's similarity_fn_name), got {metric!r}")
        self._metric = metric
        self._dim = int(dim)
        self._model = model
        codec = CODECS[precision]
        self._oversample = self._check_oversample(codec.default_oversample if oversample is None else oversample)
        self._n = 0
        self._vecs = np.empty((0, self._dim), np.float32)  # capacity buffer (or a memmap)
        self._codec = codec(self._dim, scales)  # the first-stage codes and what else the precision needs
        self._id_kind: str | None = None  # None (no ids yet / positional), "int", "str"
        self._int_ids: np.ndarray | None = None  # explicit int ids (capacity buffer)
        self._str_ids: list[str] | None = None
        self._str_set: set[str] | None = None
        self._next_id = 0
        self._mapped = False
        self._source: str | None = None  # the file it was loaded from (for error messages)
        self._gpu: tuple[int, Any] | None = None  # (rows, device copy of the codec's device_rows)

    # ------------------------------------------------------------------ properties

    @property
    def dim(self) -> int:
        """Dimension of the vectors."""
        return self._dim

    @property
    def precision(self) -> str:
        """How rows are stored and searched: "fp32", "int8" or "binary"."""
        return self._codec.precision

    @property
    def model(self) -> str | None:
        """Fingerprint of the embedder the vectors come from, None if unknown."""
        return self._model

    @property
    def metric(self) -> str:
        """ "cosine" (unit vectors, dot product) or "dot" (raw vectors, inner product)."""
        return self._metric

    @property
    def oversample(self) -> int:
        """Candidates per result the int8 / binary first stage keeps by default."""
        return self._oversample

    @property
    def scales(self) -> np.ndarray | None:
        """int8 per-dimension scales (a copy), None before calibration or for fp32 / binary."""
        scales = self._codec.scales
        return None if scales is None else scales.copy()

    def __len__(self) -> int:
        return self._n

    def __repr__(self) -> str:
        return (
            f"Index(dim={self._dim}, precision={self.precision!r}, metric={self._metric!r}, "
            f"model={self._model!r}, count={self._n})"
        )

    def memory_usage(self) -> dict[str, int]:
        """Bytes of the index's arrays, counting only the first ``len(index)`` rows.

        Returns:
            ``{"resident": bytes held in RAM, "mapped": bytes memory-mapped from the file (paged
            in on demand)}``.
        """
        n, d = self._n, self._dim
        resident = mapped = 0
        vec_bytes = n * d * 4
        if self._mapped:
            mapped += vec_bytes
        else:
            resident += vec_bytes
        resident += self._codec.resident_bytes(n)
        if self._int_ids is not None:
            resident += n * 8
        if self._str_ids is not None:
            resident += sum(len(s.encode()) for s in self._str_ids) + 8 * (n + 1)
        return {"resident": resident, "mapped": mapped}

    # ------------------------------------------------------------------ validation

    @staticmethod
    def _check_oversample(oversample: Any) -> int:
        """``oversample`` as an int; InputError unless it is an integer >= 1."""
        if isinstance(oversample, bool) or not isinstance(oversample, (int, np.integer)) or oversample < 1:
            raise InputError(f"oversample must be an integer >= 1, got {oversample!r}")
        return int(oversample)

    def _check_model(self, model: str | None, what: str) -> None:
        """InputError for a fingerprint that is not a string, ModelMismatchError for another model's."""
        if model is not None and not isinstance(model, str):
            raise InputError(f"model must be a fingerprint string or None, got {type(model).__name__}")
        if model is not None and self._model is not None and model != self._model:
            raise ModelMismatchError(
                f"{what} come from model {model!r} but this index was built from {self._model!r}; "
                f"embed them with {self._model!r}, or re-embed the corpus with {model!r} "
                "and build a new index"
            )

    def _vectors(self, x: Any, what: str) -> tuple[np.ndarray, bool]:
        """Validate and (cosine) L2-normalize: returns ((m, dim) float32 rows, a copy, was_1d)."""
        try:
            arr = np.asarray(x)
        except (ValueError, TypeError) as e:  # ragged lists and the like
            raise InputError(f"{what} must be a numeric array of shape (n, {self._dim}): {e}") from None
        if arr.dtype.kind not in "fiu":
            raise InputError(f"{what} must be a real numeric array, got dtype {arr.dtype}")
        single = arr.ndim == 1
        if single:
            arr = arr[None, :]
        if arr.ndim != 2 or arr.shape[1] != self._dim:
            raise InputError(
                f"{what} must have shape (n, {self._dim}) or ({self._dim},), got {np.shape(x)}; "
                f"this index holds {self._dim}-d vectors, embed with the same model/dimension"
            )
        arr = arr.astype(np.float32, copy=False)
        sq = np.einsum("ij,ij->i", arr, arr)  # float32 ||x||^2: NaN/inf for such rows (or overflow)
        if self._metric == "dot":
            if sq.size and not sq.max() <= fmt.DOT_MAX_SQ:  # NaN fails too
                self._check_rows(arr, sq, what)
            return np.array(arr, dtype=np.float32, order="C"), single  # raw, a copy
        if sq.size and not (sq.min() >= SMALL_SQ and sq.max() <= FLT_MAX):  # NaN fails both
            self._check_rows(arr, sq, what)
        out = l2_normalize(arr, copy=True)
        sq = np.einsum("ij,ij->i", out, out)  # finite unit rows after normalizing too
        if sq.size and not np.abs(sq - 1).max() <= fmt.UNIT_TOL:
            raise InputError(
                f"{what} row(s) {fmt.bad_rows(out)} do not normalize to finite unit vectors (their "
                "components are too small for float32); scale those rows up or drop them"
            )
        return out, single

    def _check_rows(self, arr: np.ndarray, sq: np.ndarray, what: str) -> None:
        """InputError naming the rows with NaN/inf, or a norm below TINY (zero vectors), given
        their float32 squared norms ``sq`` (exact norms recomputed in float64 where small)."""
        odd = np.flatnonzero(~np.isfinite(sq))
        bad = odd[~np.isfinite(arr[odd]).all(axis=1)]
        if bad.size:
            raise InputError(f"{what} contain NaN or inf in row(s) {bad[:10].tolist()}; drop or fix those rows")
        if self._metric == "dot":
            big = np.flatnonzero(~(sq <= fmt.DOT_MAX_SQ))
            raise InputError(
                f"{what} row(s) {big[:10].tolist()} are too large: a dot-product index holds "
                f"norms up to {fmt.DOT_MAX_SQ**0.5:.0e}, so that no score overflows float32; "
                "scale the vectors down"
            )
        small = np.flatnonzero(sq < SMALL_SQ)
        x64 = arr[small].astype(np.float64)
        zero = small[np.sqrt(np.einsum("ij,ij->i", x64, x64)) < TINY]
        if zero.size:
            raise InputError(
                f"{what} contain zero vectors in row(s) {zero[:10].tolist()} (a norm below {TINY:.3g}, "
                "float32's smallest normal number, counts as zero); cosine similarity is undefined "
                "for them, drop those rows"
            )

    def _new_ids(self, ids: Any, m: int) -> tuple[str | None, Any]:
        """Validate ids for m new rows: returns (kind, ids as int64 array / list[str] / None)."""
        if ids is None:
            if self._id_kind == "str":
                raise InputError("this index uses string ids; pass ids= for the new vectors")
            if self._id_kind == "int":
                if self._next_id + m - 1 > fmt.MAX_ID:
                    raise InputError(
                        f"the default ids of {m} new rows would pass the largest int64 "
                        f"({self._next_id} is next); pass ids= for them"
                    )
                return "int", np.arange(self._next_id, self._next_id + m, dtype=np.int64)
            return None, None
        kind, new = parse_ids(ids, m)
        if new is None:  # empty batch (kind is None too)
            return self._id_kind, (np.empty(0, np.int64) if self._id_kind != "str" else [])
        if self._id_kind is not None and kind != self._id_kind and self._n > 0:
            raise InputError(f"this index uses {self._id_kind} ids but got {kind} ids; use one id kind per index")
        if self._id_kind is None and self._n > 0 and kind == "str":
            raise InputError("this index already has default integer ids; string ids can't be mixed in")
        check_unique(new, self._existing_int_ids() if kind == "int" else self._str_set)
        return kind, new

    def _existing_int_ids(self) -> np.ndarray:
        """The integer ids of the rows (row numbers for positional ids)."""
        if self._int_ids is not None:
            return self._int_ids[: self._n]
        return np.arange(self._n, dtype=np.int64)  # positional

    # ------------------------------------------------------------------ building

    def _ensure_capacity(self, extra: int) -> None:
        """Room for ``extra`` more rows in RAM (a memory-mapped index is copied into RAM)."""
        need = self._n + extra
        cap = self._vecs.shape[0]
        if need <= cap and not self._mapped:
            return
        new_cap = max(need, 2 * cap, 1024) if need > cap else cap
        vecs = np.empty((new_cap, self._dim), np.float32)
        vecs[: self._n] = self._vecs[: self._n]
        self._vecs = vecs
        self._mapped = False
        self._codec.grow(new_cap, self._n)
        if self._int_ids is not None:
            ids = np.empty(new_cap, np.int64)
            ids[: self._n] = self._int_ids[: self._n]
            self._int_ids = ids

    def add(self, vectors: Any, ids: Iterable[int] | Iterable[str] | None = None, model: str | None = None) -> None:
        """Add vectors, normalized for cosine (a copy), kept as given for "dot".

        An index loaded with ``mmap=True`` copies its vectors into RAM on the first ``add``; an
        int8 index calibrates its scales on its first ``add`` unless they were given.

        Args:
            vectors: (n, dim) or (dim,) real numbers.
            ids: One unique int or str per vector; None gives default ids (module docstring).
            model: Fingerprint of the embedder the vectors come from, None if unknown.

        Raises:
            InputError: A bad shape, NaN/inf, a zero vector (cosine), a too large vector (dot),
                or bad, missing or duplicate ids; the index is left unchanged.
            ModelMismatchError: ``model`` differs from the index's.
        """
        self._check_model(model, "the added vectors")
        x, _ = self._vectors(vectors, "vectors")
        m = x.shape[0]
        kind, new_ids = self._new_ids(ids, m)
        if m == 0:
            return
        self._ensure_capacity(m)
        n = self._n
        self._vecs[n : n + m] = x
        self._codec.add(x, n)
        if kind == "int":
            if self._int_ids is None:  # positional -> explicit ids: earlier rows keep their row numbers
                self._int_ids = np.empty(self._vecs.shape[0], np.int64)
                self._int_ids[:n] = np.arange(n, dtype=np.int64)
            self._int_ids[n : n + m] = new_ids
            self._next_id = max(self._next_id, int(new_ids.max()) + 1)
        elif kind == "str":
            if self._str_ids is None or self._str_set is None:  # the first string ids (both None then)
                self._str_ids, self._str_set = [], set()
            self._str_ids.extend(new_ids)
            self._str_set.update(new_ids)
        else:
            self._next_id = n + m
        if kind is not None:
            self._id_kind = kind
        self._n = n + m
        if self._model is None and model is not None and n == 0:
            self._model = model

    # ------------------------------------------------------------------ search

    def search(
        self,
        queries: Any,
        k: int = 10,
        model: str | None = None,
        *,
        oversample: int | None = None,
        device: str = "cpu",
    ) -> tuple[np.ndarray, np.ndarray]:
        """The top ``k`` rows by the metric for each query, best first, equal scores in insertion order.

        Args:
            queries: (nq, dim) or (dim,) real numbers; normalized for cosine (a copy).
            k: Results per query, an integer >= 0; ``min(k, len(index))`` are returned.
            model: Fingerprint of the embedder the queries come from, None if unknown.
            oversample: For int8 / binary, the ``k * oversample`` candidates re-ranked exactly
                (default: the index's ``oversample``).
            device: "cpu", or "cuda" to scan on the GPU (CuPy; fp32 and int8). The rows or int8
                codes are uploaded on first use and kept there until the index changes; int8
                candidates are re-ranked on the CPU, so scores equal the CPU path's.

        Returns:
            ``(scores, ids)``: float32 (nq, k') and ids (nq, k'), ``k' = min(k, len(index))``;
            int64 ids, or an object array of str for string ids; 1-d (k',) for a 1-d query.

        Raises:
            InputError: Bad queries, ``k``, ``oversample`` or ``device``; "cuda" for a binary
                index or without a usable GPU.
            ModelMismatchError: ``model`` differs from the index's.
            IndexFormatError: The index was loaded with ``mmap=True, verify=False`` and a row is
                not finite (unit) after all.
        """
        if device not in ("cpu", "cuda"):
            raise InputError(f"device must be 'cpu' or 'cuda', got {device!r}")
        self._codec.check_device(device)
        self._check_model(model, "the queries")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
            raise InputError(f"k must be an integer >= 0, got {k!r}")
        os_ = self._oversample if oversample is None else self._check_oversample(oversample)
        q, single = self._vectors(queries, "queries")
        n = self._n
        kk = min(int(k), n)
        if kk == 0 or q.shape[0] == 0:
            scores, rows = np.empty((q.shape[0], kk), np.float32), np.empty((q.shape[0], kk), np.int64)
        elif device == "cuda":
            scores, rows = self._codec.search_cuda(self._device_corpus(), self._vecs[:n], q, kk, os_)
        else:
            scores, rows = self._codec.search(self._vecs[:n], q, kk, os_)
        if scores.size and not (np.isfinite(scores).all() and rows.min() >= 0 and rows.max() < n):
            raise self._invalid_result()
        ids = self._ids_of(rows)
        if single:
            return scores[0], ids[0]
        return scores, ids

    def _invalid_result(self) -> EngineError:
        """The error for a non-finite score or a placeholder row out of a scan: only possible for
        vectors loaded with ``mmap=True, verify=False``, which skips the row check."""
        vecs = self._vecs[: self._n]
        bad = fmt.bad_rows(vecs, unit=self._metric == "cosine")
        where = f"row {bad[0]} {fmt.describe_row(vecs[bad[0]])}" if bad else "no bad row found"
        if self._source is not None:
            return IndexFormatError(
                f"index file {self._source!r} holds vectors that are not finite"
                f"{' unit' if self._metric == 'cosine' else ''} vectors ({where}); "
                "Index.load(..., mmap=True, verify=False) skips that check. Load it with verify=True to "
                "check it, and rebuild the index from the source vectors"
            )
        return EngineError(f"search produced a non-finite score or no row ({where}); please report this bug")

    def _device_corpus(self) -> Any:
        """The GPU copy of what the scan reads (fp32 vectors or int8 codes), uploaded once per size."""
        from engine.kernels import cuda as kc

        ok, why = kc.available()
        if not ok:
            raise InputError(f"device='cuda' needs a CUDA GPU with CuPy: {why}. Use device='cpu'.")
        if self._gpu is None or self._gpu[0] != self._n:
            self._gpu = (self._n, kc.to_device(self._codec.device_rows(self._vecs[: self._n])))
        return self._gpu[1]

    def _ids_of(self, rows: np.ndarray) -> np.ndarray:
        """The ids of row numbers, in the same shape."""
        if self._str_ids is not None:  # id kind "str"
            out = np.empty(rows.shape, dtype=object)
            flat = out.reshape(-1)
            ids = self._str_ids
            for t, r in enumerate(rows.reshape(-1)):
                flat[t] = ids[r]
            return out
        if self._int_ids is not None:
            return self._int_ids[rows]
        return rows

    def search_text(self, embedder: Any, texts: str | Sequence[str], k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Embed ``texts`` with ``embedder`` and search for them.

        The queries are ``encode``'s default output (the model's vectors, as sentence-transformers
        gives them): a cosine index normalizes them, a dot index scores them as they are, so fill a
        dot index with ``encode``'s default too.

        Args:
            embedder: An object with ``.encode(list[str]) -> ndarray`` and ``.fingerprint`` (a
                string, or a method returning one), such as ``engine.Embedder``.
            texts: One string (1-d results) or a sequence of strings.
            k: Results per query.

        Returns:
            ``(scores, ids)`` as ``search`` returns them.

        Raises:
            InputError: ``embedder`` has no ``encode``, or ``texts`` are not strings.
            ModelMismatchError: The embedder's fingerprint differs from the index's model.
        """
        fp = getattr(embedder, "fingerprint", None)
        if callable(fp):
            fp = fp()
        if not hasattr(embedder, "encode"):
            raise InputError("search_text needs an embedder with .encode(list_of_texts) and .fingerprint")
        self._check_model(fp, "the query texts' embeddings (embedder fingerprint)")
        single = isinstance(texts, str)
        batch = [texts] if single else list(texts)
        if not all(isinstance(t, str) for t in batch):
            raise InputError("texts must be a string or a sequence of strings")
        vecs = np.asarray(embedder.encode(batch))
        if vecs.ndim == 1:
            vecs = vecs[None, :]
        scores, ids = self.search(vecs, k, model=fp)
        if single:
            return scores[0], ids[0]
        return scores, ids

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | os.PathLike) -> None:
        """Write the index to ``path`` atomically (temp file + fsync + os.replace).

        The layout is described in :mod:`engine.index.format`; the file's mode follows the umask.

        Args:
            path: The file to write (replaced if it exists).

        Raises:
            InputError: ``path`` exists and is not a regular file (a device, a fifo, a folder),
                or the header would pass the format's limit (a very long model fingerprint).
            OutputError: Writing failed (read-only file system, no space, a missing folder); an
                OSError naming ``path``. The old file, if any, is left unchanged.
        """
        n = self._n
        arrays: dict[str, Any] = {"vectors": self._vecs[:n], **self._codec.arrays(n)}
        if self._int_ids is not None:  # id kind "int"
            arrays["ids"] = self._int_ids[:n]
        elif self._str_ids is not None:  # id kind "str"
            arrays["ids"] = self._str_ids
        fmt.write(
            path,
            {
                "dim": self._dim,
                "precision": self.precision,
                "count": n,
                "model": self._model,
                "metric": self._metric,
                "id_kind": self._id_kind,
                "next_id": self._next_id,
                "oversample": self._oversample,
                "scales_calibrated": self._codec.scales is not None,
            },
            arrays,
        )

    @classmethod
    def load(cls, path: str | os.PathLike, mmap: bool = True, *, verify: bool = True) -> Index:
        """Read an index saved by ``save``.

        Header, sections, size, unique ids and ``next_id`` are always checked; every vector row
        (a finite unit vector for cosine, a finite one for dot) and its int8 codes or sign bits
        (the ones ``add`` makes of it) are checked unless ``mmap=True, verify=False``.

        Args:
            path: An index file.
            mmap: Memory-map the fp32 vectors read-only (codes, scales and ids are read into RAM);
                False reads everything into RAM.
            verify: Check the payload sha256 (reads the whole file once).

        Returns:
            The index, with the precision, metric, model, oversample and ids it was saved with.

        Raises:
            FileNotFoundError: No file at ``path``.
            IndexFormatError: A damaged, crafted, truncated or unknown-version file, or a path
                that is not a regular file.
        """
        fields, arrays = fmt.read(path, mmap=mmap, verify=verify)
        str_set = fmt.check_values(path, fields, arrays, rows=verify or not mmap)
        idx = cls(
            fields["dim"],
            fields["precision"],
            fields["model"],
            metric=fields["metric"],
            oversample=fields["oversample"],
        )
        idx._vecs = arrays["vectors"]
        idx._mapped = isinstance(idx._vecs, np.memmap)
        idx._codec.restore(arrays, calibrated=fields["scales_calibrated"])
        idx._id_kind = fields["id_kind"]
        if idx._id_kind == "int":
            idx._int_ids = arrays["ids"]
        elif idx._id_kind == "str":
            idx._str_ids = arrays["ids"]
            idx._str_set = str_set
        idx._next_id = fields["next_id"]
        idx._n = fields["count"]
        idx._source = os.fspath(path)
        return idx
