"""The on-disk format of :class:`engine.index.Index`: one file, little-endian, laid out as::

    offset 0    8 bytes   magic b"EMBIDX\\x00\\x01" (the last two bytes: format version 1)
    offset 8    uint64    header length H (at most 1 MiB)
    offset 16   32 bytes  sha256 of the header bytes
    offset 48   H bytes   header, UTF-8 JSON (json.dumps defaults): format_version, the FIELDS in
                          order, sections ({name, dtype, shape, offset, nbytes} each), payload_sha256
    S_1, S_2 ...          the sections, in the order of this table (``section_names``):

    name         dtype  shape          present
    vectors      <f4    (count, dim)   always; unit rows (cosine), finite rows (dot)
    codes        |i1    (count, dim)   int8 (each precision's sections: ``engine.index.codecs``)
    scales       <f4    (dim,)         int8; finite, > 0 (1/127 each until scales_calibrated)
    bits         <u8    (count, W)     binary: sign bits, W = ceil(dim / 64) words, padding bits 0
    ids          <i8    (count,)       id_kind "int" (explicit integer ids; null = row numbers)
    ids_offsets  <i8    (count + 1,)   id_kind "str": string i is ids_utf8[offs[i]:offs[i+1]],
    ids_utf8     |u1    (offs[-1],)    id_kind "str"   offs[0] = 0, non-decreasing

Placement: ``S_1 = align64(48 + H)``, ``S_(i+1) = align64(S_i + nbytes_i)`` (a zero-byte section
takes no room), zero padding between; the file ends at the end of the last section, and
``payload_sha256`` is the hex sha256 of every byte from ``S_1`` on. :func:`read` checks all of it and
:func:`check_values` the values an ``Index`` trusts, each failure an
:class:`~engine.errors.IndexFormatError` naming the file; :func:`write` replaces a file atomically.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from engine.arguments import is_int
from engine.errors import IndexFormatError, InputError
from engine.files import fsync_dir, open_regular, replace_atomically
from engine.precisions import INDEX_PRECISIONS

from .codecs import CODECS
from .ids import repeated

__all__ = [
    "FIELDS",
    "FORMAT_VERSION",
    "MAGIC",
    "SECTIONS",
    "bad_rows",
    "check_values",
    "read",
    "section_names",
    "write",
]

FORMAT_VERSION = 1
MAGIC = b"EMBIDX\x00\x01"
PRECISIONS = INDEX_PRECISIONS
ID_KINDS = (None, "int", "str")
#: the sections of each id kind, after the vectors and the codec's (``Codec.sections``)
ID_SECTIONS = {None: (), "int": ("ids",), "str": ("ids_offsets", "ids_utf8")}
METRICS = ("cosine", "dot")  # cosine: unit rows, dot product; dot: raw rows, inner product
# metric "dot": the largest ||v||^2 of a row or query, so |x . y| <= ||x|| ||y|| <= 1e36: finite in
# float32 (partial sums too) and far from the top-k heaps' empty sentinel, -3.4e38 (kernels/topk.py)
DOT_MAX_SQ = 1e36
ALIGN = 64
PREFIX = 8 + 8 + 32
MAX_HEADER = 1 << 20  # real headers are < 1 KiB; a crafted 64 MiB one parses into GBs of objects
MAX_ID = np.iinfo(np.int64).max
UNIT_TOL = 1e-3  # stored rows: | ||v||^2 - 1 | <= UNIT_TOL (float32 normalizing is within 1e-5)
ROW_BLOCK = 16384  # rows per block of the vectors check

#: name -> (dtype, shape from (count, dim); None for ids_utf8, whose length ids_offsets gives)
SECTIONS: dict[str, tuple[str, Any]] = {
    "vectors": ("<f4", lambda n, d: (n, d)),
    "codes": ("|i1", lambda n, d: (n, d)),
    "scales": ("<f4", lambda n, d: (d,)),
    "bits": ("<u8", lambda n, d: (n, -(-d // 64))),
    "ids": ("<i8", lambda n, d: (n,)),
    "ids_offsets": ("<i8", lambda n, d: (n + 1,)),
    "ids_utf8": ("|u1", None),
}


#: the header fields the Index passes to ``write`` and gets back from ``read``, with their checks
FIELDS = {
    "dim": lambda v: is_int(v) and v >= 1,
    "precision": lambda v: v in PRECISIONS,
    "count": lambda v: is_int(v) and v >= 0,
    "model": lambda v: v is None or isinstance(v, str),
    "metric": lambda v: v in METRICS,
    "id_kind": lambda v: v in ID_KINDS,
    "next_id": lambda v: is_int(v) and 0 <= v <= MAX_ID + 1,
    "oversample": lambda v: is_int(v) and v >= 1,
    "scales_calibrated": lambda v: isinstance(v, bool),
}


def section_names(precision: str, id_kind: str | None) -> list[str]:
    """The sections a file of this precision and id kind holds, in file order."""
    return ["vectors", *CODECS[precision].sections, *ID_SECTIONS[id_kind]]


def _damaged(path: Path, why: str) -> IndexFormatError:
    """The error for a file that breaks a rule of the format (``why``), naming the file."""
    return IndexFormatError(
        f"index file {str(path)!r} is damaged or not an index file ({why}); "
        "rebuild the index from the source vectors and save it again"
    )


def _align(x: int) -> int:
    """``x`` rounded up to a multiple of ``ALIGN``."""
    return -(-x // ALIGN) * ALIGN


def _offsets(header_len: int, sizes: list[int]) -> list[int]:
    """Where each section starts: the first at align64(48 + H), each next at align64(previous end)."""
    out, off = [], _align(PREFIX + header_len)
    for nbytes in sizes:
        out.append(off)
        off = _align(off + nbytes)
    return out


def _raw_bytes(arr: np.ndarray) -> np.ndarray:
    """The bytes of an array as a flat uint8 array (works for empty arrays and memmaps)."""
    return np.ascontiguousarray(arr).reshape(-1).view(np.uint8)


# ---------------------------------------------------------------------------------- writing


def _encode_strings(ids: list[str]) -> dict[str, np.ndarray]:
    """String ids as the ``ids_offsets`` and ``ids_utf8`` sections."""
    enc = [s.encode("utf-8") for s in ids]
    offs = np.zeros(len(enc) + 1, np.int64)
    np.cumsum([len(b) for b in enc], out=offs[1:])
    return {"ids_offsets": offs, "ids_utf8": np.frombuffer(b"".join(enc), np.uint8)}


def write(path: str | os.PathLike, fields: dict[str, Any], arrays: dict[str, Any]) -> None:
    """Write an index file atomically.

    The bytes go to a temporary file in the same directory (mode 0o666 less the umask), fsynced and
    ``os.replace``-d over ``path`` (:func:`engine.files.replace_atomically`), so readers see the old
    file or the new one, never a mix. The header lists the sections' offsets, which depend on its
    length: it is rebuilt until its length is a fixed point (the digest's width is fixed).

    Args:
        path: The file to write.
        fields: The header values, the keys of ``FIELDS``.
        arrays: The sections of ``section_names(precision, id_kind)``: ``vectors`` (count, dim)
            float32, the codec's sections, and ``ids``, an int64 array (id_kind "int") or a list of
            str ("str").

    Raises:
        InputError: The header would pass ``MAX_HEADER``, or ``path`` exists and is not a regular file.
        OutputError: Writing failed (an OSError naming ``path``); the old file is intact.
    """
    path = Path(path)
    given = dict(arrays)
    if fields["id_kind"] == "str":
        given.update(_encode_strings(given.pop("ids")))
    secs = [
        (name, np.asarray(given[name], dtype=SECTIONS[name][0]))
        for name in section_names(fields["precision"], fields["id_kind"])
    ]
    table: list[dict[str, Any]] = [
        {"name": name, "dtype": arr.dtype.str, "shape": list(arr.shape), "offset": 0, "nbytes": int(arr.nbytes)}
        for name, arr in secs
    ]
    base = {
        "format_version": FORMAT_VERSION,
        "dim": fields["dim"],
        "precision": fields["precision"],
        "count": fields["count"],
        "model": fields["model"],
        "metric": fields["metric"],
        "id_kind": fields["id_kind"],
        "next_id": fields["next_id"],
        "oversample": fields["oversample"],
        "scales_calibrated": fields["scales_calibrated"],
    }

    def header(digest: str, header_len: int) -> bytes:
        for entry, off in zip(table, _offsets(header_len, [e["nbytes"] for e in table])):
            entry["offset"] = off
        return json.dumps({**base, "sections": table, "payload_sha256": digest}).encode()

    hlen = 0  # offsets depend on the header's length: fixed point
    while len(hdr := header("0" * 64, hlen)) != hlen:
        hlen = len(hdr)
    h = hashlib.sha256()  # over the exact bytes that go to disk after the header
    for chunk in _payload(secs, table):
        h.update(chunk)
    hdr = header(h.hexdigest(), hlen)
    if len(hdr) > MAX_HEADER:
        raise InputError(
            f"the index header would be {len(hdr)} bytes, over the format's {MAX_HEADER}; "
            "use a shorter model fingerprint"
        )
    prefix = MAGIC + len(hdr).to_bytes(8, "little") + hashlib.sha256(hdr).digest() + hdr
    padding = b"\x00" * (table[0]["offset"] - PREFIX - len(hdr))
    replace_atomically(
        path,
        itertools.chain([prefix, padding], _payload(secs, table)),
        prefix=path.name + ".",
        suffix=".tmp",
        sync_dir=False,
    )
    with contextlib.suppress(OSError):  # make the rename durable
        fsync_dir(path.parent)


def _payload(secs: list[tuple[str, np.ndarray]], table: list[dict]):
    """The bytes from the first section's offset to the end: sections and the padding between."""
    pos = table[0]["offset"]
    for (_, arr), entry in zip(secs, table):
        if entry["offset"] > pos:
            yield b"\x00" * (entry["offset"] - pos)
        yield _raw_bytes(arr)
        pos = entry["offset"] + entry["nbytes"]


# ---------------------------------------------------------------------------------- reading


def read(path: str | os.PathLike, *, mmap: bool = True, verify: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read and validate an index file.

    Opens regular files only (a fifo, a device or a folder is refused; nothing blocks). Always
    checks the magic, the header hash, the header's size (``MAX_HEADER``) and nesting (a deeply
    nested header is refused, not a RecursionError), every header field (``FIELDS``), every
    section against the table (name and order, dtype, shape against count/dim, nbytes, offset as
    placed) and the file size (:func:`_check_sections`), and, after reading them, the values a
    later step trusts: scales, padding bits, string-id offsets and UTF-8 (:func:`_decode`).

    Args:
        path: The index file.
        mmap: Memory-map the vectors read-only (everything else is read into RAM).
        verify: Also check the payload sha256 (one sequential read of the whole file).

    Returns:
        ``(fields, arrays)`` as ``write`` takes them (string ids as a list of str).

    Raises:
        FileNotFoundError: No file at ``path``.
        IndexFormatError: Anything wrong inside the file, or a path that is not a regular file.
    """
    path = Path(path)
    try:
        f = open_regular(path, "Pass the path of an index file written by Index.save")
    except FileNotFoundError:
        raise FileNotFoundError(f"no index file at {str(path)!r}; build one and save() it first") from None
    with f:
        size = os.fstat(f.fileno()).st_size
        hlen, meta = _read_header(f, path, size)
        fields = _check_fields(path, meta)
        table = _check_sections(path, fields, meta.get("sections"), hlen, size)
        if verify:
            h = hashlib.sha256()
            f.seek(table[0]["offset"])
            while buf := f.read(16 << 20):
                h.update(buf)
            if h.hexdigest() != meta.get("payload_sha256"):
                raise _damaged(path, "payload checksum mismatch")
        arrays = {e["name"]: _read_section(f, path, e, mmap and e["name"] == "vectors") for e in table}
    return fields, _decode(path, fields, arrays)


def _read_header(f, path: Path, size: int) -> tuple[int, dict]:
    """The header's length and its parsed JSON object, after the prefix and hash checks."""
    prefix = f.read(PREFIX)
    if len(prefix) < PREFIX:
        raise _damaged(path, f"file is {size} bytes, shorter than the {PREFIX}-byte prefix")
    if prefix[:6] != MAGIC[:6]:
        raise _damaged(path, "bad magic bytes")
    hlen = int.from_bytes(prefix[8:16], "little")
    if hlen > MAX_HEADER or PREFIX + hlen > size:
        raise _damaged(path, "header length out of range (truncated?)")
    header = f.read(hlen)
    if hashlib.sha256(header).digest() != prefix[16:48]:
        raise _damaged(path, "header checksum mismatch")
    try:
        meta = json.loads(header)
    except ValueError:
        raise _damaged(path, "header is not valid JSON") from None
    except RecursionError:
        raise _damaged(path, "header JSON is nested too deeply") from None
    if not isinstance(meta, dict):
        raise _damaged(path, "header is not a JSON object")
    version = meta.get("format_version")
    if prefix[6:8] != MAGIC[6:8] or version != FORMAT_VERSION:
        raise IndexFormatError(
            f"index file {str(path)!r} has format version {version}, this engine reads "
            f"version {FORMAT_VERSION}; upgrade embed-engine or rebuild the index"
        )
    return hlen, meta


def _check_fields(path: Path, meta: dict) -> dict[str, Any]:
    """The ``FIELDS`` of the header, each present and valid."""
    for key, ok in FIELDS.items():
        if key not in meta:
            raise _damaged(path, f"header has no {key!r}")
        if not ok(meta[key]):
            raise _damaged(path, f"header field {key!r} has an invalid value {meta[key]!r}")
    return {key: meta[key] for key in FIELDS}


def _check_sections(path: Path, fields: dict, table: Any, hlen: int, size: int) -> list[dict]:
    """Every section's name and order, dtype, shape (against count/dim), size, offset, and the
    file size: the one place that decides whether a section's bytes may be read."""
    want = section_names(fields["precision"], fields["id_kind"])
    if not isinstance(table, list) or not all(isinstance(e, dict) for e in table):
        raise _damaged(path, "the section table is not a list of objects")
    names = [e.get("name") for e in table]
    if names != want:
        raise _damaged(
            path,
            f"sections are {names}, a {fields['precision']} index with "
            f"{fields['id_kind'] or 'row-number'} ids has {want}",
        )
    n, d = fields["count"], fields["dim"]
    for e in table:
        name, shape = e["name"], e.get("shape")
        dtype, shape_of = SECTIONS[name]
        if e.get("dtype") != dtype:
            raise _damaged(path, f"section {name!r} has dtype {e.get('dtype')!r}, expected {dtype!r}")
        if not isinstance(shape, list) or not all(is_int(s) and s >= 0 for s in shape):
            raise _damaged(path, f"section {name!r} has shape {shape!r}, not a list of sizes >= 0")
        expected = list(shape_of(n, d)) if shape_of else (shape[:1] or [0])  # ids_utf8: any length
        if shape != expected:
            raise _damaged(path, f"section {name!r} has shape {shape}, expected {expected} for count={n}, dim={d}")
        nbytes = e.get("nbytes")
        if not is_int(nbytes) or nbytes != math.prod(shape) * np.dtype(dtype).itemsize:
            raise _damaged(path, f"section {name!r} size {nbytes!r} does not match its shape {shape}")
    for e, off in zip(table, _offsets(hlen, [e["nbytes"] for e in table])):
        if not is_int(e.get("offset")) or e["offset"] != off:
            raise _damaged(path, f"section {e['name']!r} starts at {e.get('offset')!r}, the layout puts it at {off}")
    end = table[-1]["offset"] + table[-1]["nbytes"]
    if size != end:
        raise _damaged(
            path,
            f"file is {size} bytes but its header describes {end} bytes "
            + ("(truncated)" if size < end else "(trailing data)"),
        )
    return table


def _read_section(f, path: Path, entry: dict, mapped: bool) -> np.ndarray:
    """One section's array, as validated by ``_check_sections``."""
    dt, shape = np.dtype(entry["dtype"]), tuple(entry["shape"])
    if mapped and entry["nbytes"] > 0:  # mapped from the open file, not reopened by name
        return np.memmap(f, dtype=dt, mode="r", offset=entry["offset"], shape=shape)
    f.seek(entry["offset"])
    count = entry["nbytes"] // dt.itemsize
    arr = np.fromfile(f, dtype=dt, count=count) if count else np.empty(0, dt)
    if arr.size != count:  # the file shrank after the size check
        raise _damaged(path, f"section {entry['name']!r} is cut short")
    return arr.reshape(shape)


def _decode(path: Path, fields: dict, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """Check the values later steps trust, and turn string-id sections into a list of str."""
    out: dict[str, Any] = {"vectors": arrays["vectors"]}
    if fields["precision"] == "int8":
        scales = arrays["scales"]
        if not (np.all(np.isfinite(scales)) and np.all(scales > 0)):
            raise _damaged(path, "int8 scales are not all finite and positive")
        out.update(codes=arrays["codes"], scales=scales)
    elif fields["precision"] == "binary":
        bits, pad = arrays["bits"], fields["dim"] % 64
        if pad and len(bits) and np.any(bits[:, -1] >> np.uint64(pad)):
            raise _damaged(path, f"binary codes set padding bits above dimension {fields['dim']}")
        out["bits"] = bits
    if fields["id_kind"] == "int":
        out["ids"] = arrays["ids"]
    elif fields["id_kind"] == "str":
        offs, blob = arrays["ids_offsets"], arrays["ids_utf8"].tobytes()
        if offs[0] != 0 or offs[-1] != len(blob) or np.any(np.diff(offs) < 0):
            raise _damaged(path, "string-id offsets do not run from 0 up to the size of ids_utf8")
        bounds = offs.tolist()
        try:
            out["ids"] = [blob[a:b].decode("utf-8") for a, b in itertools.pairwise(bounds)]
        except UnicodeDecodeError:
            raise _damaged(path, "string ids are not valid UTF-8") from None
    return out


# ---------------------------------------------------------------------------------- values an Index trusts


def bad_rows(vectors: np.ndarray, limit: int = 10, *, unit: bool = True) -> list[int]:
    """The rows that are not finite unit vectors, or for metric "dot" not finite ones.

    ``||v||^2 = sum_j v_j^2`` per row in float32; a bad row has ``| ||v||^2 - 1 | > UNIT_TOL``
    (NaN, inf and zero rows included), or with ``unit=False`` a NaN ``||v||^2`` or one above
    ``DOT_MAX_SQ`` (inf included). Reads ``vectors`` once, ``ROW_BLOCK`` rows at a time (a memmap
    is paged in block by block).

    Args:
        vectors: (n, dim) float32 rows (an array or a memmap).
        limit: At most this many row numbers are returned.
        unit: Check for unit rows (cosine); False checks for finite ones of bounded norm (dot).

    Returns:
        Up to ``limit`` row numbers, in order.
    """
    out: list[int] = []
    with np.errstate(all="ignore"):
        for start in range(0, len(vectors), ROW_BLOCK):
            block = np.asarray(vectors[start : start + ROW_BLOCK])
            sq = np.einsum("ij,ij->i", block, block)
            ok = np.abs(sq - 1) <= UNIT_TOL if unit else sq <= DOT_MAX_SQ
            out += (np.flatnonzero(~ok) + start)[: limit - len(out)].tolist()
            if len(out) >= limit:
                break
    return out


def describe_row(row: np.ndarray) -> str:
    """What is wrong with a row ``bad_rows`` found."""
    row = np.asarray(row, dtype=np.float64)
    if not np.isfinite(row).all():
        return "holds NaN or inf"
    norm = float(np.sqrt(np.sum(row * row)))
    if norm * norm > DOT_MAX_SQ:
        return f"has norm {norm:.6g}, above the {DOT_MAX_SQ**0.5:.0e} a dot-product index holds"
    return "is all zeros" if norm == 0 else f"has norm {norm:.6g}, not 1"


def _first_row_not_encoded(vectors, codes, encode) -> int | None:
    """The first row whose ``codes`` differ from ``encode`` of its vector (what ``Index.add``
    stores), None when all agree; ``ROW_BLOCK`` rows at a time, so a mapped file is read once."""
    for start in range(0, len(vectors), ROW_BLOCK):
        block = np.asarray(vectors[start : start + ROW_BLOCK])
        differ = np.flatnonzero((encode(block) != codes[start : start + ROW_BLOCK]).any(axis=1))
        if differ.size:
            return start + int(differ[0])
    return None


def check_values(
    path: str | os.PathLike, fields: dict[str, Any], arrays: dict[str, Any], *, rows: bool = True
) -> set[str] | None:
    """Check what an Index trusts beyond the layout ``read`` checks.

    * ``rows``: every vector row is a finite unit vector, or for metric "dot" a finite one
      (``bad_rows``, one read of the section);
    * an int8 index with rows has calibrated scales (its first ``add`` calibrates them);
    * ``rows``, binary: the sign bits are those of the vectors (``pack_signs``; bits that
      disagree would only cost recall, but a file saying so is not the one that was saved);
    * ``rows``, int8: the codes are the vectors quantized with the file's scales (``quantize``:
      every ``add`` writes exactly that; codes that disagree would send the first stage after the
      wrong candidates);
    * ids are unique (integer or string);
    * ``next_id`` (the next default id): equals ``count`` for row-number ids, and is above every
      integer id for integer ids (unused for string ids).

    Args:
        path: The file the values come from (for the error messages).
        fields: The header fields, as ``read`` returns them.
        arrays: The sections, as ``read`` returns them.
        rows: Check the vector rows and the codes made of them (one read of the vectors).

    Returns:
        The set of string ids (built for the check), None for other id kinds.

    Raises:
        IndexFormatError: A value breaks one of these rules, naming the file.
    """
    path = Path(path)
    vectors = arrays["vectors"]
    unit = fields.get("metric", "cosine") == "cosine"
    if rows and (bad := bad_rows(vectors, unit=unit)):
        raise _damaged(
            path,
            f"vector row {bad[0]} {describe_row(vectors[bad[0]])} (bad rows: {bad}); "
            f"stored vectors must be finite{' unit' if unit else ''} vectors",
        )
    if fields["precision"] == "int8" and fields["count"] and not fields["scales_calibrated"]:
        raise _damaged(path, f"an int8 index of {fields['count']} rows without calibrated scales")
    if rows and fields["precision"] == "binary":
        from engine.kernels.binary import pack_signs

        if (row := _first_row_not_encoded(vectors, arrays["bits"], pack_signs)) is not None:
            raise _damaged(path, f"the binary codes of row {row} are not the signs of its vector")
    if rows and fields["precision"] == "int8":
        from engine.kernels.quantize import quantize

        encode = functools.partial(quantize, scales=arrays["scales"])
        if (row := _first_row_not_encoded(vectors, arrays["codes"], encode)) is not None:
            raise _damaged(path, f"the int8 codes of row {row} are not its vector quantized with the file's scales")
    kind, next_id = fields["id_kind"], fields["next_id"]
    str_set = None
    if kind == "int" and len(ids := arrays["ids"]):
        srt = np.sort(ids)
        dup = srt[1:][srt[1:] == srt[:-1]]
        if dup.size:
            raise _damaged(path, f"ids repeat: {np.unique(dup)[:10].tolist()}")
        if next_id < int(srt[-1]) + 1:
            raise _damaged(path, f"next_id {next_id} is not above the largest id {int(srt[-1])}")
    elif kind == "str":
        str_set = set(ids := arrays["ids"])
        if len(str_set) != len(ids):
            raise _damaged(path, f"ids repeat: {repeated(ids)[:10]}")
    elif kind is None and next_id != fields["count"]:
        raise _damaged(path, f"next_id {next_id} differs from count {fields['count']} (row-number ids)")
    return str_set
