"""The on-disk format of :class:`engine.index.Index`: one file, little-endian.

Byte layout::

    offset 0    8 bytes   magic b"EMBIDX\\x00\\x01" (the last two bytes: format version 1)
    offset 8    uint64    header length H (at most 64 MiB)
    offset 16   32 bytes  sha256 of the header bytes
    offset 48   H bytes   header, UTF-8 JSON (json.dumps defaults), keys in this order:
                          format_version, dim, precision ("fp32" | "int8"), count, model (str |
                          null), metric ("cosine"), id_kind (null | "int" | "str"), next_id,
                          oversample, scales_calibrated, sections, payload_sha256
    S_1, S_2 ...          the sections, in the order of the table below, zero padding between

Sections (``sections`` in the header lists ``{name, dtype, shape, offset, nbytes}`` for each)::

    name         dtype  shape          present
    vectors      <f4    (count, dim)   always; unit rows
    codes        |i1    (count, dim)   precision int8
    scales       <f4    (dim,)         precision int8; finite, > 0 (1/127 each until calibrated,
                                       scales_calibrated says which)
    ids          <i8    (count,)       id_kind "int" (explicit integer ids; null = row numbers)
    ids_offsets  <i8    (count + 1,)   id_kind "str": string i is ids_utf8[offs[i]:offs[i+1]],
    ids_utf8     |u1    (offs[-1],)    id_kind "str"   offs[0] = 0, non-decreasing

Placement: ``S_1 = align64(48 + H)`` and ``S_(i+1) = align64(S_i + nbytes_i)``; a zero-byte
section takes no room. The file ends exactly at the end of the last section (no padding after
it). ``payload_sha256`` is the hex sha256 of every byte from ``S_1`` to the end of the file.
The header's length depends on the offsets it lists and they on its length; the writer
iterates to the fixed point (the digest's width is fixed, so writing it changes nothing).

``read`` always checks the magic, the header hash, every header field, and every section
against the table (name and order, dtype, shape against count/dim, nbytes, offset as placed
above) and the file size (a truncated file fails there), in :func:`_check_sections`; it checks
the values a later step would trust (scales, string-id offsets and UTF-8) after reading them,
in :func:`_decode`; and, with ``verify=True``, the payload hash (one sequential read). Every
failure is an :class:`~engine.errors.IndexFormatError` naming the file and what is wrong.
``write`` writes a temporary file in the same directory, fsyncs it and ``os.replace``-s it over
``path``: readers see the old file or the new one, never a mix.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import IndexFormatError

__all__ = ["FIELDS", "FORMAT_VERSION", "MAGIC", "SECTIONS", "read", "section_names", "write"]

FORMAT_VERSION = 1
MAGIC = b"EMBIDX\x00\x01"
PRECISIONS = ("fp32", "int8")
ID_KINDS = (None, "int", "str")
METRIC = "cosine"
ALIGN = 64
PREFIX = 8 + 8 + 32
MAX_HEADER = 64 << 20

#: name -> (dtype, shape from (count, dim); None for ids_utf8, whose length ids_offsets gives)
SECTIONS: dict[str, tuple[str, Any]] = {
    "vectors": ("<f4", lambda n, d: (n, d)),
    "codes": ("|i1", lambda n, d: (n, d)),
    "scales": ("<f4", lambda n, d: (d,)),
    "ids": ("<i8", lambda n, d: (n,)),
    "ids_offsets": ("<i8", lambda n, d: (n + 1,)),
    "ids_utf8": ("|u1", None),
}


def _is_int(v: Any) -> bool:
    return type(v) is int


#: the header fields the Index passes to ``write`` and gets back from ``read``, with their checks
FIELDS = {
    "dim": lambda v: _is_int(v) and v >= 1,
    "precision": lambda v: v in PRECISIONS,
    "count": lambda v: _is_int(v) and v >= 0,
    "model": lambda v: v is None or isinstance(v, str),
    "id_kind": lambda v: v in ID_KINDS,
    "next_id": lambda v: _is_int(v) and v >= 0,
    "oversample": lambda v: _is_int(v) and v >= 1,
    "scales_calibrated": lambda v: isinstance(v, bool),
}


def section_names(precision: str, id_kind: str | None) -> list[str]:
    """The sections a file of this precision and id kind holds, in file order."""
    names = ["vectors"]
    if precision == "int8":
        names += ["codes", "scales"]
    if id_kind == "int":
        names.append("ids")
    elif id_kind == "str":
        names += ["ids_offsets", "ids_utf8"]
    return names


def _damaged(path: Path, why: str) -> IndexFormatError:
    return IndexFormatError(
        f"index file {str(path)!r} is damaged or not an index file ({why}); "
        "rebuild the index from the source vectors and save it again"
    )


def _align(x: int) -> int:
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
    enc = [s.encode("utf-8") for s in ids]
    offs = np.zeros(len(enc) + 1, np.int64)
    np.cumsum([len(b) for b in enc], out=offs[1:])
    return {"ids_offsets": offs, "ids_utf8": np.frombuffer(b"".join(enc), np.uint8)}


def write(path: str | os.PathLike, fields: dict[str, Any], arrays: dict[str, Any]) -> None:
    """Write an index file atomically (temp file + fsync + os.replace).

    ``fields``: the keys of ``FIELDS``. ``arrays``: ``vectors`` (count, dim) float32; ``codes``
    and ``scales`` for int8; ``ids``, an int64 array (id_kind "int") or a list of str ("str").
    """
    path = Path(path)
    given = dict(arrays)
    if fields["id_kind"] == "str":
        given.update(_encode_strings(given.pop("ids")))
    secs = [(name, np.asarray(given[name], dtype=SECTIONS[name][0]))
            for name in section_names(fields["precision"], fields["id_kind"])]
    table = [{"name": name, "dtype": arr.dtype.str, "shape": list(arr.shape), "offset": 0,
              "nbytes": int(arr.nbytes)} for name, arr in secs]
    base = {"format_version": FORMAT_VERSION, "dim": fields["dim"], "precision": fields["precision"],
            "count": fields["count"], "model": fields["model"], "metric": METRIC,
            "id_kind": fields["id_kind"], "next_id": fields["next_id"], "oversample": fields["oversample"],
            "scales_calibrated": fields["scales_calibrated"]}

    def header(digest: str, header_len: int) -> bytes:
        for entry, off in zip(table, _offsets(header_len, [e["nbytes"] for e in table])):
            entry["offset"] = off
        return json.dumps({**base, "sections": table, "payload_sha256": digest}).encode()

    hlen = 0                                  # offsets depend on the header's length: fixed point
    while len(hdr := header("0" * 64, hlen)) != hlen:
        hlen = len(hdr)
    h = hashlib.sha256()                      # over the exact bytes that go to disk after the header
    for chunk in _payload(secs, table):
        h.update(chunk)
    hdr = header(h.hexdigest(), hlen)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(MAGIC)
            f.write(len(hdr).to_bytes(8, "little"))
            f.write(hashlib.sha256(hdr).digest())
            f.write(hdr)
            f.write(b"\x00" * (table[0]["offset"] - PREFIX - len(hdr)))
            for chunk in _payload(secs, table):
                f.write(chunk)
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
    """Read and validate an index file: ``(fields, arrays)`` as ``write`` takes them.

    ``mmap=True`` memory-maps the vectors read-only (everything else is read into RAM).
    ``verify=True`` also checks the payload sha256 (reads the whole file once). Raises
    FileNotFoundError for a missing file and IndexFormatError for anything wrong inside one.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise FileNotFoundError(f"no index file at {str(path)!r}; build one and save() it first") from None
    with open(path, "rb") as f:
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
    for key, ok in {**FIELDS, "metric": lambda v: v == METRIC}.items():
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
        raise _damaged(path, f"sections are {names}, a {fields['precision']} index with "
                             f"{fields['id_kind'] or 'row-number'} ids has {want}")
    n, d = fields["count"], fields["dim"]
    for e in table:
        name, shape = e["name"], e.get("shape")
        dtype, shape_of = SECTIONS[name]
        if e.get("dtype") != dtype:
            raise _damaged(path, f"section {name!r} has dtype {e.get('dtype')!r}, expected {dtype!r}")
        if not isinstance(shape, list) or not all(_is_int(s) and s >= 0 for s in shape):
            raise _damaged(path, f"section {name!r} has shape {shape!r}, not a list of sizes >= 0")
        expected = list(shape_of(n, d)) if shape_of else (shape[:1] or [0])  # ids_utf8: any length
        if shape != expected:
            raise _damaged(path, f"section {name!r} has shape {shape}, expected {expected} "
                                 f"for count={n}, dim={d}")
        nbytes = e.get("nbytes")
        if not _is_int(nbytes) or nbytes != math.prod(shape) * np.dtype(dtype).itemsize:
            raise _damaged(path, f"section {name!r} size {nbytes!r} does not match its shape {shape}")
    for e, off in zip(table, _offsets(hlen, [e["nbytes"] for e in table])):
        if not _is_int(e.get("offset")) or e["offset"] != off:
            raise _damaged(path, f"section {e['name']!r} starts at {e.get('offset')!r}, the layout puts it at {off}")
    end = table[-1]["offset"] + table[-1]["nbytes"]
    if size != end:
        raise _damaged(path, f"file is {size} bytes but its header describes {end} bytes "
                             + ("(truncated)" if size < end else "(trailing data)"))
    return table


