"""A flat (exact-scan) vector index by cosine or dot product: fp32, or int8 / binary codes with exact rescoring.

Semantics
---------
* **Metric** follows the model's ``similarity_fn_name``: ``metric="cosine"`` (the default) or
  ``"dot"``; it is a property of the index, saved in its file. "euclidean" and "manhattan" are
  refused (``Index(metric=...)`` names the workaround). With ``"dot"`` vectors are stored and
  queried as given (raw, not normalized), scores are inner products, and zero vectors are valid
  rows and queries (their scores are 0); rows and queries must be finite with
  ``||v||^2 <= format.DOT_MAX_SQ`` (1e36; real embeddings have norms below 1e3) so that no score
  can overflow: ``|x . y| <= ||x|| ||y|| <= 1e36``. int8 works the
  same way for both metrics (per-dimension scales calibrated on the raw values, exact fp32
  rescoring), so returned scores are exact dot products. The rest of this section describes
  ``"cosine"``; ids, results, models and int8 are the same for both.
* **Cosine.** ``add`` and ``search`` L2-normalize their vectors (a copy; the caller's array is
  never modified), so scores are cosine similarities in [-1, 1], and raw vectors (``encode``'s
  default, the model's output as in sentence-transformers) give the same results as unit ones
  (``encode(normalize_embeddings=True)``), on either side. Zero vectors have no
  direction and are rejected with :class:`~engine.errors.InputError` naming the rows, in
  ``add`` and in ``search`` alike; a row whose norm is below float32's smallest normal number
  (``np.finfo(np.float32).tiny``, 1.2e-38) counts as zero (normalizing it would overflow to
  inf). NaN/inf or a wrong dimension is also an ``InputError``, and the normalized rows are
  checked again (finite, unit norm). No non-finite score and no placeholder id ever leaves
  ``search``.
* **Results.** ``search(queries (nq, dim), k)`` returns ``(scores float32 (nq, k'), ids
  (nq, k'))`` with ``k' = min(k, len(index))`` (no padding), best first, equal scores ordered
  by insertion order (earlier row first). A single 1-d query returns 1-d ``(k',)`` arrays.
  ``ids`` is int64 for integer ids, an object array of ``str`` for string ids.
* **Ids.** Integers or strings, one kind per index, unique (a duplicate, within a batch or
  against the index, raises ``InputError``). Without ``ids``, rows get running integers:
  ``len(index), len(index) + 1, ...`` while all ids are default ones, otherwise continuing after
  the largest integer id. A string-id index needs explicit ids.
* **Model fingerprint.** ``model`` is the producing embedder's fingerprint (an opaque string,
  ``None`` = unknown). If both the index's and the caller's fingerprint are known and differ,
  ``add``/``search``/``search_text`` raise :class:`~engine.errors.ModelMismatchError`. An empty
  index without a model adopts the model of its first ``add``.
* **int8.** Vectors are stored as int8 codes with per-dimension scales
  (``engine.kernels.quantize``) calibrated on the first ``add`` (on up to
  ``CALIBRATION_ROWS`` rows of it, sampled with a fixed seed) or given as ``scales=``; the
  scales stay fixed afterwards, so components of later vectors beyond the calibrated range
  saturate at +-127 (rescoring keeps final scores exact; only candidate recall can suffer if
  later data is very differently distributed - pass a representative first batch). A search
  scans the codes for ``k * oversample`` candidates and re-ranks them with exact float32 dot
  products against the fp32 vectors, so returned scores are exact cosines. The fp32 vectors
  are kept for that rescoring: in RAM while building, memory-mapped from the file after
  ``Index.load(path, mmap=True)``, where the resident part is the codes (n * dim bytes, 25%
  of fp32) plus scales and ids, and the rescoring reads only ``k * oversample`` rows per query.
  ``DEFAULT_OVERSAMPLE = 4``, picked by measured recall@10 against exact fp32 search (200
  queries, half near corpus points, half random) on 20k x 384 unit vectors: isotropic
  0.98 / 1.0 / 1.0 / 1.0 and clustered 0.96 / 1.0 / 1.0 / 1.0 at oversample 1 / 2 / 4 / 10;
  1.000 on 1M x 384 clustered (``bench/search_bench.py``). The first stage keeps 7 bits of
  each query (recall@10 1.0 from oversample 2, as with 15 bits: bench/experiments/code_recall.py),
  so 2 already suffices; 4 is a margin for real embeddings that costs ~20 extra row reads per
  query. From ``qgemm.gemm_min_queries()`` queries on, the candidates come from a blocked int8
  GEMM (onnxruntime ``MatMulInteger``) that shares each code row across all queries instead of
  scanning once per query (:mod:`engine.index.qgemm`); below it, from the fused scan
  (``vpmaddubsw`` on x86 CPUs with AVX2, int8 x int16 elsewhere). All of them rank by the same
  exact integer scores of the same 7-bit queries, so a query's candidates, hence its results, do
  not depend on the other queries searched with it.
* **binary.** Vectors are stored as their sign bits (``engine.kernels.binary.pack_signs``:
  bit j = ``x_j > 0``, 48 bytes per 384-d row, 1/32 of fp32) next to the fp32 vectors. A search
  ranks every row by ``dim - 2 * hamming(bits(row), bits(query))`` (a popcount scan), keeps
  ``k * oversample`` candidates and re-ranks them with exact fp32 dot products, as int8 does:
  returned scores are exact, only candidate recall is approximate. This is the binary +
  rescore recipe of sentence-transformers' embedding quantization, except that the rescoring
  uses the stored fp32 rows (exact scores) rather than the float query against the unpacked
  +-1 codes. After ``Index.load(path, mmap=True)`` the resident part is the bits plus ids; the
  fp32 rows are read from the file for the ``k * oversample`` candidates only.
  ``DEFAULT_OVERSAMPLE_BINARY = 40``, picked by recall@10 against exact search on SciFact
  (5,183 all-MiniLM-L6-v2 documents, 1,109 queries): 0.573 / 0.862 / 0.949 / 0.982 / 0.994 at
  oversample 1 / 4 / 10 / 20 / 40 (``bench/experiments/code_recall.py``; the rescoring of 400
  rows per query costs far less than the scan). Signs keep only a vector's direction, so a "dot"
  model with widely varying norms recalls less; raise ``oversample`` or use int8. Binary
  searches run on the CPU only.

Persistence: ``save`` / ``Index.load`` write and read one checksummed file through
:mod:`engine.index.format` (the byte layout and every check on reading are described there).
``Index.load`` also checks the values it trusts (``format.check_values``): unique ids, a
consistent ``next_id``, and every vector row a finite unit vector. The row check reads the
vectors once (about 0.15 s per 1M x 384 from the page cache, next to 1.8 s for the checksum), so it
runs whenever the load reads them anyway (``verify=True`` or ``mmap=False``) and is skipped,
like the checksum, by ``mmap=True, verify=False``, the open-in-microseconds path for files you
trust. Even then ``search`` never returns a non-finite score or an id of no row: it raises
IndexFormatError naming the file and the bad row (a zero or non-unit row in such a file would
go unnoticed, giving wrong scores).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from engine.errors import EngineError, IndexFormatError, InputError, ModelMismatchError
from engine.kernels.binary import pack_signs, topk_hamming
from engine.kernels.normalize import l2_normalize
from engine.kernels.quantize import U8S8_QMAX, calibrate_scales, quantize, topk_int8
from engine.kernels.topk import rescore, topk_dot

from . import format as fmt
from .ids import check_unique, parse_ids
from .qgemm import gemm_min_queries, topk_int8_gemm

__all__ = ["DEFAULT_OVERSAMPLE", "DEFAULT_OVERSAMPLE_BINARY", "Index"]

DEFAULT_OVERSAMPLE = 4
DEFAULT_OVERSAMPLE_BINARY = 40
CALIBRATION_ROWS = 100_000
PRECISIONS = fmt.PRECISIONS
METRICS = fmt.METRICS
# similarity functions of sentence-transformers the index cannot scan: what to do instead
_DISTANCES = ("euclidean", "manhattan")
TINY = float(np.finfo(np.float32).tiny)  # a row with a smaller norm is a zero vector
SMALL_SQ = 1e-30  # float32 squared norms below this may have underflowed: recomputed in float64
FLT_MAX = float(np.finfo(np.float32).max)


class Index:
    """Exact cosine- or dot-product-similarity index over fixed-dimension vectors.

    ``Index(dim, precision="fp32" | "int8" | "binary", model=None, *, metric="cosine" | "dot",
    oversample=None, scales=None)``; metric: the model's ``similarity_fn_name``
    (``Embedder.similarity_fn_name``); oversample: candidates per result kept by the int8 /
    binary first stage (default 4 for int8, 40 for binary); see the module docstring for the
    semantics of ids, models, int8 and binary, and
    :mod:`engine.index.format` for the file.
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
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise InputError(f"dim must be a positive integer, got {dim!r}")
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
        self._precision = precision
        self._model = model
        if oversample is None:
            oversample = DEFAULT_OVERSAMPLE_BINARY if precision == "binary" else DEFAULT_OVERSAMPLE
        self._oversample = self._check_oversample(oversample)
        self._n = 0
        self._vecs = np.empty((0, self._dim), np.float32)  # capacity buffer (or a memmap)
        # the first-stage codes: int8 (n, dim), or sign bits packed in uint64 words (n, ceil(dim / 64))
        self._codes = np.empty((0, self._code_width()), self._code_dtype()) if precision != "fp32" else None
        self._scales: np.ndarray | None = None
        if scales is not None:
            if precision != "int8":
                raise InputError("scales= only applies to precision='int8'")
            s = np.asarray(scales, dtype=np.float32).reshape(-1)
            if s.shape != (self._dim,) or not np.all(np.isfinite(s)) or np.any(s <= 0):
                raise InputError(
                    f"scales must be {self._dim} finite positive numbers; compute them "
                    "with engine.kernels.quantize.calibrate_scales"
                )
            self._scales = s.copy()
        self._id_kind: str | None = None  # None (no ids yet / positional), "int", "str"
        self._int_ids: np.ndarray | None = None  # explicit int ids (capacity buffer)
        self._str_ids: list[str] | None = None
        self._str_set: set[str] | None = None
        self._next_id = 0
        self._mapped = False
        self._source: str | None = None  # the file it was loaded from (for error messages)

    # ------------------------------------------------------------------ properties

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def precision(self) -> str:
        return self._precision

    @property
    def model(self) -> str | None:
        return self._model

    @property
    def metric(self) -> str:
        """ "cosine" (unit vectors, dot product) or "dot" (raw vectors, inner product)."""
        return self._metric

    @property
    def oversample(self) -> int:
        return self._oversample

    @property
    def scales(self) -> np.ndarray | None:
        """int8 per-dimension scales (a copy), None before calibration or for fp32."""
        return None if self._scales is None else self._scales.copy()

    def __len__(self) -> int:
        return self._n

    def __repr__(self) -> str:
        return (
            f"Index(dim={self._dim}, precision={self._precision!r}, metric={self._metric!r}, "
            f"model={self._model!r}, count={self._n})"
        )

    def memory_usage(self) -> dict[str, int]:
        """Bytes of the index's arrays: ``resident`` (held in RAM) and ``mapped`` (memory-mapped
        from the file, paged in on demand). Counts only the first ``len(index)`` rows."""
        n, d = self._n, self._dim
        resident = mapped = 0
        vec_bytes = n * d * 4
        if self._mapped:
            mapped += vec_bytes
        else:
            resident += vec_bytes
        if self._precision == "int8":
            resident += n * d + (d * 4 if self._scales is not None else 0)
        elif self._precision == "binary":
            resident += n * self._code_width() * 8
        if self._int_ids is not None:
            resident += n * 8
        if self._str_ids is not None:
            resident += sum(len(s.encode()) for s in self._str_ids) + 8 * (n + 1)
        return {"resident": resident, "mapped": mapped}

    def _code_width(self) -> int:
        return self._dim if self._precision == "int8" else -(-self._dim // 64)

    def _code_dtype(self) -> type:
        return np.int8 if self._precision == "int8" else np.uint64

    # ------------------------------------------------------------------ validation

    @staticmethod
    def _check_oversample(oversample: Any) -> int:
        if isinstance(oversample, bool) or not isinstance(oversample, (int, np.integer)) or oversample < 1:
            raise InputError(f"oversample must be an integer >= 1, got {oversample!r}")
        return int(oversample)

    def _check_model(self, model: str | None, what: str) -> None:
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
        if kind is None:  # empty batch
            return self._id_kind, (np.empty(0, np.int64) if self._id_kind != "str" else [])
        if self._id_kind is not None and kind != self._id_kind and self._n > 0:
            raise InputError(f"this index uses {self._id_kind} ids but got {kind} ids; use one id kind per index")
        if self._id_kind is None and self._n > 0 and kind == "str":
            raise InputError("this index already has default integer ids; string ids can't be mixed in")
        check_unique(new, self._existing_int_ids() if kind == "int" else self._str_set)
        return kind, new

    def _existing_int_ids(self) -> np.ndarray:
        if self._int_ids is not None:
            return self._int_ids[: self._n]
        return np.arange(self._n, dtype=np.int64)  # positional

    # ------------------------------------------------------------------ building

    def _ensure_capacity(self, extra: int) -> None:
        need = self._n + extra
        cap = self._vecs.shape[0]
        if need <= cap and not self._mapped:
            return
        new_cap = max(need, 2 * cap, 1024) if need > cap else cap
        vecs = np.empty((new_cap, self._dim), np.float32)
        vecs[: self._n] = self._vecs[: self._n]
        self._vecs = vecs
        self._mapped = False
        if self._codes is not None:
            codes = np.empty((new_cap, self._code_width()), self._code_dtype())
            codes[: self._n] = self._codes[: self._n]
            self._codes = codes
        if self._int_ids is not None:
            ids = np.empty(new_cap, np.int64)
            ids[: self._n] = self._int_ids[: self._n]
            self._int_ids = ids

    def add(self, vectors: Any, ids: Iterable[int] | Iterable[str] | None = None, model: str | None = None) -> None:
        """Add vectors (n, dim) or (dim,) with optional ids; normalizes them (cosine; "dot" keeps them).

        Raises InputError (shape, NaN/inf, zero vector, bad or duplicate ids) and
        ModelMismatchError (``model`` differs from the index's). An index loaded with
        ``mmap=True`` copies its vectors into RAM on the first ``add``.
        """
        self._check_model(model, "the added vectors")
        x, _ = self._vectors(vectors, "vectors")
        m = x.shape[0]
        kind, new_ids = self._new_ids(ids, m)
        if m == 0:
            return
        if self._precision == "int8" and self._scales is None:
            sample = x
            if m > CALIBRATION_ROWS:
                rows = np.sort(np.random.default_rng(0).choice(m, CALIBRATION_ROWS, replace=False))
                sample = x[rows]
            self._scales = calibrate_scales(sample)
        self._ensure_capacity(m)
        n = self._n
        # switch positional -> explicit ids when explicit int ids arrive
        if kind == "int" and self._int_ids is None:
            buf = np.empty(self._vecs.shape[0], np.int64)
            buf[:n] = np.arange(n, dtype=np.int64)
            self._int_ids = buf
        self._vecs[n : n + m] = x
        if self._precision == "int8":
            self._codes[n : n + m] = quantize(x, self._scales)
        elif self._precision == "binary":
            self._codes[n : n + m] = pack_signs(x)
        if kind == "int":
            self._int_ids[n : n + m] = new_ids
            self._next_id = max(self._next_id, int(new_ids.max()) + 1)
        elif kind == "str":
            if self._str_ids is None:
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
        """Top-k by the metric: (scores float32 (nq, k'), ids (nq, k')), k' = min(k, len(index)).

        A 1-d query gives 1-d results. Best first; equal scores keep insertion order. For int8,
        ``oversample`` (default: the index's) sets the candidate count k * oversample that is
        re-ranked exactly. ``device="cuda"`` scans on the GPU (CuPy; the vectors, or the int8
        codes, are uploaded on first use and kept there until the index changes); int8
        candidates are still re-ranked exactly on the CPU, so scores equal the CPU path's.
        """
        if device not in ("cpu", "cuda"):
            raise InputError(f"device must be 'cpu' or 'cuda', got {device!r}")
        if device == "cuda" and self._precision == "binary":
            raise InputError(
                "a binary index searches on the CPU only (its Hamming scan reads 32x less than fp32); "
                "use device='cpu', or an fp32/int8 index for device='cuda'"
            )
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
            from engine.kernels import cuda as kc

            corpus = self._device_corpus()
            if self._precision == "fp32":
                scores, rows = kc.topk_dot_cuda(corpus, q, kk)
            else:
                _, cand = kc.topk_int8_cuda(corpus, q, self._scales, min(n, kk * os_))
                scores, rows = rescore(self._vecs[:n], q, cand, kk)
        elif self._precision == "fp32":
            scores, rows = topk_dot(self._vecs[:n], q, kk)
        else:
            m = min(n, kk * os_)
            if self._precision == "binary":
                _, cand = topk_hamming(self._codes[:n], q, self._dim, m)
            elif q.shape[0] >= gemm_min_queries():
                _, cand = topk_int8_gemm(self._codes[:n], q, self._scales, m)
            else:  # 7-bit queries on every CPU: the GEMM's integer scores, so batch size never changes candidates
                _, cand = topk_int8(self._codes[:n], q, self._scales, m, qmax=U8S8_QMAX)
            scores, rows = rescore(self._vecs[:n], q, cand, kk)
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

    def _device_corpus(self):
        """The GPU copy of what the scan reads (fp32 vectors or int8 codes), uploaded once per size."""
        from engine.kernels import cuda as kc

        ok, why = kc.available()
        if not ok:
            raise InputError(f"device='cuda' needs a CUDA GPU with CuPy: {why}. Use device='cpu'.")
        cached = getattr(self, "_gpu", None)
        if cached is None or cached[0] != self._n:
            src = self._vecs if self._precision == "fp32" else self._codes
            self._gpu = (self._n, kc.to_device(src[: self._n]))
        return self._gpu[1]

    def _ids_of(self, rows: np.ndarray) -> np.ndarray:
        if self._id_kind == "str":
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
        """Embed ``texts`` with ``embedder`` (``.encode(list[str]) -> ndarray``, ``.fingerprint``)
        and search. A single string gives 1-d results. The embedder's fingerprint must match
        the index's model (when both are known). The queries are ``encode``'s default output (the
        model's vectors, as sentence-transformers gives them): a cosine index normalizes them, a
        dot index scores them as they are, so fill a dot index with ``encode``'s default too."""
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
        """Write the index to ``path`` atomically (temp file + fsync + os.replace); the
        layout is described in :mod:`engine.index.format`. The file's mode follows the umask.

        Raises InputError if ``path`` exists and is not a regular file (a device, a fifo, a
        folder), OutputError (an OSError) naming ``path`` if writing fails (read-only file
        system, no space, a missing folder); the old file, if any, is then left unchanged.
        """
        n = self._n
        arrays: dict[str, Any] = {"vectors": self._vecs[:n]}
        if self._precision == "int8":
            arrays["codes"] = self._codes[:n]
            arrays["scales"] = self._scales if self._scales is not None else np.ones(self._dim, np.float32) / 127
        elif self._precision == "binary":
            arrays["bits"] = self._codes[:n]
        if self._id_kind is not None:
            arrays["ids"] = self._int_ids[:n] if self._id_kind == "int" else self._str_ids
        fmt.write(
            path,
            {
                "dim": self._dim,
                "precision": self._precision,
                "count": n,
                "model": self._model,
                "metric": self._metric,
                "id_kind": self._id_kind,
                "next_id": self._next_id,
                "oversample": self._oversample,
                "scales_calibrated": self._scales is not None,
            },
            arrays,
        )

    @classmethod
    def load(cls, path: str | os.PathLike, mmap: bool = True, *, verify: bool = True) -> Index:
        """Read an index saved by ``save``.

        ``mmap=True`` memory-maps the fp32 vectors read-only (int8 codes, scales and ids are
        read into RAM); ``mmap=False`` reads everything into RAM. ``verify=True`` checks the
        payload sha256 (reads the whole file once); header, sections, size, unique ids and
        ``next_id`` are always checked, and every vector row is checked to be a finite unit
        vector (and its int8 codes or sign bits to be the ones ``add`` makes of it) unless
        ``mmap=True, verify=False`` (see the module docstring).
        Raises IndexFormatError for a damaged, crafted, truncated or unknown-version file, or
        a path that is not a regular file.
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
        if idx._precision == "int8":
            idx._codes = arrays["codes"]
            if fields["scales_calibrated"]:
                idx._scales = arrays["scales"]
        elif idx._precision == "binary":
            idx._codes = arrays["bits"]
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
