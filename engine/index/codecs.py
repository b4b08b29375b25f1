"""One codec per index precision: the first-stage codes an ``Index`` keeps next to its fp32 rows.

An ``Index`` always stores its rows in float32 and holds one codec (``CODECS[precision]``) that
owns what differs between precisions:

* ``fp32``: no codes; a search is the exact float scan (``engine.kernels.topk.topk_dot``).
* ``int8``: codes ``c_ij = clip(rint(x_ij / s_j), -127, 127)`` with per-dimension scales ``s``
  (``engine.kernels.quantize``) calibrated on the first ``add`` (at most ``CALIBRATION_ROWS`` rows
  of it, sampled with a fixed seed) or given, fixed afterwards. Candidates: the top
  ``k * oversample`` rows by the integer score ``sum_j qq_j * c_ij`` of 7-bit queries (the fused
  scan, or from ``qgemm.gemm_min_queries()`` queries on the blocked GEMM of ``engine.index.qgemm``;
  both give the same candidates, so a query's results do not depend on its batch).
* ``binary``: sign bits, bit ``j % 64`` of word ``j // 64`` set when ``x_j > 0``, padding bits 0
  (``engine.kernels.binary.pack_signs``). Candidates: the top ``k * oversample`` rows by
  ``dim - 2 * hamming(bits(row), bits(query))``. CPU only.

int8 and binary then re-rank their candidates with exact float32 dot products against the fp32
rows (``engine.kernels.topk.rescore``), so returned scores are exact for every precision; only the
recall of the candidates is approximate. A codec also says which file sections it writes and reads
(``sections``; the layout is :mod:`engine.index.format`'s) and how many bytes its codes hold.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from engine.errors import InputError
from engine.kernels.binary import pack_signs, topk_hamming
from engine.kernels.quantize import U8S8_QMAX, calibrate_scales, quantize, topk_int8
from engine.kernels.topk import rescore, topk_dot

from .qgemm import gemm_min_queries, topk_int8_gemm

__all__ = [
    "CODECS",
    "DEFAULT_OVERSAMPLE",
    "DEFAULT_OVERSAMPLE_BINARY",
    "BinaryCodec",
    "Codec",
    "Fp32Codec",
    "Int8Codec",
]

# chosen by measurement: bench/experiments/index_notes.md#default-oversampling
DEFAULT_OVERSAMPLE = 4  # int8: candidates per result kept for rescoring
DEFAULT_OVERSAMPLE_BINARY = 40  # binary: its sign bits rank far more coarsely
CALIBRATION_ROWS = 100_000  # int8 scales are calibrated on at most this many rows of the first add


class Codec:
    """The part of an ``Index`` that depends on its precision (a subclass per precision).

    A codec holds the first-stage codes of the index's rows (``codes``: a capacity buffer, or
    None) and any parameters they need. The ``Index`` keeps the fp32 rows, ids and validation,
    and calls: ``add`` to encode new rows, ``search`` / ``search_cuda`` to rank, ``grow`` when
    its buffers grow, and ``arrays`` / ``restore`` to save and load the codec's file sections.

    Args:
        dim: Dimension of the rows.
        scales: int8 scales; only ``Int8Codec`` takes them.

    Raises:
        InputError: ``scales`` given to a codec that has none.
    """

    precision: ClassVar[str]
    default_oversample: ClassVar[int]
    #: the file sections this precision writes after "vectors", in file order
    sections: ClassVar[tuple[str, ...]] = ()
    #: dtype of the codes; None for a codec without codes
    dtype: ClassVar[type | None] = None
    #: int8 per-dimension scales (None: not calibrated yet, or a codec without scales)
    scales: np.ndarray | None = None

    def __init__(self, dim: int, scales: np.ndarray | None = None) -> None:
        if scales is not None:
            raise InputError("scales= only applies to precision='int8'")
        self.dim = dim
        self.codes: np.ndarray | None = None if self.dtype is None else np.empty((0, self.width), self.dtype)

    @property
    def width(self) -> int:
        """Code columns per row (0 without codes)."""
        return 0

    def encode(self, x: np.ndarray) -> np.ndarray:
        """The codes of validated float32 rows ``x`` (m, dim)."""
        raise NotImplementedError

    def add(self, x: np.ndarray, start: int) -> None:
        """Store the codes of rows ``x`` at rows ``start:start + len(x)`` (capacity already grown)."""
        if self.codes is not None:
            self.codes[start : start + len(x)] = self.encode(x)

    def grow(self, capacity: int, n: int) -> None:
        """Move the codes of the first ``n`` rows into a new buffer of ``capacity`` rows."""
        if self.codes is not None:
            codes = np.empty((capacity, self.width), self.dtype)
            codes[:n] = self.codes[:n]
            self.codes = codes

    def candidates(self, queries: np.ndarray, n: int, m: int) -> np.ndarray:
        """The first stage: the rows whose codes score best against each query.

        Args:
            queries: Validated float32 queries (nq, dim), unit rows for cosine.
            n: Rows of the index (the codes buffer may hold more).
            m: Candidates per query, at most ``n``.

        Returns:
            Row numbers int64 (nq, m), best first by the codes' score, ties by smaller row.
        """
        raise NotImplementedError

    def search(
        self, vectors: np.ndarray, queries: np.ndarray, k: int, oversample: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The best ``k`` rows per query: ``k * oversample`` candidates, re-ranked by exact dot products.

        Args:
            vectors: The index's n fp32 rows.
            queries: Validated float32 queries (nq, dim).
            k: Results per query, 1 <= k <= n.
            oversample: Candidates per result.

        Returns:
            ``(scores float32 (nq, k), rows int64 (nq, k))``: exact dot products, best first, equal
            scores by smaller row.
        """
        n = len(vectors)
        return rescore(vectors, queries, self.candidates(queries, n, min(n, k * oversample)), k)

    def check_device(self, device: str) -> None:
        """Raise InputError if this precision cannot search on ``device`` ("cpu" or "cuda")."""

    def device_rows(self, vectors: np.ndarray) -> np.ndarray:
        """What the GPU scan reads for these fp32 rows: the codes of the same rows."""
        assert self.codes is not None  # a codec without codes (fp32) overrides this
        return self.codes[: len(vectors)]

    def search_cuda(
        self, corpus: Any, vectors: np.ndarray, queries: np.ndarray, k: int, oversample: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """``search`` with the scan on the GPU.

        Args:
            corpus: ``device_rows(vectors)`` on the GPU (``engine.kernels.cuda.to_device``).
            vectors, queries, k, oversample: As for ``search``.

        Returns:
            ``(scores, rows)`` as ``search`` returns them.
        """
        raise NotImplementedError

    def resident_bytes(self, n: int) -> int:
        """Bytes the codec holds in RAM for ``n`` rows: their codes, plus the scales if any."""
        codes = 0 if self.codes is None else n * self.width * self.codes.itemsize
        return codes + (0 if self.scales is None else self.scales.nbytes)

    def arrays(self, n: int) -> dict[str, np.ndarray]:
        """The codec's file sections (``sections``) for the first ``n`` rows."""
        return {}

    def restore(self, arrays: dict[str, Any], calibrated: bool) -> None:
        """Take the codec's sections from a file.

        Args:
            arrays: The sections as ``engine.index.format.read`` returns them.
            calibrated: The header's ``scales_calibrated`` (int8: whether ``scales`` are real).
        """


class Fp32Codec(Codec):
    """fp32: no codes; every search is the exact float32 scan."""

    precision = "fp32"
    default_oversample = DEFAULT_OVERSAMPLE  # unused by the scan; kept in the file like the others'

    def search(
        self, vectors: np.ndarray, queries: np.ndarray, k: int, oversample: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k`` by dot product over all rows (``oversample`` is not used)."""
        return topk_dot(vectors, queries, k)

    def device_rows(self, vectors: np.ndarray) -> np.ndarray:
        """The fp32 rows themselves."""
        return vectors

    def search_cuda(
        self, corpus: Any, vectors: np.ndarray, queries: np.ndarray, k: int, oversample: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The exact scan on the GPU."""
        from engine.kernels import cuda as kc

        return kc.topk_dot_cuda(corpus, queries, k)


class Int8Codec(Codec):
    """int8: per-dimension int8 codes, integer-score candidates, exact rescoring.

    The scales stay fixed after calibration, so components of later rows beyond the calibrated
    range saturate at +-127: scores stay exact (rescoring), but candidate recall can suffer if
    later data is distributed very differently; pass a representative first batch.

    Args:
        dim: Dimension of the rows.
        scales: Per-dimension scales (dim finite positive numbers) to use instead of calibrating
            them on the first ``add``.

    Raises:
        InputError: ``scales`` not ``dim`` finite positive numbers.
    """

    precision = "int8"
    default_oversample = DEFAULT_OVERSAMPLE
    sections = ("codes", "scales")
    dtype = np.int8
    codes: np.ndarray  # never None: the codec has a dtype

    def __init__(self, dim: int, scales: np.ndarray | None = None) -> None:
        super().__init__(dim)
        if scales is not None:
            s = np.asarray(scales, dtype=np.float32).reshape(-1)
            if s.shape != (dim,) or not np.all(np.isfinite(s)) or np.any(s <= 0):
                raise InputError(
                    f"scales must be {dim} finite positive numbers; compute them "
                    "with engine.kernels.quantize.calibrate_scales"
                )
            self.scales = s.copy()

    @property
    def width(self) -> int:
        """One code per dimension."""
        return self.dim

    def encode(self, x: np.ndarray) -> np.ndarray:
        """``clip(rint(x / scales), -127, 127)`` as int8 (``engine.kernels.quantize.quantize``)."""
        return quantize(x, self.scales)

    def add(self, x: np.ndarray, start: int) -> None:
        """Calibrate the scales on the first rows ever added (a seeded sample of at most
        ``CALIBRATION_ROWS``), then store the codes."""
        if self.scales is None:
            sample = x
            if len(x) > CALIBRATION_ROWS:
                rows = np.sort(np.random.default_rng(0).choice(len(x), CALIBRATION_ROWS, replace=False))
                sample = x[rows]
            self.scales = calibrate_scales(sample)
        super().add(x, start)

    def candidates(self, queries: np.ndarray, n: int, m: int) -> np.ndarray:
        """Top ``m`` by the integer scores of 7-bit queries: the blocked GEMM for many queries, the
        fused scan for few; both rank alike, so the batch never changes a query's candidates."""
        assert self.scales is not None  # calibrated by the first add, or required of a loaded file with rows
        if len(queries) >= gemm_min_queries():
            return topk_int8_gemm(self.codes[:n], queries, self.scales, m)[1]
        return topk_int8(self.codes[:n], queries, self.scales, m, qmax=U8S8_QMAX)[1]

    def search_cuda(
        self, corpus: Any, vectors: np.ndarray, queries: np.ndarray, k: int, oversample: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Candidates from the GPU's int8 scan, re-ranked exactly on the CPU (scores as ``search``'s)."""
        from engine.kernels import cuda as kc

        _, cand = kc.topk_int8_cuda(corpus, queries, self.scales, min(len(vectors), k * oversample))
        return rescore(vectors, queries, cand, k)

    def arrays(self, n: int) -> dict[str, np.ndarray]:
        """``codes`` and ``scales`` (1/127 each until calibrated; ``scales_calibrated`` says which)."""
        scales = self.scales if self.scales is not None else np.ones(self.dim, np.float32) / 127
        return {"codes": self.codes[:n], "scales": scales}

    def restore(self, arrays: dict[str, Any], calibrated: bool) -> None:
        """The file's codes, and its scales when they were calibrated."""
        self.codes = arrays["codes"]
        if calibrated:
            self.scales = arrays["scales"]


class BinaryCodec(Codec):
    """binary: sign bits packed in uint64 words, Hamming candidates, exact rescoring; CPU only.

    The binary + rescore recipe of sentence-transformers' embedding quantization, rescored with the
    stored fp32 rows (exact scores) rather than the float query against the unpacked +-1 codes.
    Signs keep only a vector's direction, so a "dot" model with widely varying norms recalls less:
    raise ``oversample`` or use int8.
    """

    precision = "binary"
    default_oversample = DEFAULT_OVERSAMPLE_BINARY
    sections = ("bits",)
    dtype = np.uint64
    codes: np.ndarray  # never None: the codec has a dtype

    @property
    def width(self) -> int:
        """``ceil(dim / 64)`` words per row."""
        return -(-self.dim // 64)

    def encode(self, x: np.ndarray) -> np.ndarray:
        """Sign bits of ``x`` (``engine.kernels.binary.pack_signs``)."""
        return pack_signs(x)

    def candidates(self, queries: np.ndarray, n: int, m: int) -> np.ndarray:
        """Top ``m`` by ``dim - 2 * hamming`` of the sign bits (a popcount scan)."""
        return topk_hamming(self.codes[:n], queries, self.dim, m)[1]

    def check_device(self, device: str) -> None:
        """The Hamming scan runs on the CPU only."""
        if device == "cuda":
            raise InputError(
                "a binary index searches on the CPU only (its Hamming scan reads 32x less than fp32); "
                "use device='cpu', or an fp32/int8 index for device='cuda'"
            )

    def arrays(self, n: int) -> dict[str, np.ndarray]:
        """``bits``."""
        return {"bits": self.codes[:n]}

    def restore(self, arrays: dict[str, Any], calibrated: bool) -> None:
        """The file's bits."""
        self.codes = arrays["bits"]


#: index precision (``engine.precisions.INDEX_PRECISIONS``) -> its codec
CODECS: dict[str, type[Codec]] = {"fp32": Fp32Codec, "int8": Int8Codec, "binary": BinaryCodec}