def _read_section(f, path: Path, entry: dict, mapped: bool) -> np.ndarray:
    """One section's array, as validated by ``_check_sections``."""
    dt, shape = np.dtype(entry["dtype"]), tuple(entry["shape"])
    if mapped and entry["nbytes"] > 0:
        return np.memmap(path, dtype=dt, mode="r", offset=entry["offset"], shape=shape)
    f.seek(entry["offset"])
    count = entry["nbytes"] // dt.itemsize
    arr = np.fromfile(f, dtype=dt, count=count) if count else np.empty(0, dt)
    if arr.size != count:  # the file shrank after the size check
        raise _damaged(path, f"section {entry['name']!r} is cut short")
    return arr.reshape(shape)


def _decode(path: Path, fields: dict, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """Check the values later steps trust, and turn string-id sections into a list of str."""
    out = {"vectors": arrays["vectors"]}
    if fields["precision"] == "int8":
        scales = arrays["scales"]
        if not (np.all(np.isfinite(scales)) and np.all(scales > 0)):
            raise _damaged(path, "int8 scales are not all finite and positive")
        out.update(codes=arrays["codes"], scales=scales)
    if fields["id_kind"] == "int":
        out["ids"] = arrays["ids"]
    elif fields["id_kind"] == "str":
        offs, blob = arrays["ids_offsets"], arrays["ids_utf8"].tobytes()
        if offs[0] != 0 or offs[-1] != len(blob) or np.any(np.diff(offs) < 0):
            raise _damaged(path, "string-id offsets do not run from 0 up to the size of ids_utf8")
        bounds = offs.tolist()
        try:
            out["ids"] = [blob[a:b].decode("utf-8") for a, b in zip(bounds[:-1], bounds[1:])]
        except UnicodeDecodeError:
            raise _damaged(path, "string ids are not valid UTF-8") from None
    return out
