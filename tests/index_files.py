"""Index files written by hand for tests: any header and section bytes, with VALID checksums, so
that only the rule a test breaks is what the loader sees (tests/index/test_format.py, the fuzz in
tests/test_fuzz_files.py)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

MAGIC = b"EMBIDX\x00\x01"


def _align(n: int) -> int:
    return -(-n // 64) * 64


def write_index_file(
    path: Path, meta: dict, blobs: dict, *, offsets: dict | None = None, place=None, tail: bytes = b"", cut: int = 0
) -> None:
    """Write ``meta`` (the header) and ``blobs`` (section name -> bytes) as an index file.

    The dict entries of ``meta["sections"]`` are placed by the documented layout (the first at
    align64(48 + header length), each next at align64(previous end)) unless ``offsets`` (name ->
    value) says otherwise; ``place(meta)`` may then edit the header's offsets. ``tail`` is appended
    to the payload and ``cut`` bytes are removed from its end. Both sha256 fields are computed
    over what is written.
    """
    offsets = offsets or {}
    table = meta.get("sections")
    entries = [e for e in table if isinstance(e, dict)] if isinstance(table, list) else []
    names = [e.get("name") if isinstance(e.get("name"), str) else "" for e in entries]
    hlen = 0
    for _ in range(50):  # the header's length depends on the offsets it lists
        off = _align(48 + hlen)
        for e, name in zip(entries, names):
            e["offset"] = offsets.get(name, off)
            off = _align(off + len(blobs.get(name, b"")))
        if place:
            place(meta)
        header = json.dumps({**meta, "payload_sha256": "0" * 64}).encode()
        if len(header) == hlen:
            break
        hlen = len(header)
    start = _align(48 + hlen)
    payload = bytearray()
    for name in names:  # the blobs at the layout's offsets
        payload += b"\0" * (_align(len(payload)) - len(payload)) + blobs.get(name, b"")
    payload = (bytes(payload) + tail)[: max(0, len(payload) + len(tail) - cut)]
    meta["payload_sha256"] = hashlib.sha256(payload).hexdigest()
    header = json.dumps(meta).encode()
    path.write_bytes(
        MAGIC
        + len(header).to_bytes(8, "little")
        + hashlib.sha256(header).digest()
        + header
        + b"\0" * max(0, start - 48 - len(header))
        + payload
    )


def rewrite_index_file(path: Path, edit, place=None) -> None:
    """Rewrite a valid file after ``edit(meta, blobs)`` changed its header (a dict) and/or its section
    bytes (name -> bytes), with correct hashes, so only the rule under test breaks (layout and
    ``place``: ``write_index_file``)."""
    raw = path.read_bytes()
    hlen = int.from_bytes(raw[8:16], "little")
    meta = json.loads(raw[48 : 48 + hlen])
    blobs = {e["name"]: raw[e["offset"] : e["offset"] + e["nbytes"]] for e in meta["sections"]}
    edit(meta, blobs)
    write_index_file(path, meta, blobs, place=place)
