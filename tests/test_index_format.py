"""engine.index.format: the exact bytes (so a format change is caught), round trips, and crafted
files that each break one rule of the layout and must fail with IndexFormatError naming the file."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from engine.errors import IndexFormatError
from engine.index import Index
from engine.index import format as fmt
from tests.index_files import rewrite_index_file

D = 8
EYE = np.eye(D, dtype=np.float32)  # unit rows: normalizing them is exact, so the bytes are fixed


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
