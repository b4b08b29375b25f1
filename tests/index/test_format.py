"""engine.index.format and Index.save / Index.load: the exact bytes (so a format change is caught),
round trips, and untrusted files: crafted files that each break one rule of the layout, values
inside a well-formed file (rows, codes, ids, next_id), deeply nested or oversized headers, and
saving onto odd paths or failing disks. Each must fail with IndexFormatError (loading) or
InputError / OutputError (saving) naming the file.

Files are crafted with ``tests.index_files.rewrite_index_file``, which keeps both checksums valid, so
only the rule under test breaks.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import stat
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from engine.errors import IndexFormatError, InputError, OutputError
from engine.index import Index
from engine.index import format as fmt
from tests.index.data import clustered, unit_rows
from tests.index_files import rewrite_index_file

D = 8
EYE = np.eye(D, dtype=np.float32)  # unit rows: normalizing them is exact, so the bytes are fixed
LOADS = [(True, True), (False, True), (False, False)]  # (mmap, verify): every load that checks the rows
_unit = functools.partial(unit_rows, d=D)


def _golden_index(case: str) -> Index:
    if case == "str_fp32":
        idx = Index(D, model="m/fp32/8/0123")
        idx.add(EYE[:3], ids=["a", "β", ""])
    elif case == "int_int8":
        idx = Index(D, "int8", oversample=3, scales=np.full(D, 1 / 127, np.float32))
        idx.add(EYE[:4], ids=[10, 7, 3, 99])
    elif case == "empty_int8":
        idx = Index(D, "int8")
    else:
        idx = Index(D)
        idx.add(EYE[:5])
    return idx


# Written by the Index before it was split from its format (engine/index/index.py, commit ec39e26):
# file size, sha256 of the whole file, and the header JSON.
GOLDEN = {
    "str_fp32": (
        835,
        "a3e8ae59a473ef5c02502980f83f86c58cff5eed1f9a426590eeff2868b4532b",
        '{"format_version": 1, "dim": 8, "precision": "fp32", "count": 3, "model": "m/fp32/8/0123", '
        '"metric": "cosine", "id_kind": "str", "next_id": 0, "oversample": 4, "scales_calibrated": false, '
        '"sections": [{"name": "vectors", "dtype": "<f4", "shape": [3, 8], "offset": 640, "nbytes": 96}, '
        '{"name": "ids_offsets", "dtype": "<i8", "shape": [4], "offset": 768, "nbytes": 32}, '
        '{"name": "ids_utf8", "dtype": "|u1", "shape": [3], "offset": 832, "nbytes": 3}], '
        '"payload_sha256": "d2ab61b9044dd100ef42cfeb835c9ae59445160604dc99340c0e2b087e645751"}',
    ),
    "int_int8": (
        992,
        "c3568f2363dadfb4814496d031b03696eda07b26cd1373ce0cd91ff1c9af3282",
        '{"format_version": 1, "dim": 8, "precision": "int8", "count": 4, "model": null, '
        '"metric": "cosine", "id_kind": "int", "next_id": 100, "oversample": 3, "scales_calibrated": true, '
        '"sections": [{"name": "vectors", "dtype": "<f4", "shape": [4, 8], "offset": 704, "nbytes": 128}, '
        '{"name": "codes", "dtype": "|i1", "shape": [4, 8], "offset": 832, "nbytes": 32}, '
        '{"name": "scales", "dtype": "<f4", "shape": [8], "offset": 896, "nbytes": 32}, '
        '{"name": "ids", "dtype": "<i8", "shape": [4], "offset": 960, "nbytes": 32}], '
        '"payload_sha256": "fe5906a08bcf45043513d9037c5545fb3cef141bc3f7ebe8ac50e7a7b93e5050"}',
    ),
    "empty_int8": (
        608,
        "3a2420cb03f9ec328d5b0d4a78f56213a8cdc97dbf70f9f18937197dbdd5c82a",
        '{"format_version": 1, "dim": 8, "precision": "int8", "count": 0, "model": null, '
        '"metric": "cosine", "id_kind": null, "next_id": 0, "oversample": 4, "scales_calibrated": false, '
        '"sections": [{"name": "vectors", "dtype": "<f4", "shape": [0, 8], "offset": 576, "nbytes": 0}, '
        '{"name": "codes", "dtype": "|i1", "shape": [0, 8], "offset": 576, "nbytes": 0}, '
        '{"name": "scales", "dtype": "<f4", "shape": [8], "offset": 576, "nbytes": 32}], '
        '"payload_sha256": "8cf671324cfa0294bc090c8176a65d437e8b009b4e446e5328fb2d0178fa8a1b"}',
    ),
    "pos_fp32": (
        608,
        "6e14ccd03b80c814d29d285bb41421d3cbe52d04c48e90f489ee7e6edb880a3d",
        '{"format_version": 1, "dim": 8, "precision": "fp32", "count": 5, "model": null, '
        '"metric": "cosine", "id_kind": null, "next_id": 5, "oversample": 4, "scales_calibrated": false, '
        '"sections": [{"name": "vectors", "dtype": "<f4", "shape": [5, 8], "offset": 448, "nbytes": 160}], '
        '"payload_sha256": "e5dfa9e1e8f3aa0df729475079a770824f47aad4b69e055bff6a16f05318bbe7"}',
    ),
}


@pytest.mark.parametrize("case", sorted(GOLDEN))
def test_exact_bytes_of_version_1(tmp_path, case):
    size, sha, header = GOLDEN[case]
    path = tmp_path / f"{case}.eidx"
    _golden_index(case).save(path)
    raw = path.read_bytes()
    assert raw[:8] == b"EMBIDX\x00\x01" == fmt.MAGIC
    hlen = int.from_bytes(raw[8:16], "little")
    assert raw[48 : 48 + hlen].decode() == header
    assert raw[16:48] == hashlib.sha256(header.encode()).digest()
    assert len(raw) == size and hashlib.sha256(raw).hexdigest() == sha
    meta = json.loads(header)
    start = meta["sections"][0]["offset"]
    assert start == -(-(48 + hlen) // 64) * 64 and raw[48 + hlen : start] == b"\0" * (start - 48 - hlen)
    assert hashlib.sha256(raw[start:]).hexdigest() == meta["payload_sha256"]


@pytest.mark.parametrize("case", sorted(GOLDEN))
def test_golden_files_load(tmp_path, case):
    path = tmp_path / f"{case}.eidx"
    src = _golden_index(case)
    src.save(path)
    for mmap in (True, False):
        j = Index.load(path, mmap=mmap)
        assert (len(j), j.dim, j.precision, j.model, j.oversample) == (
            len(src),
            src.dim,
            src.precision,
            src.model,
            src.oversample,
        )
        if len(src):
            for row in range(len(src)):
                np.testing.assert_array_equal(j.search(EYE[row], 1)[1], src.search(EYE[row], 1)[1])
        j.save(tmp_path / "again.eidx")  # load -> save gives the same bytes
        assert (tmp_path / "again.eidx").read_bytes() == path.read_bytes()


# ----------------------------------------------------------------------------- round trip through the module


def _fields(precision="fp32", id_kind=None, count=3, **kw):
    return {
        "dim": D,
        "precision": precision,
        "count": count,
        "model": None,
        "id_kind": id_kind,
        "next_id": 0,
        "oversample": 4,
        "scales_calibrated": precision == "int8",
        "metric": "cosine",
        **kw,
    }


@pytest.mark.parametrize("precision", ["fp32", "int8", "binary"])
@pytest.mark.parametrize("id_kind", [None, "int", "str"])
def test_write_read_round_trip(tmp_path, precision, id_kind):
    rng = np.random.default_rng(0)
    n = 5
    arrays = {"vectors": rng.standard_normal((n, D)).astype(np.float32)}
    if precision == "int8":
        arrays["codes"] = rng.integers(-127, 128, (n, D)).astype(np.int8)
        arrays["scales"] = rng.uniform(0.001, 0.01, D).astype(np.float32)
    elif precision == "binary":
        arrays["bits"] = rng.integers(0, 2**63, (n, -(-D // 64)), dtype=np.uint64) >> np.uint64(64 - D % 64 or 0)
    if id_kind == "int":
        arrays["ids"] = np.array([9, -3, 2**62, 0, 7], np.int64)
    elif id_kind == "str":
        arrays["ids"] = ["", "ü", "a" * 300, "x y", "日本"]
    fields = _fields(precision, id_kind, count=n, model="fp", next_id=2**62 + 1)
    path = tmp_path / "r.eidx"
    fmt.write(path, fields, arrays)
    for mmap in (True, False):
        got_fields, got = fmt.read(path, mmap=mmap)
        assert got_fields == fields and sorted(got) == sorted(arrays)
        assert isinstance(got["vectors"], np.memmap) == mmap
        for name, want in arrays.items():
            if isinstance(want, list):
                assert got[name] == want
            else:
                assert got[name].dtype == want.dtype
                np.testing.assert_array_equal(got[name], want)


# ----------------------------------------------------------------------------- crafted files


def _section(meta, name):
    return next(e for e in meta["sections"] if e["name"] == name)


def _saved(tmp_path, precision="int8", id_kind="int"):
    idx = Index(D, precision)
    ids = {"int": [5, 6, 7, 8, 9, 10], "str": ["a", "bb", "ccc", "d", "e", "f"], None: None}[id_kind]
    idx.add(np.random.default_rng(1).standard_normal((6, D)), ids=ids)
    path = tmp_path / "c.eidx"
    idx.save(path)
    return path


def _expect(path, match):
    for mmap in (True, False):
        for verify in (True, False):
            with pytest.raises(IndexFormatError, match=match) as e:
                Index.load(path, mmap=mmap, verify=verify)
            assert str(path) in str(e.value)


def test_crafter_writes_valid_files(tmp_path):
    path = _saved(tmp_path)
    before = path.read_bytes()
    rewrite_index_file(path, lambda meta, blobs: None)
    assert path.read_bytes() == before


def _set_dtype(name, dtype):
    def edit(meta, blobs):
        _section(meta, name)["dtype"] = dtype

    return edit


@pytest.mark.parametrize(
    "name,dtype",
    [
        ("ids", "|O"),
        ("vectors", "|O"),
        ("codes", "<f4"),
        ("vectors", ">f4"),
        ("ids", "<u8"),
        ("scales", "<f8"),
        ("ids", 3),
    ],
)
def test_section_with_a_wrong_dtype(tmp_path, name, dtype):
    path = _saved(tmp_path)
    rewrite_index_file(path, _set_dtype(name, dtype))
    _expect(path, f"section '{name}' has dtype")


def test_object_dtype_section_sized_to_match(tmp_path):
    """An object-dtype 'ids' whose shape and nbytes agree (8-byte pointers): rejected, never read."""
    path = _saved(tmp_path)

    def edit(meta, blobs):
        _section(meta, "ids").update(dtype="|O", shape=[6], nbytes=48)

    rewrite_index_file(path, edit)
    _expect(path, "dtype '|O'")


def test_ids_shorter_than_count(tmp_path):
    path = _saved(tmp_path)

    def edit(meta, blobs):
        _section(meta, "ids").update(shape=[5], nbytes=40)
        blobs["ids"] = blobs["ids"][:40]

    rewrite_index_file(path, edit)
    _expect(path, r"section 'ids' has shape \[5\], expected \[6\]")


@pytest.mark.parametrize("shape", [[-6, -8], [6, -8, -1], [48], [6, 8, 1], [], "6x8", [6.0, 8], [True, 8]])
def test_vectors_with_a_bad_shape(tmp_path, shape):
    path = _saved(tmp_path)

    def edit(meta, blobs):
        _section(meta, "vectors")["shape"] = shape

    rewrite_index_file(path, edit)
    _expect(path, "section 'vectors' has shape")


@pytest.mark.parametrize("nbytes", [191, 193, 0, -192, 192.0, "192"])
def test_nbytes_not_matching_shape(tmp_path, nbytes):
    path = _saved(tmp_path)

    def edit(meta, blobs):
        _section(meta, "vectors")["nbytes"] = nbytes

    rewrite_index_file(path, edit)
    _expect(path, "section 'vectors' size")


@pytest.mark.parametrize("offset", [0, 48, 64 * 100, 10**12, -64, 896.0, None])
def test_offset_off_the_layout(tmp_path, offset):
    path = _saved(tmp_path)

    rewrite_index_file(path, lambda meta, blobs: None, place=lambda meta: _section(meta, "codes").update(offset=offset))
    _expect(path, "section 'codes' starts at")


def test_count_beyond_the_file(tmp_path):
    """A huge count with shapes and sizes that agree with it: the size check stops it, nothing
    is allocated or mapped."""
    path = _saved(tmp_path, "fp32", None)
    big = 10**12

    def edit(meta, blobs):
        meta["count"] = big
        _section(meta, "vectors").update(shape=[big, D], nbytes=big * D * 4)

    rewrite_index_file(path, edit)
    _expect(path, r"header describes \d+ bytes \(truncated\)")


@pytest.mark.parametrize(
    "change,match",
    [
        (lambda m: m["sections"].pop(1), "sections are"),  # codes missing
        (lambda m: m["sections"].reverse(), "sections are"),
        (lambda m: m["sections"].append(dict(m["sections"][0])), "sections are"),  # a second 'vectors'
        (lambda m: m.update(id_kind="str"), "sections are"),
        (lambda m: m.update(id_kind=None), "sections are"),
        (lambda m: m.update(precision="fp32"), "sections are"),
        (lambda m: m.update(sections={}), "not a list of objects"),
        (lambda m: m.update(sections=["vectors"]), "not a list of objects"),
    ],
)
def test_section_table_not_matching_the_header(tmp_path, change, match):
    path = _saved(tmp_path)
    rewrite_index_file(path, lambda meta, blobs: change(meta))
    _expect(path, match)


@pytest.mark.parametrize(
    "key,value",
    [
        ("dim", 0),
        ("dim", "8"),
        ("dim", 8.0),
        ("dim", True),
        ("count", -1),
        ("count", None),
        ("precision", "fp16"),
        ("id_kind", "uuid"),
        ("model", 5),
        ("next_id", -1),
        ("next_id", 1.5),
        ("oversample", 0),
        ("oversample", "4"),
        ("scales_calibrated", "yes"),
        ("metric", "euclidean"),
    ],
)
def test_invalid_header_field(tmp_path, key, value):
    path = _saved(tmp_path)
    rewrite_index_file(path, lambda meta, blobs: meta.update({key: value}))
    _expect(path, f"header field '{key}' has an invalid value")


@pytest.mark.parametrize(
    "key", ["dim", "count", "precision", "model", "metric", "id_kind", "next_id", "oversample", "scales_calibrated"]
)
def test_missing_header_field(tmp_path, key):
    path = _saved(tmp_path)
    rewrite_index_file(path, lambda meta, blobs: meta.pop(key))
    _expect(path, f"header has no '{key}'")


def test_header_not_an_object(tmp_path):
    path = _saved(tmp_path)
    header = b"[1, 2]"
    path.write_bytes(b"EMBIDX\x00\x01" + len(header).to_bytes(8, "little") + hashlib.sha256(header).digest() + header)
    _expect(path, "not a JSON object")


@pytest.mark.parametrize("value", [0.0, -1.0, np.nan, np.inf])
def test_bad_int8_scales(tmp_path, value):
    path = _saved(tmp_path)

    def edit(meta, blobs):
        s = np.frombuffer(blobs["scales"], "<f4").copy()
        s[3] = value
        blobs["scales"] = s.tobytes()

    rewrite_index_file(path, edit)
    _expect(path, "scales are not all finite and positive")


@pytest.mark.parametrize(
    "offsets",
    [
        [1, 1, 3, 6, 7, 8, 9],
        [0, 1, 3, 6, 7, 8, 10],
        [0, 1, 3, 6, 7, 8, 8],
        [0, 3, 1, 6, 7, 8, 9],
        [0, -1, 3, 6, 7, 8, 9],
    ],
)
def test_bad_string_id_offsets(tmp_path, offsets):
    path = _saved(tmp_path, id_kind="str")  # "a", "bb", "ccc", "d", "e", "f": 9 bytes

    def edit(meta, blobs):
        assert np.frombuffer(blobs["ids_offsets"], "<i8").tolist() == [0, 1, 3, 6, 7, 8, 9]
        blobs["ids_offsets"] = np.array(offsets, "<i8").tobytes()

    rewrite_index_file(path, edit)
    _expect(path, "string-id offsets")


def test_string_ids_not_utf8(tmp_path):
    path = _saved(tmp_path, id_kind="str")

    def edit(meta, blobs):
        blobs["ids_utf8"] = b"a\xffbcccdef"

    rewrite_index_file(path, edit)
    _expect(path, "not valid UTF-8")


@pytest.mark.parametrize("shape", [[3, 3], [], [8]])
def test_string_blob_shape(tmp_path, shape):
    path = _saved(tmp_path, id_kind="str")

    def edit(meta, blobs):
        _section(meta, "ids_utf8")["shape"] = shape

    rewrite_index_file(path, edit)
    _expect(path, "section 'ids_utf8'")


# ----------------------------------------------------------------------------- rows inside a file


def _set_row(row, values):
    def edit(meta, blobs):
        v = np.frombuffer(blobs["vectors"], "<f4").copy().reshape(meta["count"], meta["dim"])
        v[row] = values
        blobs["vectors"] = v.tobytes()

    return edit


BAD_ROWS = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf, "zero": 0.0, "tiny": 1e-40, "long": 0.9, "short": 0.01}
WHY = {
    "nan": "holds NaN or inf",
    "inf": "holds NaN or inf",
    "-inf": "holds NaN or inf",
    "zero": "is all zeros",
    "tiny": "has norm",
    "long": "has norm",
    "short": "has norm",
}


@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_bad_vector_row_in_file(tmp_path, precision, case):
    path = _saved(tmp_path, precision, "int")
    rewrite_index_file(path, _set_row(2, BAD_ROWS[case]))
    for mmap, verify in LOADS:
        with pytest.raises(IndexFormatError, match=rf"vector row 2 {WHY[case]}") as e:
            Index.load(path, mmap=mmap, verify=verify)
        assert str(path) in str(e.value)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize("id_kind", [None, "int", "str"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_unchecked_load_never_returns_non_finite_scores(tmp_path, precision, id_kind, value):
    """mmap=True, verify=False skips the row check (documented); search still refuses to return
    a NaN/inf score or a placeholder id, naming the file and the row."""
    path = _saved(tmp_path, precision, id_kind)
    rewrite_index_file(path, _set_row(4, value))
    idx = Index.load(path, mmap=True, verify=False)
    for k in (6, 10):  # every row, and more than there are
        with pytest.raises(IndexFormatError, match=r"row 4 holds NaN or inf.*verify=True") as e:
            idx.search(_unit(3), k)
        assert str(path) in str(e.value)


def test_row_check_cost_is_one_pass_in_blocks():
    """bad_rows reads a memmap-like array block by block and finds a bad row in any block."""
    x = _unit(3 * fmt.ROW_BLOCK + 5, d=4)
    assert fmt.bad_rows(x) == []
    x[2 * fmt.ROW_BLOCK + 1] = 0
    x[7] *= 2
    assert fmt.bad_rows(x) == [7, 2 * fmt.ROW_BLOCK + 1]
    assert fmt.bad_rows(x, limit=1) == [7]


# ----------------------------------------------------------------------------- ids and next_id


def _set_ids(ids):
    def edit(meta, blobs):
        blobs["ids"] = np.array(ids, "<i8").tobytes()

    return edit


def _set_str_ids(ids):
    def edit(meta, blobs):
        enc = [s.encode() for s in ids]
        offs = np.zeros(len(enc) + 1, "<i8")
        np.cumsum([len(b) for b in enc], out=offs[1:])
        blobs["ids_offsets"], blobs["ids_utf8"] = offs.tobytes(), b"".join(enc)
        _section(meta, "ids_utf8").update(shape=[int(offs[-1])], nbytes=int(offs[-1]))

    return edit


@pytest.mark.parametrize(
    "id_kind,edit,dups",
    [
        ("int", _set_ids([5, 6, 7, 6, 9, 10]), r"\[6\]"),
        ("int", _set_ids([-1, -1, -1, 2**63 - 1, 2**63 - 1, 0]), r"\[-1, 9223372036854775807\]"),
        ("str", _set_str_ids(["a", "bb", "a", "d", "e", "f"]), r"\['a'\]"),
        ("str", _set_str_ids(["", "x", "", "", "é", "é"]), r"\['', '', 'é'\]"),
    ],
)
def test_duplicate_ids_in_file(tmp_path, id_kind, edit, dups):
    path = _saved(tmp_path, "fp32", id_kind)
    rewrite_index_file(path, edit)
    for mmap, verify in [*LOADS, (True, False)]:
        with pytest.raises(IndexFormatError, match=rf"ids repeat: {dups}") as e:
            Index.load(path, mmap=mmap, verify=verify)
        assert str(path) in str(e.value)


@pytest.mark.parametrize(
    "id_kind,next_id,match",
    [
        ("int", 10, "next_id 10 is not above the largest id 10"),  # ids 5..10: a default id would repeat 10
        ("int", 0, "next_id 0 is not above"),
        (None, 5, "next_id 5 differs from count 6"),
        (None, 7, "next_id 7 differs from count 6"),
        ("int", 2**63 + 1, "header field 'next_id' has an invalid value"),
    ],
)
def test_next_id_inconsistent_with_ids(tmp_path, id_kind, next_id, match):
    path = _saved(tmp_path, "fp32", id_kind)
    rewrite_index_file(path, lambda meta, blobs: meta.update(next_id=next_id))
    for mmap, verify in [*LOADS, (True, False)]:
        with pytest.raises(IndexFormatError, match=match):
            Index.load(path, mmap=mmap, verify=verify)


def test_next_id_above_the_largest_id_is_kept(tmp_path):
    """next_id may exceed max(ids) + 1 (ids that were removed by a rebuild): default ids continue from it."""
    path = _saved(tmp_path, "fp32", "int")
    rewrite_index_file(path, lambda meta, blobs: meta.update(next_id=100))
    idx = Index.load(path)
    idx.add(_unit(2, seed=5))
    assert idx.search(_unit(2, seed=5), 1)[1].ravel().tolist() == [100, 101]


def test_default_ids_past_int64_refused(tmp_path):
    idx = Index(D)
    idx.add(_unit(2), ids=[1, 2**63 - 1])
    path = tmp_path / "top.eidx"
    idx.save(path)
    j = Index.load(path)
    with pytest.raises(InputError, match=r"largest int64.*pass ids="):
        j.add(_unit(1, seed=2))
    j.add(_unit(1, seed=2), ids=[7])  # explicit ids still work
    assert len(j) == 3


# ----------------------------------------------------------------------------- the header


def _raw_index(path, header: bytes, payload: bytes = b""):
    path.write_bytes(
        b"EMBIDX\x00\x01" + len(header).to_bytes(8, "little") + hashlib.sha256(header).digest() + header + payload
    )


@pytest.mark.parametrize("header", [b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 50_000 + b"1" + b"}" * 50_000])
def test_deeply_nested_header(tmp_path, header):
    path = tmp_path / "deep.eidx"
    _raw_index(path, header)
    for mmap, verify in [*LOADS, (True, False)]:
        with pytest.raises(IndexFormatError, match="nested too deeply") as e:
            Index.load(path, mmap=mmap, verify=verify)
        assert str(path) in str(e.value)


def test_deeply_nested_value_inside_a_valid_header(tmp_path):
    path = _saved(tmp_path, "fp32", None)
    deep = json.loads("[" * 500 + "]" * 500)
    rewrite_index_file(path, lambda meta, blobs: meta.update(model=deep))  # json.dumps copes with 500 levels
    raw = path.read_bytes()
    hlen = int.from_bytes(raw[8:16], "little")
    header = raw[48 : 48 + hlen].replace(b"[" * 500, b"[" * 20_000).replace(b"]" * 500, b"]" * 20_000)
    _raw_index(path, header, raw[48 + hlen :])
    with pytest.raises(IndexFormatError, match="nested too deeply"):
        Index.load(path)


def test_header_size_is_bounded(tmp_path):
    """Headers are < 1 KiB in practice; the format allows 1 MiB (a 64 MiB header of small JSON
    objects parses into over a GiB of Python objects). Longer ones are neither written nor read."""
    assert fmt.MAX_HEADER == 1 << 20
    path = _saved(tmp_path, "fp32", None)
    rewrite_index_file(path, lambda meta, blobs: meta.update(model="m" * fmt.MAX_HEADER))  # checksums valid
    with pytest.raises(IndexFormatError, match="header length out of range"):
        Index.load(path)
    idx = Index(D, model="m" * fmt.MAX_HEADER)
    with pytest.raises(InputError, match=r"over the format's 1048576.*shorter model fingerprint"):
        idx.save(tmp_path / "big.eidx")
    assert not list(tmp_path.glob("big.eidx*"))
    Index(D, model="m" * (fmt.MAX_HEADER - 1000)).save(tmp_path / "fits.eidx")  # just under: fine
    assert Index.load(tmp_path / "fits.eidx").model == "m" * (fmt.MAX_HEADER - 1000)


# ----------------------------------------------------------------------------- saving


def _small(n=3):
    idx = Index(D)
    idx.add(_unit(n))
    return idx


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002, 0o027])
def test_saved_file_follows_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        _small().save(tmp_path / "a.eidx")  # new file
        _small(4).save(tmp_path / "a.eidx")  # replacing one
        _small().save(tmp_path / "b.eidx")
    finally:
        os.umask(old)
    for name in ("a.eidx", "b.eidx"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o666 & ~umask
    assert len(Index.load(tmp_path / "a.eidx")) == 4


def _fifo(p):
    os.mkfifo(p)


def _device(p):
    try:
        os.mknod(p, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # what /dev/null is, in tmp_path
    except PermissionError:
        pytest.skip("creating a device node needs root")


@pytest.mark.parametrize("make,kind", [(_fifo, "a fifo"), (os.mkdir, "a folder"), (_device, "a character device")])
@pytest.mark.parametrize("via_link", [False, True])
def test_save_refuses_non_regular_targets(tmp_path, make, kind, via_link):
    target = tmp_path / "node"
    make(target)
    before = os.lstat(target)
    path = target
    if via_link:
        path = tmp_path / "link.eidx"
        os.symlink(target, path)
    with pytest.raises(InputError, match=f"is {kind}, not a regular file; refusing to replace it") as e:
        _small().save(path)
    assert str(path) in str(e.value)
    after = os.lstat(target)
    assert (after.st_mode, after.st_ino, after.st_rdev) == (before.st_mode, before.st_ino, before.st_rdev)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["node"] + (["link.eidx"] if via_link else []))


def test_save_errors_name_the_path_and_keep_the_old_file(tmp_path):
    (tmp_path / "file").write_bytes(b"x")
    for path, why in [
        (tmp_path / "file" / "i.eidx", "Not a directory"),
        (tmp_path / "missing" / "i.eidx", "No such file or directory"),
    ]:
        with pytest.raises(OutputError, match=why) as e:
            _small().save(path)
        assert str(path) in str(e.value) and isinstance(e.value, OSError)


def test_save_into_unwritable_folder(tmp_path):
    if os.geteuid() == 0:  # root writes through permissions; sysfs refuses new files even to root
        folder = "/sys"
        if not os.path.isdir(folder):
            pytest.skip("no folder that refuses root")
    else:
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o555)
    path = os.path.join(folder, "i.eidx")
    with pytest.raises(OutputError) as e:
        _small().save(path)
    assert path in str(e.value) and "is unchanged" in str(e.value)
    assert not os.path.exists(path)


def test_disk_full_while_saving_keeps_the_old_file(tmp_path):
    """A write that fails half-way (RLIMIT_FSIZE: EFBIG, as a full disk gives ENOSPC) raises
    OutputError naming the path; the old file is untouched and no temporary file is left."""
    path = tmp_path / "i.eidx"
    _small().save(path)
    before = path.read_bytes()
    child = textwrap.dedent(f"""
        import resource, sys
        import numpy as np
        from engine.errors import OutputError
        from engine.index import Index
        idx = Index(64)
        idx.add(np.random.default_rng(0).standard_normal((2000, 64)))
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))   # the index is ~512 kB
        try:
            idx.save({str(path)!r})
        except OutputError as e:
            print("OutputError:", e)
            sys.exit(0)
        sys.exit(3)
    """)
    r = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert str(path) in r.stdout and "File too large" in r.stdout
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["i.eidx"]


def test_load_refuses_non_regular_files(tmp_path):
    """Loading a fifo would block forever waiting for a writer; a folder is not an index either."""
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dir").mkdir()
    for name, kind in (("fifo", "a fifo"), ("dir", "a folder")):
        with pytest.raises(IndexFormatError, match=f"is {kind}, not a regular file"):
            Index.load(tmp_path / name)
    if os.path.exists("/dev/zero"):  # would read zeros without end as a file
        with pytest.raises(IndexFormatError, match="is a character device, not a regular file"):
            Index.load("/dev/zero", mmap=False)


def test_int8_rows_without_calibrated_scales(tmp_path):
    """(Found by tests/test_fuzz_files.py: search used to fail inside the kernel with scales None.)"""
    path = _saved(tmp_path, "int8", None)
    rewrite_index_file(path, lambda meta, blobs: meta.update(scales_calibrated=False))
    for mmap, verify in [*LOADS, (True, False)]:
        with pytest.raises(IndexFormatError, match="int8 index of 6 rows without calibrated scales"):
            Index.load(path, mmap=mmap, verify=verify)
    empty = tmp_path / "empty.eidx"
    Index(D, "int8").save(empty)  # no rows yet: uncalibrated is the normal state
    assert Index.load(empty).scales is None


# ----------------------------------------------------------------------------- codes inside a file


def _saved_binary(tmp_path, edit_bits):
    """A 50 x 100 binary index saved, then its bits section rewritten by ``edit_bits(bytearray)``
    (hashes kept valid, so only the bits are wrong)."""
    x, _ = clustered(50, 100, 1)
    idx = Index(100, "binary")
    idx.add(x)
    path = tmp_path / "b.eidx"
    idx.save(path)

    def edit(meta, blobs):
        bits = bytearray(blobs["bits"])
        edit_bits(bits)
        blobs["bits"] = bytes(bits)

    rewrite_index_file(path, edit)
    return path


def test_binary_file_whose_bits_are_not_the_vectors_signs(tmp_path):
    def flip(b):
        b[8 * 2 * 7] ^= 1  # row 7, word 0, bit 0

    path = _saved_binary(tmp_path, flip)
    for mmap, verify in ((True, True), (False, False), (False, True)):
        with pytest.raises(IndexFormatError, match="binary codes of row 7") as e:
            Index.load(path, mmap=mmap, verify=verify)
        assert str(path) in str(e.value)
    Index.load(path, mmap=True, verify=False)  # the trusted fast path skips row checks, as for vectors


@pytest.mark.parametrize("metric", ["cosine", "dot"])
def test_int8_file_whose_codes_are_not_the_quantized_vectors(tmp_path, metric):
    """A crafted int8 file (checksum recomputed) whose codes disagree with its vectors is refused,
    as the binary one is; an untouched file of many blocks loads (the check agrees with add)."""
    x, _ = clustered(40_000, 24, 1)
    if metric == "dot":
        x = x * np.random.default_rng(3).uniform(0.5, 3.0, (len(x), 1)).astype(np.float32)
    idx = Index(24, "int8", metric=metric)
    idx.add(x[:30_000])
    idx.add(x[30_000:])  # later rows quantized with the first add's scales
    path = tmp_path / "q.eidx"
    idx.save(path)
    np.testing.assert_array_equal(Index.load(path).search(x[:3], 5)[1], idx.search(x[:3], 5)[1])

    def edit(meta, blobs):
        codes = bytearray(blobs["codes"])
        codes[24 * 20_000 + 5] ^= 0x01  # row 20,000 (the second block), dimension 5
        blobs["codes"] = bytes(codes)

    rewrite_index_file(path, edit)
    for mmap, verify in ((True, True), (False, False), (False, True)):
        with pytest.raises(IndexFormatError, match="int8 codes of row 20000 are not its vector quantized") as e:
            Index.load(path, mmap=mmap, verify=verify)
        assert str(path) in str(e.value)
    Index.load(path, mmap=True, verify=False)  # the trusted fast path skips row checks, as for vectors


def test_binary_file_with_padding_bits_set(tmp_path):
    def pad(b):
        b[8 * 2 * 3 + 15] |= 0x80  # row 3, word 1, bit 63 (dimension 127 of 100)

    path = _saved_binary(tmp_path, pad)
    for mmap, verify in ((True, True), (True, False), (False, False)):
        with pytest.raises(IndexFormatError, match="padding bits"):
            Index.load(path, mmap=mmap, verify=verify)
