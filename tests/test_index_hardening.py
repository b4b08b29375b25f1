"""Index files are untrusted: values inside a well-formed file (rows, ids, next_id), tiny-norm
vectors, deeply nested or oversized headers, and saving onto odd paths or failing disks.

Files are crafted with ``tests.index_files.rewrite_index_file``, which keeps both checksums valid, so
only the rule under test breaks.
"""

from __future__ import annotations

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
from tests.index_files import rewrite_index_file

from .test_index_format import D, _saved, _section

TINY = np.finfo(np.float32).tiny
LOADS = [(True, True), (False, True), (False, False)]  # (mmap, verify): every load that checks the rows


def _unit(rows, d=D, seed=0):
    x = np.random.default_rng(seed).standard_normal((rows, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _set_row(row, values):
    def edit(meta, blobs):
        v = np.frombuffer(blobs["vectors"], "<f4").copy().reshape(meta["count"], meta["dim"])
        v[row] = values
        blobs["vectors"] = v.tobytes()

    return edit


# ----------------------------------------------------------------------------- 1. rows inside a file

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


# ----------------------------------------------------------------------------- 2. ids and next_id


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


# ----------------------------------------------------------------------------- 3. tiny norms


@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize(
    "row", [np.full(D, 1e-40), np.r_[1e-38, np.zeros(D - 1)], np.full(D, 4e-39), np.r_[np.zeros(D - 1), -1.1e-38]]
)
def test_norm_below_float32_tiny_is_a_zero_vector(precision, row):
    assert np.linalg.norm(row.astype(np.float64)) < TINY
    x = _unit(3)
    x[1] = row
    idx = Index(D, precision)
    with pytest.raises(InputError, match=r"zero vectors in row\(s\) \[1\]"):
        idx.add(x)
    assert len(idx) == 0
    idx.add(_unit(3))
    for q in (row, np.stack([_unit(1)[0], row])):
        with pytest.raises(InputError, match=rf"queries contain zero vectors in row\(s\) \[{q.ndim - 1}\]"):
            idx.search(q, 2)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize(
    "row", [np.r_[2e-38, np.zeros(D - 1)], np.full(D, 1e-35), np.full(D, 1e30), np.r_[3e38, -3e38, np.zeros(D - 2)]]
)
def test_small_and_large_norms_above_tiny_work(precision, row):
    """Norms at or above float32's smallest normal, and rows whose float32 squares overflow, are
    ordinary vectors: stored as their unit direction, found with cosine 1."""
    assert np.linalg.norm(row.astype(np.float64)) >= TINY
    unit = row / np.linalg.norm(row.astype(np.float64))
    idx = Index(D, precision)
    idx.add(np.stack([row, -unit, _unit(1)[0]]).astype(np.float32))
    scores, ids = idx.search(unit.astype(np.float32), 3)
    assert ids[0] == 0 and abs(scores[0] - 1) < 1e-5 and abs(scores[-1] + 1) < 1e-5
    assert np.isfinite(scores).all()


@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize("id_kind", [None, "int", "str"])
def test_k_beyond_the_index_returns_what_exists(precision, id_kind):
    """k > len(index) gives len(index) results (no padding, no placeholder ids), as documented."""
    x = _unit(3)
    ids = {None: [0, 1, 2], "int": [10, 20, 30], "str": ["a", "b", "c"]}[id_kind]
    idx = Index(D, precision)
    idx.add(x, ids=None if id_kind is None else ids)
    scores, got = idx.search(x, 10)
    assert scores.shape == got.shape == (3, 3) and np.isfinite(scores).all()
    assert [r[0] for r in got.tolist()] == ids  # each row finds itself first
    assert all(sorted(r) == sorted(ids) for r in got.tolist())
    np.testing.assert_allclose(scores, -np.sort(-(x @ x.T), axis=1), atol=1e-5)


# ----------------------------------------------------------------------------- 4. the header


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


# ----------------------------------------------------------------------------- 5. saving


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
