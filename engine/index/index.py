"""A flat (exact-scan) cosine vector index, fp32 or int8 with exact rescoring.

Semantics
---------
* **Cosine.** ``add`` and ``search`` L2-normalize their vectors (a copy; the caller's array is
  never modified), so scores are cosine similarities in [-1, 1]. Zero vectors have no
  direction and are rejected with :class:`~engine.errors.InputError`, in ``add`` and in
  ``search`` alike. NaN/inf or a wrong dimension is also an ``InputError``.
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
  1.000 on 1M x 384 clustered (``bench/search_bench.py``). The queries keep 15 bits (see the
  kernel), so 2 already suffices there; 4 is a margin for real embeddings that costs ~20
  extra row reads per query.

File format (``save``/``load``), one file, little-endian::

    offset 0   8 bytes   magic b"EMBIDX\\x00\\x01"
    offset 8   uint64    header length H
    offset 16  32 bytes  sha256 of the header bytes
    offset 48  H bytes   header, UTF-8 JSON: format_version, dim, precision, count, model,
                         metric, id_kind, next_id, oversample, sections
                         [{name, dtype, shape, offset, nbytes}], payload_sha256
    ...        sections, each starting at a 64-byte aligned offset, zero padding between:
               vectors float32 (count, dim); codes int8 (count, dim) and scales float32 (dim,)
               for int8; ids int64 (count,) for explicit integer ids; ids_offsets int64
               (count + 1,) and ids_utf8 uint8 for string ids.

The file ends exactly at the end of its last section. ``payload_sha256`` hashes every byte
from the first section's offset to the end of the file. ``load`` always checks the magic,
the header hash, the header's fields and the file size (a truncated file fails there), and,
with ``verify=True`` (default), the payload hash (one sequential read of the file). Any
failure raises :class:`~engine.errors.IndexFormatError` saying the file is damaged and should
be rebuilt. ``save`` writes a temporary file in the same directory, fsyncs it and
``os.replace``-s it over ``path``: readers see the old file or the new one, never a mix.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import IndexFormatError, InputError, ModelMismatchError
from engine.kernels.normalize import l2_normalize
from engine.kernels.quantize import calibrate_scales, quantize, topk_int8
from engine.kernels.topk import rescore, topk_dot

__all__ = ["DEFAULT_OVERSAMPLE", "FORMAT_VERSION", "Index"]

FORMAT_VERSION = 1
MAGIC = b"EMBIDX\x00\x01"
DEFAULT_OVERSAMPLE = 4
CALIBRATION_ROWS = 100_000
PRECISIONS = ("fp32", "int8")
_ALIGN = 64
_PREFIX = 8 + 8 + 32
_MAX_HEADER = 64 << 20


def _damaged(path: Path | str, why: str) -> IndexFormatError:
    return IndexFormatError(
        f"index file {str(path)!r} is damaged or not an index file ({why}); "
        "rebuild the index from the source vectors and save it again"
    )


def _raw_bytes(arr: np.ndarray) -> np.ndarray:
    """The bytes of an array as a flat uint8 array (works for empty arrays and memmaps)."""
    return np.ascontiguousarray(arr).reshape(-1).view(np.uint8)


def _align(x: int) -> int:
    return -(-x // _ALIGN) * _ALIGN


class Index:
    """Exact cosine-similarity index over fixed-dimension vectors.

    ``Index(dim, precision="fp32" | "int8", model=None, *, oversample=4, scales=None)``;
    see the module docstring for the semantics of ids, models, int8 and the file format.
    """

    def __init__(
        self,
        dim: int,
        precision: str = "fp32",
        model: str | None = None,
        *,
        oversample: int = DEFAULT_OVERSAMPLE,
        scales: np.ndarray | None = None,
    ) -> None:
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise InputError(f"dim must be a positive integer, got {dim!r}")
        if precision not in PRECISIONS:
            raise InputError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if model is not None and not isinstance(model, str):
            raise InputError(f"model must be a fingerprint string or None, got {type(model).__name__}")
        self._dim = int(dim)
        self._precision = precision
        self._model = model
        self._oversample = self._check_oversample(oversample)
        self._n = 0
        self._vecs = np.empty((0, self._dim), np.float32)  # capacity buffer (or a memmap)
        self._codes = np.empty((0, self._dim), np.int8) if precision == "int8" else None
        self._scales: np.ndarray | None = None
        if scales is not None:
            if precision != "int8":
                raise InputError("scales= only applies to precision='int8'")
            s = np.asarray(scales, dtype=np.float32).reshape(-1)
            if s.shape != (self._dim,) or not np.all(np.isfinite(s)) or np.any(s <= 0):
                raise InputError(f"scales must be {self._dim} finite positive numbers; compute them "
                                 "with engine.kernels.quantize.calibrate_scales")
            self._scales = s.copy()
        self._id_kind: str | None = None   # None (no ids yet / positional), "int", "str"
        self._int_ids: np.ndarray | None = None  # explicit int ids (capacity buffer)
        self._str_ids: list[str] | None = None
        self._str_set: set[str] | None = None
        self._next_id = 0
        self._mapped = False

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
    def oversample(self) -> int:
        return self._oversample

    @property
    def scales(self) -> np.ndarray | None:
        """int8 per-dimension scales (a copy), None before calibration or for fp32."""
        return None if self._scales is None else self._scales.copy()

    def __len__(self) -> int:
        return self._n

    def __repr__(self) -> str:
        return (f"Index(dim={self._dim}, precision={self._precision!r}, model={self._model!r}, "
                f"count={self._n})")

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
        if self._int_ids is not None:
            resident += n * 8
        if self._str_ids is not None:
            resident += sum(len(s.encode()) for s in self._str_ids) + 8 * (n + 1)
        return {"resident": resident, "mapped": mapped}

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
        """Validate and L2-normalize: returns ((m, dim) float32 unit rows, was_1d)."""
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
        finite = np.isfinite(arr).all(axis=1)
        if not finite.all():
            bad = np.flatnonzero(~finite)
            raise InputError(f"{what} contain NaN or inf in row(s) {bad[:10].tolist()}; "
                             "drop or fix those rows")
        out = l2_normalize(arr, copy=True)
        zero = ~np.any(out != 0, axis=1)
        if zero.any():
            bad = np.flatnonzero(zero)
            raise InputError(f"{what} contain zero vectors in row(s) {bad[:10].tolist()}; cosine "
                             "similarity is undefined for them, drop those rows")
        return out, single

    def _new_ids(self, ids: Any, m: int) -> tuple[str | None, Any]:
        """Validate ids for m new rows: returns (kind, ids as int64 array / list[str] / None)."""
        if ids is None:
            if self._id_kind == "str":
                raise InputError("this index uses string ids; pass ids= for the new vectors")
            if self._id_kind == "int":
                return "int", np.arange(self._next_id, self._next_id + m, dtype=np.int64)
            return None, None
        if isinstance(ids, (str, bytes)):
            raise InputError("ids must be a sequence with one id per vector, not a single string")
        ids_list = list(ids) if not isinstance(ids, np.ndarray) else ids
        if len(ids_list) != m:
            raise InputError(f"got {len(ids_list)} ids for {m} vectors; pass exactly one id per vector")
        if m == 0:
            return self._id_kind, (np.empty(0, np.int64) if self._id_kind != "str" else [])
        if isinstance(ids_list, np.ndarray):
            arr = ids_list
            if arr.dtype == object:
                ids_list = arr.tolist()
        elif all(isinstance(v, str) for v in ids_list):
            arr = np.asarray(ids_list, dtype=object)
        elif all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in ids_list):
            try:
                arr = np.asarray(ids_list, dtype=np.int64)
            except OverflowError:
                raise InputError("integer ids must fit in int64") from None
        else:
            arr = np.asarray(ids_list, dtype=object)
        if arr.dtype.kind in "iu":
            kind = "int"
            if arr.dtype.kind == "u" and arr.size and arr.max() > np.iinfo(np.int64).max:
                raise InputError("integer ids must fit in int64")
            new: Any = arr.astype(np.int64).reshape(-1)
        elif arr.dtype.kind == "U" or (arr.dtype == object and all(isinstance(v, str) for v in ids_list)):
            kind = "str"
            new = [str(v) for v in ids_list]
        else:
            raise InputError(f"ids must all be integers or all be strings, got {arr.dtype} values; "
                             "convert them to one kind")
        if self._id_kind is not None and kind != self._id_kind and self._n > 0:
            raise InputError(f"this index uses {self._id_kind} ids but got {kind} ids; use one id kind per index")
        if self._id_kind is None and self._n > 0 and kind == "str":
            raise InputError("this index already has default integer ids; string ids can't be mixed in")
        # duplicates
        if kind == "int":
            uniq, counts = np.unique(new, return_counts=True)
            if (counts > 1).any():
                raise InputError(f"duplicate ids in this batch: {uniq[counts > 1][:10].tolist()}; ids must be unique")
            existing = self._existing_int_ids()
            dup = new[np.isin(new, existing)] if existing.size else new[:0]
        else:
            seen: set[str] = set()
            d_in = [v for v in new if v in seen or seen.add(v)]
            if d_in:
                raise InputError(f"duplicate ids in this batch: {d_in[:10]}; ids must be unique")
            dup = [v for v in new if self._str_set and v in self._str_set]
        if len(dup):
            shown = dup[:10].tolist() if isinstance(dup, np.ndarray) else dup[:10]
            raise InputError(f"ids already in the index: {shown}; ids must be unique "
                             "(remove the old entries by rebuilding, or choose new ids)")
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
            codes = np.empty((new_cap, self._dim), np.int8)
            codes[: self._n] = self._codes[: self._n]
            self._codes = codes
        if self._int_ids is not None:
            ids = np.empty(new_cap, np.int64)
            ids[: self._n] = self._int_ids[: self._n]
            self._int_ids = ids

    def add(self, vectors: Any, ids: Iterable[int] | Iterable[str] | None = None, model: str | None = None) -> None:
        """Add vectors (n, dim) or (dim,) with optional ids; normalizes them (cosine).

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
        self._vecs[n: n + m] = x
        if self._codes is not None:
            self._codes[n: n + m] = quantize(x, self._scales)
        if kind == "int":
            self._int_ids[n: n + m] = new_ids
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
        """Top-k by cosine: (scores float32 (nq, k'), ids (nq, k')), k' = min(k, len(index)).

        A 1-d query gives 1-d results. Best first; equal scores keep insertion order. For int8,
        ``oversample`` (default: the index's) sets the candidate count k * oversample that is
        re-ranked exactly. ``device="cuda"`` scans on the GPU (CuPy; the vectors, or the int8
        codes, are uploaded on first use and kept there until the index changes); int8
        candidates are still re-ranked exactly on the CPU, so scores equal the CPU path's.
        """
        if device not in ("cpu", "cuda"):
            raise InputError(f"device must be 'cpu' or 'cuda', got {device!r}")
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
            _, cand = topk_int8(self._codes[:n], q, self._scales, m)
            scores, rows = rescore(self._vecs[:n], q, cand, kk)
        ids = self._ids_of(rows)
        if single:
            return scores[0], ids[0]
        return scores, ids

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
        the index's model (when both are known)."""
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

    def _sections(self) -> list[tuple[str, np.ndarray]]:
        n = self._n
        secs: list[tuple[str, np.ndarray]] = [("vectors", np.asarray(self._vecs[:n]))]
        if self._precision == "int8":
            scales = self._scales if self._scales is not None else np.ones(self._dim, np.float32) / 127
            secs += [("codes", np.asarray(self._codes[:n])), ("scales", scales)]
        if self._int_ids is not None:
            secs.append(("ids", self._int_ids[:n]))
        if self._str_ids is not None:
            enc = [s.encode("utf-8") for s in self._str_ids]
            offs = np.zeros(n + 1, np.int64)
            np.cumsum([len(b) for b in enc], out=offs[1:])
            secs += [("ids_offsets", offs), ("ids_utf8", np.frombuffer(b"".join(enc), np.uint8))]
        return secs

    def save(self, path: str | os.PathLike) -> None:
        """Write the index to ``path`` atomically (temp file + fsync + os.replace)."""
        path = Path(path)
        secs = self._sections()
        meta = []
        h = hashlib.sha256()
        # header size depends on offsets: compute with a generous fixed-width placeholder first
        base = {
            "format_version": FORMAT_VERSION, "dim": self._dim, "precision": self._precision,
            "count": self._n, "model": self._model, "metric": "cosine",
            "id_kind": self._id_kind, "next_id": self._next_id, "oversample": self._oversample,
            "scales_calibrated": self._scales is not None,
        }
        for name, arr in secs:
            meta.append({"name": name, "dtype": arr.dtype.str, "shape": list(arr.shape),
                         "offset": 0, "nbytes": int(arr.nbytes)})
        # the header length must be known before offsets: iterate until stable
        header_len_guess = 0
        for _ in range(4):
            start = _align(_PREFIX + header_len_guess)
            off = start
            for sm in meta:
                sm["offset"] = off
                off = _align(off + sm["nbytes"]) if sm is not meta[-1] else off + sm["nbytes"]
            hdr = json.dumps({**base, "sections": meta, "payload_sha256": "0" * 64}).encode()
            if len(hdr) == header_len_guess:
                break
            header_len_guess = len(hdr)
        end = off
        # payload hash over the exact bytes that go to disk (sections + padding)
        pos = start
        for (name, arr), sm in zip(secs, meta):
            if sm["offset"] > pos:
                h.update(b"\x00" * (sm["offset"] - pos))
            h.update(_raw_bytes(arr))
            pos = sm["offset"] + sm["nbytes"]
        header = json.dumps({**base, "sections": meta, "payload_sha256": h.hexdigest()}).encode()
        assert len(header) == header_len_guess  # same width: hex digest replaces 64 zeros
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent or ".")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(MAGIC)
                f.write(len(header).to_bytes(8, "little"))
                f.write(hashlib.sha256(header).digest())
                f.write(header)
                pos = _PREFIX + len(header)
                for (name, arr), sm in zip(secs, meta):
                    f.write(b"\x00" * (sm["offset"] - pos))
                    f.write(_raw_bytes(arr))
                    pos = sm["offset"] + sm["nbytes"]
                assert pos == end
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        try:  # make the rename durable
            dfd = os.open(path.parent or ".", os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:
            pass

    @classmethod
    def load(cls, path: str | os.PathLike, mmap: bool = True, *, verify: bool = True) -> Index:
        """Read an index saved by ``save``.

        ``mmap=True`` memory-maps the fp32 vectors read-only (int8 codes, scales and ids are
        read into RAM); ``mmap=False`` reads everything into RAM. ``verify=True`` checks the
        payload sha256 (reads the whole file once); header and size are always checked.
        Raises IndexFormatError for a damaged, truncated or unknown-version file.
        """
        path = Path(path)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise FileNotFoundError(f"no index file at {str(path)!r}; build one and save() it first") from None
        with open(path, "rb") as f:
            prefix = f.read(_PREFIX)
            if len(prefix) < _PREFIX:
                raise _damaged(path, f"file is {size} bytes, shorter than the {_PREFIX}-byte prefix")
            if prefix[:6] != MAGIC[:6]:
                raise _damaged(path, "bad magic bytes")
            hlen = int.from_bytes(prefix[8:16], "little")
            if hlen > _MAX_HEADER or _PREFIX + hlen > size:
                raise _damaged(path, "header length out of range (truncated?)")
            header = f.read(hlen)
            if hashlib.sha256(header).digest() != prefix[16:48]:
                raise _damaged(path, "header checksum mismatch")
            try:
                meta = json.loads(header)
            except ValueError:
                raise _damaged(path, "header is not valid JSON") from None
            version = meta.get("format_version")
            if prefix[6:8] != MAGIC[6:8] or version != FORMAT_VERSION:
                raise IndexFormatError(
                    f"index file {str(path)!r} has format version {version}, this engine reads "
                    f"version {FORMAT_VERSION}; upgrade embed-engine or rebuild the index"
                )
            try:
                dim, count, precision = int(meta["dim"]), int(meta["count"]), meta["precision"]
                sections = {s["name"]: s for s in meta["sections"]}
                if precision not in PRECISIONS or dim < 1 or count < 0:
                    raise ValueError("bad dim/count/precision")
                end = max((s["offset"] + s["nbytes"] for s in sections.values()), default=_PREFIX + hlen)
                first = min((s["offset"] for s in sections.values()), default=end)
                for s in sections.values():
                    if int(np.prod(s["shape"])) * np.dtype(s["dtype"]).itemsize != s["nbytes"]:
                        raise ValueError(f"section {s['name']} size does not match its shape")
            except (KeyError, TypeError, ValueError) as e:
                raise _damaged(path, f"invalid header: {e}") from None
            if size != end:
                raise _damaged(path, f"file is {size} bytes but its header describes {end} bytes "
                                     + ("(truncated)" if size < end else "(trailing data)"))
            if verify:
                h = hashlib.sha256()
                f.seek(first)
                while True:
                    buf = f.read(16 << 20)
                    if not buf:
                        break
                    h.update(buf)
                if h.hexdigest() != meta.get("payload_sha256"):
                    raise _damaged(path, "payload checksum mismatch")

            def read(name: str, mapped: bool = False) -> np.ndarray:
                if name not in sections:
                    raise _damaged(path, f"missing section {name!r}")
                s = sections[name]
                dt, shape = np.dtype(s["dtype"]), tuple(s["shape"])
                if mapped and s["nbytes"] > 0:
                    return np.memmap(path, dtype=dt, mode="r", offset=s["offset"], shape=shape)
                f.seek(s["offset"])
                count_ = s["nbytes"] // dt.itemsize
                arr = np.fromfile(f, dtype=dt, count=count_) if count_ else np.empty(0, dt)
                if arr.size != count_:
                    raise _damaged(path, f"section {name!r} is cut short")
                return arr.reshape(shape)

            idx = cls(dim, precision, meta.get("model"), oversample=int(meta.get("oversample", DEFAULT_OVERSAMPLE)))
            vecs = read("vectors", mapped=mmap)
            if vecs.shape != (count, dim):
                raise _damaged(path, "vectors section has the wrong shape")
            idx._vecs = vecs
            idx._mapped = bool(mmap) and count > 0
            if precision == "int8":
                idx._codes = read("codes")
                if meta.get("scales_calibrated", True):
                    idx._scales = read("scales").astype(np.float32)
            kind = meta.get("id_kind")
            if "ids" in sections:
                idx._int_ids = read("ids")
            if "ids_utf8" in sections:
                offs = read("ids_offsets")
                blob = read("ids_utf8").tobytes()
                try:
                    idx._str_ids = [blob[offs[i]: offs[i + 1]].decode("utf-8") for i in range(count)]
                except (UnicodeDecodeError, IndexError):
                    raise _damaged(path, "string ids are not valid UTF-8") from None
                idx._str_set = set(idx._str_ids)
            idx._id_kind = kind
            idx._next_id = int(meta.get("next_id", count))
            idx._n = count
        return idx
