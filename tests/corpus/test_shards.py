"""The output folder (engine.corpus.shards): untrusted manifests, done records and shard files, both
output formats, and ``embed search`` over it.

Folders are written by the engine's own ``OutputDir`` (as the driver does) and then edited with
checksums kept valid, so only the rule under test breaks. Cases that used to block for ever
(fifos, ``/dev/zero``) run in a child process with a time limit, so a regression fails instead
of hanging the suite.

Parquet (``output_format="parquet"``, tests marked ``needs_pyarrow``): the oracle is the npy output
of the same input. The Parquet shards must hold the same ids, titles and vectors bit for bit, and
read back the same through ``load_embeddings``, ``iter_shards``, ``CorpusSearcher``, pyarrow,
pandas and DuckDB; resume, the settings check and the untrusted-file checks are the npy ones.
Search: the manifest's query prompt and similarity, against brute force over sentence-transformers'
vectors (tests/corpus/conftest.py).
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import logging
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from engine.corpus import embed_corpus, load_embeddings, shards
from engine.corpus.readers import compose
from engine.corpus.shards import (
    FORMAT,
    VERSION,
    CorpusSearcher,
    OutputDir,
    iter_shards,
    load_index,
    read_manifest,
    settings_digest,
)
from engine.errors import IndexFormatError, InputError
from tests.corpus.conftest import QUERIES, TEXTS, normalized, st_model, write_texts
from tests.corpus.test_driver import CHILD as KILL_CHILD
from tests.corpus.test_driver import output_files, synth, write_jsonl

try:
    import pyarrow as pa
    import pyarrow.parquet as pq
except ImportError:  # the Parquet tests skip
    pa = pq = None
needs_pyarrow = pytest.mark.skipif(
    pa is None, reason="Parquet output needs pyarrow (pip install 'embed-engine[corpus]')"
)


DIM = 8
FP = "tiny/fp32/8/abcd"
SETTINGS = {
    "model": FP,
    "precision": "fp32",
    "truncate_dim": None,
    "normalize": True,
    "dim": DIM,
    "id_field": "_id",
    "text_field": "text",
    "title_field": "title",
    "shard_size": 4,
    "text_format": 2,
}
SHA = settings_digest(SETTINGS)


def _unit(n, seed):
    x = np.random.default_rng(seed).standard_normal((n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def contents(n_shards=3, per=4):
    return [
        ([f"d{i * per + j}" for j in range(per)], [f"title {i * per + j}" for j in range(per)], _unit(per, i))
        for i in range(n_shards)
    ]


def write_outdir(out: Path, shard_contents=None) -> dict:
    """An OUTDIR as the driver writes it: manifest in progress, shards with done records, final manifest."""
    shard_contents = contents() if shard_contents is None else shard_contents
    with OutputDir(out) as o:
        o.check_settings(SETTINGS, overwrite=False)
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "status": "in_progress",
            "settings": SETTINGS,
            "model": {"name": "tiny", "ref": "tiny", "fingerprint": FP, "precision": "fp32"},
            "dim": DIM,
            "truncate_dim": None,
            "normalize": True,
            "inputs": [],
        }
        o.write_manifest(manifest)
        recs = [
            o.write_shard(i, v, ids, titles, f"content-{i}", SHA) for i, (ids, titles, v) in enumerate(shard_contents)
        ]
        manifest.update(
            status="complete",
            count=sum(r["count"] for r in recs),
            rejected=0,
            shards=[{k: v for k, v in r.items() if k != "settings_sha256"} for r in recs],
        )
        o.write_manifest(manifest)
    return manifest


def manifest_of(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def put_manifest(out: Path, m: dict) -> None:
    (out / "manifest.json").write_text(json.dumps(m))


def resign(out: Path, i: int = 0) -> None:
    """Make the manifest's (and the done record's) checksums of shard i match its files again."""
    m = manifest_of(out)
    stem = shards.shard_stem(i)
    sums = {
        role: hashlib.sha256((out / f"{stem}.{ext}").read_bytes()).hexdigest()
        for role, ext in (("vectors", "npy"), ("ids", "jsonl"))
    }
    m["shards"][i]["sha256"] = sums
    put_manifest(out, m)
    done = out / f"{stem}.done.json"
    if done.is_file() and not done.is_symlink():
        rec = json.loads(done.read_text())
        rec["sha256"] = sums
        done.write_text(json.dumps(rec))


def npy_bytes(arr=None, *, header: dict | None = None, data: bytes | None = None, version=(1, 0)) -> bytes:
    """A .npy file: numpy's own for arr (in format ``version``), or a 1.0 header dict + data bytes."""
    buf = io.BytesIO()
    if header is None:
        np.lib.format.write_array(buf, arr, version=version, allow_pickle=False)
        return buf.getvalue()
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue() + (data or b"")


def expect(fn, out, match, name):
    with pytest.raises(IndexFormatError, match=match) as e:
        fn(out)
    assert str(out / name) in str(e.value) or name in str(e.value), str(e.value)
    return e.value


READERS = {
    "iter_shards": lambda out: list(iter_shards(out)),
    "iter_shards_unverified": lambda out: list(iter_shards(out, verify=False)),
    "load_index": lambda out: load_index(out),
}

CHILD = textwrap.dedent("""
    import json, sys
    from engine.corpus.shards import iter_shards, load_index
    out, verify = sys.argv[1], sys.argv[2] == "1"
    try:
        list(iter_shards(out, verify=verify)); load_index(out, verify=verify)
        print(json.dumps(["ok", ""]))
    except Exception as e:
        print(json.dumps([type(e).__name__, str(e)]))
""")


def _limit_memory() -> None:
    """In a child: at most 2 GiB of data, so a read without end fails fast instead of filling RAM."""
    import resource

    resource.setrlimit(resource.RLIMIT_DATA, (2 << 30, 2 << 30))


def run_child(args: list[str], timeout: float, what: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            [sys.executable, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            preexec_fn=_limit_memory,
            env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{what} did not finish in {timeout} s (it blocks or reads without end)")


def read_in_child(out: Path, verify: bool = True, timeout: float = 60) -> tuple[str, str]:
    """(exception name or 'ok', message) of iter_shards + load_index on out in a child process;
    the test fails (instead of hanging) if that takes longer than timeout."""
    r = run_child(["-c", CHILD, str(out), "1" if verify else "0"], timeout, f"reading {out}")
    assert r.returncode == 0, r.stdout + r.stderr
    return tuple(json.loads(r.stdout.strip().splitlines()[-1]))


# ----------------------------------------------------------------------------- a valid folder


def test_written_folder_reads_back(tmp_path):
    want = contents()
    write_outdir(tmp_path / "out", want)
    got = list(iter_shards(tmp_path / "out"))
    assert [(i, t) for i, t, _ in got] == [(i, t) for i, t, _ in want]
    for (_, _, v), (_, _, w) in zip(got, want):
        np.testing.assert_array_equal(v, w)
        assert v.flags.writeable and v.dtype == np.float32
    index, titles, manifest = load_index(tmp_path / "out")
    assert len(index) == 12 and titles["d5"] == "title 5" and manifest["count"] == 12
    scores, ids = index.search(want[1][2][2], 1)
    assert ids[0] == "d6" and abs(scores[0] - 1) < 1e-5


# ----------------------------------------------------------------------------- 6. paths in records


@pytest.mark.parametrize(
    "role,value",
    [
        ("vectors", "../other/shard-00000.npy"),
        ("vectors", "OTHER/shard-00000.npy"),
        ("vectors", "shard-00001.npy"),
        ("ids", "../other/shard-00000.jsonl"),
        ("ids", "/etc/passwd"),
        ("vectors", "shard-00000.npy/../shard-00000.npy"),
        ("vectors", None),
        ("ids", 0),
    ],
)
@pytest.mark.parametrize("reader", sorted(READERS))
def test_manifest_record_naming_another_file_is_refused(tmp_path, role, value, reader):
    """A manifest whose record names any file but the engine's own for that shard number is
    refused before anything is opened (an absolute path to another folder's shard, with its
    checksum, used to be served by embed search)."""
    other = tmp_path / "other"
    write_outdir(other, contents(1))
    out = tmp_path / "out"
    write_outdir(out)
    m = manifest_of(out)
    if value == "OTHER/shard-00000.npy":
        value = str(other / "shard-00000.npy")  # absolute, into another folder, checksum valid
        m["shards"][0]["sha256"]["vectors"] = manifest_of(other)["shards"][0]["sha256"]["vectors"]
    m["shards"][0][role] = value
    put_manifest(out, m)
    expect(
        READERS[reader],
        out,
        rf"shard record 0 names {role} file {re.escape(repr(value))}.*the engine's is",
        "manifest.json",
    )


def test_dev_zero_in_manifest_does_not_hang(tmp_path):
    """(In a child: this used to read /dev/zero until memory ran out.)"""
    out = tmp_path / "out"
    write_outdir(out)
    m = manifest_of(out)
    m["shards"][1]["vectors"] = "/dev/zero"
    put_manifest(out, m)
    for verify in (True, False):
        name, msg = read_in_child(out, verify)
        assert name == "IndexFormatError" and "names vectors file '/dev/zero'" in msg


@pytest.mark.parametrize("kind", ["link-out", "link-in", "link-dev-zero", "fifo", "folder"])
@pytest.mark.parametrize("ext", ["npy", "jsonl"])
def test_shard_files_must_be_regular_files_not_links(tmp_path, kind, ext):
    """Only regular files under the engine's names in OUTDIR are read: a symlink (even to an
    identical file, whose checksum matches), a fifo (opening it would block) or a folder is refused."""
    other = tmp_path / "other"
    write_outdir(other)
    out = tmp_path / "out"
    write_outdir(out)
    p = out / f"shard-00000.{ext}"
    p.unlink()
    if kind == "link-out":
        p.symlink_to(other / p.name)  # same bytes: the checksum matches
    elif kind == "link-in":
        (out / "copy").write_bytes((other / p.name).read_bytes())
        p.symlink_to(out / "copy")
    elif kind == "link-dev-zero":
        p.symlink_to("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(p)
    else:
        p.mkdir()
    what = {"fifo": "is a fifo, not a regular file", "folder": "is a folder, not a regular file"}.get(
        kind, "is a symbolic link"
    )
    for verify in (True, False):
        name, msg = read_in_child(out, verify)
        assert name == "IndexFormatError" and str(p) in msg and what in msg, msg


@pytest.mark.parametrize(
    "case",
    [
        "huge-shape",
        "huge-count",
        "big-endian",
        "float64",
        "object",
        "fortran",
        "3-d",
        "1-d",
        "wrong-dim",
        "fewer-rows",
        "truncated",
        "trailing",
        "v2-header",
        "v3-header",
        "bad-magic",
        "garbage-header",
        "empty",
    ],
)
@pytest.mark.parametrize("verify", [True, False])
def test_npy_header_and_size_checked_before_reading(tmp_path, case, verify):
    """The .npy header (dtype, order, shape) and the file size are checked against the record
    before any data is read: a header claiming 1e12 rows allocates nothing."""
    out = tmp_path / "out"
    write_outdir(out)
    p = out / "shard-00000.npy"
    good = _unit(4, 0)
    m = manifest_of(out)
    raw = {
        "huge-shape": lambda: npy_bytes(
            header={"descr": "<f4", "fortran_order": False, "shape": (10**12, DIM)}, data=good.tobytes()
        ),
        "huge-count": lambda: npy_bytes(
            header={"descr": "<f4", "fortran_order": False, "shape": (10**12, DIM)}, data=good.tobytes()
        ),
        "big-endian": lambda: npy_bytes(good.astype(">f4")),
        "float64": lambda: npy_bytes(good.astype("<f8")),
        "object": lambda: npy_bytes(
            header={"descr": "|O", "fortran_order": False, "shape": (4, DIM)}, data=b"\0" * 8 * 4 * DIM
        ),
        "fortran": lambda: npy_bytes(np.asfortranarray(good)),
        "3-d": lambda: npy_bytes(good.reshape(4, DIM, 1)),
        "1-d": lambda: npy_bytes(good.reshape(-1)),
        "wrong-dim": lambda: npy_bytes(good.reshape(8, DIM // 2)),
        "fewer-rows": lambda: npy_bytes(good[:3]),
        "truncated": lambda: npy_bytes(good)[:-4],
        "trailing": lambda: npy_bytes(good) + b"\0\0\0\0",
        "v2-header": lambda: npy_bytes(good, version=(2, 0)),  # valid: numpy's larger-header variant
        "v3-header": lambda: npy_bytes(good, version=(3, 0)),
        "bad-magic": lambda: b"\x93NUMPZ" + npy_bytes(good)[6:],
        "garbage-header": lambda: npy_bytes(good).replace(b"'descr'", b"'dexcr'"),
        "empty": lambda: b"",
    }[case]()
    p.write_bytes(raw)
    if case == "huge-count":
        m["shards"][0]["count"] = 10**12
        m["count"] += 10**12 - 4
    put_manifest(out, m)
    resign(out)
    if case == "v2-header":
        np.testing.assert_array_equal(next(iter(iter_shards(out, verify=verify)))[2], good)
        return
    match = {
        "truncated": r"\(truncated\)",
        "trailing": r"\(trailing data\)",
        "huge-count": r"\(truncated\)",
        "v3-header": "not a valid .npy file",
        "bad-magic": "not a valid .npy file",
        "garbage-header": "not a valid .npy file",
        "empty": "not a valid .npy file",
    }.get(case, "its record says")
    e = expect(lambda o: list(iter_shards(o, verify=verify)), out, match, "shard-00000.npy")
    assert str(p) in str(e)


@pytest.mark.parametrize(
    "line,why",
    [
        (b'["d0", "t"]', "not a JSON object"),
        (b'{"id": 5, "title": "t"}', "string id"),
        (b'{"id": "d0", "title": 5}', "string id and title"),
        (b'{"title": "t"}', "string id"),
        (b'{"id": "d\xff0"}', "not a JSON object"),
        (b"[" * 100_000, "not a JSON object"),
        (b"nul", "not a JSON"),
    ],
)
def test_sidecar_lines_checked(tmp_path, line, why):
    out = tmp_path / "out"
    write_outdir(out)
    p = out / "shard-00002.jsonl"
    lines = p.read_bytes().split(b"\n")
    lines[1] = line
    p.write_bytes(b"\n".join(lines))
    resign(out, 2)
    for reader in READERS.values():
        e = expect(reader, out, why, "shard-00002.jsonl:2")
        assert f"{p}:2:" in str(e)


@pytest.mark.parametrize(
    "edit,match",
    [
        (lambda b: b + b'{"id": "x", "title": ""}\n', "has 5 lines, the manifest says 4"),
        (lambda b: b[:-1], r"no final newline"),
        (lambda b: b.split(b"\n", 1)[1], "has 3 lines"),
    ],
)
def test_sidecar_line_count_checked(tmp_path, edit, match):
    out = tmp_path / "out"
    write_outdir(out)
    p = out / "shard-00001.jsonl"
    p.write_bytes(edit(p.read_bytes()))
    resign(out, 1)
    for reader in READERS.values():
        expect(reader, out, match, "shard-00001.jsonl")


@pytest.mark.parametrize(
    "edit,match",
    [
        (lambda m: m.update(dim="8"), "dim is '8'"),
        (lambda m: m.update(dim=0), "dim is 0"),
        (lambda m: m.update(dim=True), "dim is True"),
        (lambda m: m.pop("model"), "model must be an object"),
        (lambda m: m["model"].update(fingerprint=None), "model must be"),
        (lambda m: m.update(truncate_dim="x"), "truncate_dim is 'x'"),
        (lambda m: m.update(shards={}), "no list of shards"),
        (lambda m: m["shards"].pop(0), "shard record 0 has index 1"),
        (lambda m: m["shards"].reverse(), "shard record 0 has index 2"),
        (lambda m: m["shards"].append(1), "not an object"),
        (lambda m: m["shards"][1].update(count=-1), "has count -1"),
        (lambda m: m["shards"][1].update(count=4.0), "has count 4.0"),
        (lambda m: m["shards"][1].update(sha256={"vectors": "x" * 64}), "no valid sha256"),
        (lambda m: m["shards"][1].update(first_id=[1]), "first_id"),
        (lambda m: m.update(count=13), "count 13 is not the sum"),
        (lambda m: m.update(version="1"), "version '1'"),
        (lambda m: m.update(version=2), "format version 2.*Upgrade"),
        (lambda m: m.update(status="in_progress"), "incomplete"),
    ],
)
def test_manifest_fields_checked(tmp_path, edit, match):
    out = tmp_path / "out"
    write_outdir(out)
    m = manifest_of(out)
    edit(m)
    put_manifest(out, m)
    for reader in [read_manifest, *READERS.values()]:
        with pytest.raises(IndexFormatError, match=match):
            reader(out)


@pytest.mark.parametrize(
    "raw,match",
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b"{" + b'"a":{' * 50_000, "nested too deeply|not valid"),
        (b"\xff\xfe{}", "not valid JSON"),
        (b"[]", "not an embed encode manifest"),
        (b"", "not valid JSON"),
    ],
)
def test_damaged_manifest(tmp_path, raw, match):
    out = tmp_path / "out"
    write_outdir(out)
    (out / "manifest.json").write_bytes(raw)
    for reader in [read_manifest, *READERS.values()]:
        expect(reader, out, match, "manifest.json")


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "link-out"])
def test_manifest_must_be_a_regular_file(tmp_path, kind):
    other = tmp_path / "other"
    write_outdir(other)
    out = tmp_path / "out"
    write_outdir(out)
    p = out / "manifest.json"
    p.unlink()
    {
        "fifo": lambda: os.mkfifo(p),
        "dev-zero": lambda: p.symlink_to("/dev/zero"),
        "link-out": lambda: p.symlink_to(other / "manifest.json"),
    }[kind]()
    name, msg = read_in_child(out)
    assert name == "IndexFormatError" and str(p) in msg
    assert ("is a fifo" if kind == "fifo" else "is a symbolic link") in msg


@pytest.mark.parametrize("value,match", [(np.nan, "NaN or inf"), (0.0, "zero vectors"), (1e-40, "zero vectors")])
def test_bad_vectors_in_a_shard_name_the_shard(tmp_path, value, match):
    """load_index turns what Index.add refuses into an IndexFormatError naming the shard."""
    c = contents()
    c[1][2][3] = value
    out = tmp_path / "out"
    write_outdir(out, c)
    e = expect(load_index, out, match, "shard-00001")
    assert "row(s) [3]" in str(e)


def test_duplicate_ids_across_shards_name_the_shard(tmp_path):
    c = contents()
    c[2][0][1] = "d2"
    out = tmp_path / "out"
    write_outdir(out, c)
    e = expect(load_index, out, "ids already in the index: \\['d2'\\]", "shard-00002")
    assert str(out / "shard-00002") in str(e)


# ----------------------------------------------------------------------------- 6. done records on resume


def _completed(out: Path, i: int, content=None):
    with OutputDir(out) as o:
        o.check_settings(SETTINGS, overwrite=False)
        return o.completed(i, f"content-{i}" if content is None else content, SHA)


@pytest.mark.parametrize(
    "edit,warn",
    [
        ("OTHER", "names vectors file '/"),
        (lambda r: r.update(ids="../other/shard-00001.jsonl"), "names ids file"),
        (lambda r: r.update(index=0), "has index 0"),
        (lambda r: r.update(count=5), "record says <f4 (float32) (5, 8)"),
        (lambda r: r.update(count="4"), "has count '4'"),
        (lambda r: r.update(sha256=[]), "no valid sha256"),
        (lambda r: r.pop("sha256"), "no valid sha256"),
    ],
)
def test_done_record_not_trusted(tmp_path, caplog, edit, warn):
    out = tmp_path / "out"
    write_outdir(out)
    assert _completed(out, 1)["count"] == 4
    done = out / "shard-00001.done.json"
    rec = json.loads(done.read_text())
    if edit == "OTHER":  # another folder's shard 1, its checksum valid: used to be accepted
        other = tmp_path / "other"
        write_outdir(other, [*contents(2, per=4)[:1], (["x"] * 4, ["y"] * 4, _unit(4, 9))])
        rec["vectors"] = str(other / "shard-00001.npy")
        rec["sha256"]["vectors"] = hashlib.sha256((other / "shard-00001.npy").read_bytes()).hexdigest()
    else:
        edit(rec)
    done.write_text(json.dumps(rec))
    with caplog.at_level(logging.WARNING, logger="engine.corpus.shards"):
        assert _completed(out, 1) is None
    assert warn in caplog.text and "embedding it again" in caplog.text


@pytest.mark.parametrize("raw", [b"[]", b"5", b"[" * 100_000, b"\xff", b"{}", b'{"index": 1}'])
def test_done_record_not_an_object(tmp_path, raw):
    out = tmp_path / "out"
    write_outdir(out)
    (out / "shard-00001.done.json").write_bytes(raw)
    assert _completed(out, 1) is None


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "link-other"])
@pytest.mark.parametrize("name", ["shard-00001.done.json", "shard-00001.npy", "shard-00001.jsonl"])
def test_done_record_and_files_must_be_regular(tmp_path, kind, name):
    """None (redo the shard) at once, where reading a fifo or /dev/zero used to hang the resume."""
    other = tmp_path / "other"
    write_outdir(other)
    out = tmp_path / "out"
    write_outdir(out)
    p = out / name
    p.unlink()
    {
        "fifo": lambda: os.mkfifo(p),
        "dev-zero": lambda: p.symlink_to("/dev/zero"),
        "link-other": lambda: p.symlink_to(other / name),
    }[kind]()
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parents[2])!r})
        from tests.corpus.test_shards import _completed
        from pathlib import Path
        print(_completed(Path({str(out)!r}), 1))
    """)
    r = run_child(["-c", code], 60, "checking the done record")
    assert r.returncode == 0 and r.stdout.strip() == "None", r.stdout + r.stderr


def test_resume_with_done_record_pointing_at_dev_zero(tmp_path, tiny_model_dir, tiny_cache, tiny_embedder):
    """End to end: embed encode resumes, redoes the tampered shard only, and the output is the
    uninterrupted run's (this used to hang reading /dev/zero)."""
    from engine.corpus import embed_corpus

    src = tmp_path / "c.jsonl"
    src.write_text(
        "".join(
            json.dumps({"_id": f"id{i}", "title": f"t{i}", "text": f"text number {i} of the corpus"}) + "\n"
            for i in range(12)
        )
    )
    out = tmp_path / "out"
    embed_corpus(src, out, tiny_embedder, shard_size=4, cache=False)
    want = {p.name: p.read_bytes() for p in out.iterdir() if p.name != ".lock"}
    done = out / "shard-00001.done.json"
    rec = json.loads(done.read_text())
    done.write_text(json.dumps({**rec, "vectors": "/dev/zero"}))
    code = textwrap.dedent(f"""
        from engine.corpus import embed_corpus
        from engine.embedder import Embedder
        s = embed_corpus({str(src)!r}, {str(out)!r}, Embedder({str(tiny_model_dir)!r}, cache_dir={str(tiny_cache)!r}),
                         shard_size=4, cache=False)
        print(s.shards_written, s.resumed)
    """)
    r = run_child(["-c", code], 120, "the resume")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.split()[-2:] == ["1", "8"]
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != ".lock"} == want


# ----------------------------------------------------------------------------- 7. modes, lock


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_output_files_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        write_outdir(tmp_path / "out")
        write_outdir(tmp_path / "out")  # rewritten in place (resume/overwrite path)
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "out").iterdir() if p.name != ".lock"]
    assert len(files) == 1 + 3 * 3
    for p in [*files, tmp_path / "out" / ".lock"]:
        assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask, p.name


def test_lock_file_link_is_refused(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    target = tmp_path / "elsewhere" / "created-by-the-lock"
    target.parent.mkdir()
    (out / ".lock").symlink_to(target)
    with pytest.raises(InputError, match=r"\.lock is a symbolic link"):
        OutputDir(out)
    assert not target.exists()


def test_a_failed_run_that_wrote_no_shard_pins_no_settings(tmp_path, tiny_model_dir, tiny_cache):
    """A first run that fails before any shard (wrong text field) must not block the corrected rerun."""
    from engine.corpus import embed_corpus
    from engine.errors import InputError

    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps({"_id": f"d{i}", "body": f"text number {i}"}) + "\n" for i in range(5)))
    out = tmp_path / "out"
    with pytest.raises(InputError, match="text"):
        embed_corpus(src, out, str(tiny_model_dir), cache_dir=tiny_cache, cache=False)
    assert (out / "manifest.json").exists() and not list(out.glob("shard-*"))
    s = embed_corpus(src, out, str(tiny_model_dir), cache_dir=tiny_cache, cache=False, text_field="body")
    assert s.docs == 5
    # once a shard exists, other settings are refused as before
    with pytest.raises(InputError, match="other settings"):
        embed_corpus(src, out, str(tiny_model_dir), cache_dir=tiny_cache, cache=False, text_field="body", shard_size=2)


# -- embed search over an output folder ------------------------------------------------------------


def test_search_corpus(tmp_path, tiny_embedder):
    from engine.corpus import embed_corpus
    from engine.corpus.shards import CorpusSearcher

    docs = synth(30)
    src = write_jsonl(tmp_path / "c.jsonl", docs)
    embed_corpus(src, tmp_path / "out", tiny_embedder, shard_size=7, cache=False)
    for precision in ("fp32", "int8"):
        s = CorpusSearcher(tmp_path / "out", model=tiny_embedder, precision=precision)
        hits = s.search([compose(docs[13]["title"], docs[13]["text"])], k=3)[0]
        # the tiny random model maps near-identical synthetic docs (doc5: same words plus one)
        # to cosines within ~1e-5 of each other, so only require doc13 to tie for first place
        by_id = {h[0]: h for h in hits}
        assert "doc13" in by_id and by_id["doc13"][1] == pytest.approx(1.0, abs=1e-4)
        assert hits[0][1] - by_id["doc13"][1] <= 1e-4
        assert by_id["doc13"][2] == "title 13"


def test_search_incomplete_output_refused(tmp_path, tiny_embedder):
    from engine.corpus.shards import CorpusSearcher
    from engine.errors import IndexFormatError

    src = write_jsonl(tmp_path / "c.jsonl", synth(3))
    out = tmp_path / "out"
    from engine.corpus import embed_corpus

    embed_corpus(src, out, tiny_embedder, cache=False)
    m = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**m, "status": "in_progress"}))
    with pytest.raises(IndexFormatError, match=r"incomplete.*rerun the same embed encode"):
        CorpusSearcher(out, model=tiny_embedder)
    (out / "manifest.json").write_text(json.dumps(m))
    with open(out / "shard-00000.npy", "r+b") as f:
        f.seek(-4, 2)
        f.write(b"\0\0\0\0")
    with pytest.raises(IndexFormatError, match="does not match its checksum"):
        CorpusSearcher(out, model=tiny_embedder)


# ==================================================================================================
# Parquet output (output_format="parquet") and load_embeddings
# ==================================================================================================
N_DOCS, SHARD = 30, 8  # 4 shards, the last one short
PARQUET_FILES = ["shard-00000.parquet", "shard-00001.parquet", "shard-00002.parquet", "shard-00003.parquet"]


def parquet_docs(n: int) -> list[dict]:
    words = ["fox", "dog", "vector", "numba", "onnx", "tokens", "cosine", "stitch", "café", "日本語"]
    return [
        {
            "_id": f"doc-{i:03d}",
            "title": f"title {i}" if i % 3 else "",
            "text": " ".join(words[(i * k) % len(words)] for k in range(1, 2 + i % 9)),
        }
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("pq-corpus") / "corpus.jsonl"
    p.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in parquet_docs(N_DOCS)), encoding="utf-8")
    return p


def encode(corpus, out, emb, fmt="parquet", **kw):
    return embed_corpus(corpus, out, emb, shard_size=SHARD, cache=False, output_format=fmt, **kw)


@pytest.fixture(scope="module")
def npy_out(corpus, tiny_embedder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pq-npy") / "out"
    encode(corpus, out, tiny_embedder, "npy")
    return out


@pytest.fixture(scope="module")
def pq_out(corpus, tiny_embedder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pq-parquet") / "out"
    s = encode(corpus, out, tiny_embedder)
    assert (s.docs, s.shards, s.shards_written) == (N_DOCS, 4, 4)
    return out


@pytest.fixture
def pq_copy(pq_out, tmp_path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(pq_out, out, ignore=shutil.ignore_patterns(".lock"))
    return out


def shard_path(out: Path, i: int = 0) -> Path:
    return out / f"shard-{i:05d}.parquet"


def resign_table(out: Path, i: int = 0) -> None:
    """Make the manifest's and the done record's sha256 of shard i match its file again."""
    sha = hashlib.sha256(shard_path(out, i).read_bytes()).hexdigest()
    m = json.loads((out / "manifest.json").read_text())
    m["shards"][i]["sha256"]["table"] = sha
    (out / "manifest.json").write_text(json.dumps(m))
    done = out / f"shard-{i:05d}.done.json"
    rec = json.loads(done.read_text())
    rec["sha256"]["table"] = sha
    done.write_text(json.dumps(rec))


# -- the same content as npy -----------------------------------------------------------------
@needs_pyarrow
def test_parquet_holds_exactly_the_npy_output(npy_out, pq_out, tiny_embedder):
    assert sorted(p.name for p in pq_out.glob("shard-*")) == sorted(
        PARQUET_FILES + [f.replace(".parquet", ".done.json") for f in PARQUET_FILES]
    )
    dim = tiny_embedder.dim
    for (ids, titles, vectors), (pids, ptitles, pvectors) in zip(
        iter_shards(npy_out), iter_shards(pq_out), strict=True
    ):
        assert (pids, ptitles) == (ids, titles)
        np.testing.assert_array_equal(pvectors, vectors)
        assert pvectors.dtype == np.float32 and pvectors.flags.c_contiguous and pvectors.flags.writeable
    assert [t for _, ts, _ in iter_shards(pq_out) for t in ts][:2] == ["fox", "title 1"]  # snippet, then title
    # the file itself: the schema the README documents, one row per document
    table = pq.read_table(shard_path(pq_out))
    assert table.schema.equals(
        pa.schema([("id", pa.string()), ("title", pa.string()), ("embedding", pa.list_(pa.float32(), dim))])
    )
    assert table.column("id").to_pylist() == [f"doc-{i:03d}" for i in range(SHARD)]
    np.testing.assert_array_equal(
        np.stack(table.column("embedding").to_numpy(zero_copy_only=False)), np.load(npy_out / "shard-00000.npy")
    )
    # the manifest records the format; the settings hold it only when it is not npy (npy digests unchanged)
    m, mn = read_manifest(pq_out), read_manifest(npy_out)
    assert (m["output_format"], m["settings"]["output_format"]) == ("parquet", "parquet")
    assert mn["output_format"] == "npy" and "output_format" not in mn["settings"]
    assert {k: v for k, v in m["settings"].items() if k != "output_format"} == mn["settings"]
    assert m["shards"][0]["table"] == "shard-00000.parquet" and set(m["shards"][0]["sha256"]) == {"table"}
    assert m["shards"][0]["sha256"]["table"] == hashlib.sha256(shard_path(pq_out).read_bytes()).hexdigest()


@needs_pyarrow
@pytest.mark.parametrize("verify", [True, False], ids=["verified", "unverified"])
def test_load_embeddings_both_formats(npy_out, pq_out, verify):
    want_ids = [f"doc-{i:03d}" for i in range(N_DOCS)]
    want = np.concatenate([np.load(npy_out / f"shard-{i:05d}.npy") for i in range(4)])  # the raw .npy files
    for out in (npy_out, pq_out):
        ids, vectors = load_embeddings(out, verify=verify)
        assert ids == want_ids
        assert vectors.dtype == np.float32 and vectors.shape == want.shape
        np.testing.assert_array_equal(vectors, want)


@needs_pyarrow
def test_load_embeddings_is_exported():
    import engine
    import engine.corpus

    assert engine.load_embeddings is engine.corpus.load_embeddings is load_embeddings
    assert "load_embeddings" in engine.__all__ and "load_embeddings" in engine.corpus.__all__


def _glob(out: Path) -> list[str]:
    """The README's way to list the shards for pyarrow and pandas."""
    files = sorted(glob.glob(f"{out}/*.parquet"))
    assert [Path(f).name for f in files] == PARQUET_FILES
    return files


def _check(want_ids, want, got_ids, got_vectors) -> None:
    assert list(got_ids) == want_ids
    np.testing.assert_array_equal(np.asarray(got_vectors, dtype=np.float32), want)


@needs_pyarrow
def test_pyarrow_round_trip(npy_out, pq_out):
    import pyarrow.dataset as ds

    ids, vectors = load_embeddings(npy_out)
    t = pq.read_table(_glob(pq_out))
    _check(ids, vectors, t.column("id").to_pylist(), np.stack(t.column("embedding").to_numpy(zero_copy_only=False)))
    t = ds.dataset(_glob(pq_out), format="parquet").to_table()
    _check(
        ids,
        vectors,
        t.column("id").to_pylist(),
        t.column("embedding").combine_chunks().flatten().to_numpy().reshape(len(ids), -1),
    )
    assert t.column("title").to_pylist() == [t for _, ts, _ in iter_shards(npy_out) for t in ts]
    with pytest.raises(pa.ArrowInvalid, match=r"manifest.json"):  # why the README gives the glob
        pq.read_table(pq_out)


@needs_pyarrow
def test_pandas_round_trip(npy_out, pq_out):
    pd = pytest.importorskip("pandas")
    ids, vectors = load_embeddings(npy_out)
    df = pd.read_parquet(_glob(pq_out))
    _check(ids, vectors, df["id"], np.stack(df["embedding"].to_numpy()))
    assert df["embedding"].iloc[0].dtype == np.float32


@needs_pyarrow
def test_duckdb_round_trip(npy_out, pq_out):
    duckdb = pytest.importorskip("duckdb", reason="duckdb is in the test extra")
    ids, vectors = load_embeddings(npy_out)
    rows = duckdb.sql(f"SELECT id, embedding FROM '{pq_out}/*.parquet'").fetchall()
    got = {i: np.asarray(v, dtype=np.float32) for i, v in rows}
    assert sorted(got) == sorted(ids) and len(rows) == len(ids)
    for i, v in zip(ids, vectors):
        np.testing.assert_array_equal(got[i], v)
    where = f"WHERE len(embedding) = {vectors.shape[1]}"
    assert duckdb.sql(f"SELECT count(*) FROM '{pq_out}/*.parquet' {where}").fetchall() == [(len(ids),)]


@needs_pyarrow
def test_search_on_parquet_equals_npy(npy_out, pq_out, tiny_embedder):
    index, titles, _ = load_index(pq_out)
    _index_n, titles_n, _ = load_index(npy_out)
    assert titles == titles_n and len(index) == N_DOCS
    queries = [d["text"] for d in parquet_docs(N_DOCS)[::7]]
    assert CorpusSearcher(pq_out, model=tiny_embedder).search(queries, k=5) == CorpusSearcher(
        npy_out, model=tiny_embedder
    ).search(queries, k=5)


@needs_pyarrow
def test_empty_corpus(tmp_path, tiny_embedder):
    src = tmp_path / "empty.jsonl"
    src.write_text("")
    for fmt in ("npy", "parquet"):
        encode(src, tmp_path / fmt, tiny_embedder, fmt)
        ids, vectors = load_embeddings(tmp_path / fmt)
        assert ids == [] and vectors.shape == (0, tiny_embedder.dim) and vectors.dtype == np.float32


# -- settings: the format is one ---------------------------------------------------------------
@needs_pyarrow
@pytest.mark.parametrize("first, then", [("npy", "parquet"), ("parquet", "npy")])
def test_switching_format_needs_overwrite(tmp_path, corpus, tiny_embedder, npy_out, first, then):
    out = tmp_path / "out"
    encode(corpus, out, tiny_embedder, first)
    before = output_files(out)
    with pytest.raises(InputError, match=f"output_format: '{first}' then, '{then}' now.*--overwrite"):
        encode(corpus, out, tiny_embedder, then)
    assert output_files(out) == before
    s = encode(corpus, out, tiny_embedder, then, overwrite=True)
    assert s.shards_written == 4 and s.resumed == 0
    suffixes = {p.suffix for p in out.glob("shard-*") if not p.name.endswith(".done.json")}
    assert suffixes == ({".parquet"} if then == "parquet" else {".npy", ".jsonl"})
    ids, vectors = load_embeddings(out)
    want_ids, want = load_embeddings(npy_out)
    assert ids == want_ids
    np.testing.assert_array_equal(vectors, want)


@needs_pyarrow
def test_unknown_output_format(tmp_path, corpus, tiny_embedder):
    with pytest.raises(InputError, match="output_format must be one of 'npy', 'parquet', got 'csv'"):
        encode(corpus, tmp_path / "out", tiny_embedder, "csv")
    assert not (tmp_path / "out").exists()


# -- resume -----------------------------------------------------------------------------------
# file writes of a Parquet run: 1 manifest, then 2 per shard (parquet, done record), 1 final manifest.
# The child is tests/corpus/test_driver.py's: it counts atomic_write calls and SIGKILLs itself at the kill_at-th
# (torn: after writing half of it to a temp file)


@needs_pyarrow
@pytest.mark.parametrize(
    "kill_at, torn, kept",
    [
        (2 + 2 * 2, False, 2),  # after the 2nd shard's done record
        (2 + 2 * 1, True, 1),  # inside the 2nd shard's parquet write (a torn temp file)
        (2 + 2 * 3 + 1, False, 3),  # the 4th shard's parquet renamed, its done record not written
    ],
    ids=["after-2nd", "torn-parquet", "before-done"],
)
def test_kill_and_resume(tmp_path, corpus, pq_out, tiny_model_dir, tiny_cache, tiny_embedder, kill_at, torn, kept):
    out = tmp_path / "out"
    cfg = {
        "model": str(tiny_model_dir),
        "model_cache": str(tiny_cache),
        "src": str(corpus),
        "out": str(out),
        "shard": SHARD,
        "kill_at": kill_at,
        "torn": torn,
        "output_format": "parquet",
    }
    p = subprocess.run(
        [sys.executable, "-c", KILL_CHILD, json.dumps(cfg)],
        capture_output=True,
        timeout=120,
        env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
    )
    assert p.returncode == -signal.SIGKILL, p.stdout + p.stderr
    assert len(list(out.glob("*.done.json"))) == kept
    s = encode(corpus, out, tiny_embedder)
    assert (s.resumed, s.shards_written) == (kept * SHARD, 4 - kept)
    assert not list(out.glob(".tmp-*"))
    assert output_files(out) == output_files(pq_out)  # byte-identical to an uninterrupted run


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _float64_kept_valid(path: Path) -> None:
    """A float64 shard of the right rows, its done record's checksum updated: the schema check must catch it."""
    t = pq.read_table(path)
    values = t.column("embedding").combine_chunks().flatten().cast(pa.float64())
    t = t.set_column(2, "embedding", pa.FixedSizeListArray.from_arrays(values, t.schema.field(2).type.list_size))
    pq.write_table(t, path)
    resign_table(path.parent, int(path.stem.split("-")[1]))


@needs_pyarrow
@pytest.mark.parametrize(
    "damage, warns",
    [
        (_truncate, False),
        (_flip, False),
        (lambda p: p.unlink(), False),
        (lambda p: p.with_name("shard-00002.done.json").unlink(), False),
        (_float64_kept_valid, True),
    ],
    ids=["truncated", "byte-flipped", "parquet-missing", "done-missing", "float64-resigned"],
)
def test_damaged_shard_is_redone(pq_copy, pq_out, corpus, tiny_embedder, caplog, damage, warns):
    damage(shard_path(pq_copy, 2))
    with caplog.at_level("WARNING", logger="engine.corpus.shards"):
        s = encode(corpus, pq_copy, tiny_embedder)
    assert (s.shards_written, s.resumed) == (1, N_DOCS - SHARD)
    assert ("shard-00002.parquet has columns" in caplog.text) == warns
    assert output_files(pq_copy) == output_files(pq_out)


# -- reading trusts nothing ---------------------------------------------------------------------
def _table(
    n: int,
    dim: int,
    *,
    value_type=None,
    list_size=None,
    ids=None,
    names=("id", "title", "embedding"),
    extra: bool = False,
) -> pa.Table:
    vectors = np.random.default_rng(0).standard_normal((n, dim)).astype(np.float32)
    values = pa.array(vectors.reshape(-1), type=value_type or pa.float32())
    emb = (
        pa.FixedSizeListArray.from_arrays(values, list_size or dim)
        if list_size != "variable"
        else pa.ListArray.from_arrays(pa.array(np.arange(0, n * dim + 1, dim, dtype=np.int32)), values)
    )
    cols = [
        pa.array(ids if ids is not None else [f"x{i}" for i in range(n)], pa.string()),
        pa.array([f"t{i}" for i in range(n)]),
        emb,
    ]
    if extra:
        cols.append(pa.array(range(n)))
        names = (*names, "extra")
    return pa.Table.from_arrays(cols, names=list(names))


def _write(table_fn):
    def damage(path: Path) -> None:
        n = pq.read_metadata(path).num_rows
        dim = pq.read_schema(path).field("embedding").type.list_size
        pq.write_table(table_fn(n, dim), path)

    return damage


def _symlink(path: Path) -> None:
    target = path.parent.parent / "elsewhere.parquet"
    shutil.copy(path, target)
    path.unlink()
    path.symlink_to(target)


def _fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


# (damage to shard 1, what the message says, whether the checksum is updated so that the parse is reached)
DAMAGE = {
    "truncated": (_truncate, "not a readable Parquet file", True),
    "truncated-checksum": (_truncate, "does not match its checksum", False),
    "byte-flipped-checksum": (_flip, "does not match its checksum", False),
    "footer-flipped": (
        lambda p: p.write_bytes(p.read_bytes()[:-12] + b"\xff" * 4 + p.read_bytes()[-8:]),
        "not a readable Parquet file",
        True,
    ),
    "empty": (lambda p: p.write_bytes(b""), "not a readable Parquet file", True),
    "not-parquet": (lambda p: p.write_text('{"id": "x"}\n'), "not a readable Parquet file", True),
    "npy-bytes": (lambda p: shutil.copy(p.parent.parent / "elsewhere.npy", p), "not a readable Parquet file", True),
    "float64": (_write(lambda n, d: _table(n, d, value_type=pa.float64())), "has columns", True),
    "wrong-dim": (_write(lambda n, d: _table(n, d - 1)), r"has columns .*fixed_size_list<\w+: float>\[31\]", True),
    "variable-list": (_write(lambda n, d: _table(n, d, list_size="variable")), "has columns", True),
    "extra-column": (_write(lambda n, d: _table(n, d, extra=True)), "has columns", True),
    "renamed-column": (_write(lambda n, d: _table(n, d, names=("_id", "title", "embedding"))), "has columns", True),
    "extra-rows": (_write(lambda n, d: _table(n + 1, d)), "has 9 rows, its record says 8", True),
    "fewer-rows": (_write(lambda n, d: _table(n - 1, d)), "has 7 rows, its record says 8", True),
    "null-id": (
        _write(lambda n, d: _table(n, d, ids=[None] + [f"x{i}" for i in range(1, n)])),
        r"nulls in \(id\)",
        True,
    ),
    "symlink": (_symlink, "is a symbolic link", False),
    "fifo": (_fifo, "is a fifo", False),
    "missing": (lambda p: p.unlink(), "is missing", False),
}
PARQUET_READERS = {
    "load_embeddings": lambda out, verify: load_embeddings(out, verify=verify),
    "iter_shards": lambda out, verify: list(iter_shards(out, verify=verify)),
    "load_index": lambda out, verify: load_index(out, verify=verify),
}


@needs_pyarrow
@pytest.mark.parametrize("reader", PARQUET_READERS)
@pytest.mark.parametrize("case", DAMAGE)
def test_damaged_parquet_is_an_index_format_error(pq_copy, tiny_embedder, case, reader):
    damage, match, resigned = DAMAGE[case]
    np.save(pq_copy.parent / "elsewhere.npy", np.zeros((8, tiny_embedder.dim), np.float32))
    path = shard_path(pq_copy, 1)
    damage(path)
    if resigned:
        resign_table(pq_copy, 1)
    for verify in (True, False) if resigned or "checksum" not in match else (True,):
        with pytest.raises(IndexFormatError, match=match) as e:
            PARQUET_READERS[reader](pq_copy, verify)
        assert str(path) in str(e.value)
        assert "embed encode" in str(e.value)  # the fix: rerun / rewrite


@needs_pyarrow
@pytest.mark.parametrize(
    "field, value, match",
    [
        ("table", "../shard-00000.parquet", "names table file '../shard-00000.parquet'"),
        ("table", None, "names table file None"),
        ("sha256", {"vectors": "0" * 64}, "no valid sha256"),
    ],
)
def test_record_naming_other_files_is_refused(pq_copy, field, value, match):
    m = json.loads((pq_copy / "manifest.json").read_text())
    m["shards"][1][field] = value
    (pq_copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(IndexFormatError, match=match):
        load_embeddings(pq_copy)


@needs_pyarrow
def test_manifest_with_unknown_output_format(pq_copy):
    m = json.loads((pq_copy / "manifest.json").read_text())
    m["output_format"] = "../npy"
    (pq_copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(IndexFormatError, match=r"output_format is '../npy'"):
        load_embeddings(pq_copy)


FUZZ_CHILD = textwrap.dedent("""
    import hashlib, json, shutil, sys
    from pathlib import Path
    from engine.corpus import load_embeddings
    from engine.errors import IndexFormatError

    src, work = Path(sys.argv[1]), Path(sys.argv[2])
    data = (src / "shard-00001.parquet").read_bytes()
    out = {"ok": 0, "refused": 0, "other": []}
    for k in range(0, len(data), max(1, len(data) // 150)):
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(src, work, ignore=shutil.ignore_patterns(".lock"))
        bad = bytearray(data)
        bad[k] ^= 0x5A
        (work / "shard-00001.parquet").write_bytes(bytes(bad))
        m = json.loads((work / "manifest.json").read_text())
        m["shards"][1]["sha256"]["table"] = hashlib.sha256(bad).hexdigest()
        (work / "manifest.json").write_text(json.dumps(m))
        try:
            load_embeddings(work)
            out["ok"] += 1
        except IndexFormatError as e:
            out["refused"] += 1
            assert "shard-00001.parquet" in str(e), str(e)
        except Exception as e:
            out["other"].append(f"{k}: {type(e).__name__}: {e}")
    print(json.dumps(out))
""")


@needs_pyarrow
def test_every_flipped_byte_loads_or_is_an_index_format_error(pq_out, tmp_path):
    """~150 single-byte edits across a shard, checksums updated: each load works or raises IndexFormatError
    naming the file, never a pyarrow exception (in a child process, so a crash fails the test)."""
    p = subprocess.run(
        [sys.executable, "-c", FUZZ_CHILD, str(pq_out), str(tmp_path / "w")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    res = json.loads(p.stdout)
    assert res["other"] == [] and res["refused"] > 0 and res["ok"] + res["refused"] >= 150


# -- the CLI and a missing pyarrow ----------------------------------------------------------------
@needs_pyarrow
def test_cli_output_format(tmp_path, corpus, npy_out, tiny_model_dir, tiny_cache, monkeypatch, capsys):
    from engine.cli import main
    from engine.corpus.readers import compose

    monkeypatch.setenv("EMBED_ENGINE_CACHE", str(tiny_cache))
    out = tmp_path / "out"
    base = [
        "encode",
        str(corpus),
        "-o",
        str(out),
        "--model",
        str(tiny_model_dir),
        "--shard-size",
        str(SHARD),
        "--no-cache",
        "-q",
    ]
    assert main([*base, "--output-format", "parquet", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["shards"] == 4
    assert sorted(p.name for p in out.glob("*.parquet")) == PARQUET_FILES and not list(out.glob("*.npy"))
    ids, vectors = load_embeddings(out)
    want_ids, want = load_embeddings(npy_out)
    assert ids == want_ids
    np.testing.assert_array_equal(vectors, want)
    doc = parquet_docs(N_DOCS)[4]
    assert main(["search", str(out), compose(doc["title"], doc["text"]), "-k", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["hits"][0]["id"] == "doc-004"
    assert main([*base, "--output-format", "npy"]) == 1  # the other format: refused, named
    assert "output_format: 'parquet' then, 'npy' now" in capsys.readouterr().err
    assert main([*base, "--output-format", "npy", "--overwrite"]) == 0
    assert not list(out.glob("*.parquet")) and load_embeddings(out)[0] == want_ids


@pytest.fixture
def no_pyarrow(monkeypatch):
    """pyarrow not installed: its imports fail as they would without the corpus extra."""
    for name in [m for m in sys.modules if m == "pyarrow" or m.startswith("pyarrow.")] + ["pyarrow"]:
        monkeypatch.setitem(sys.modules, name, None)


INSTALL = r"pip install 'embed-engine\[corpus\]'"


@needs_pyarrow
def test_parquet_without_pyarrow_fails_up_front(no_pyarrow, tmp_path, corpus, tiny_embedder):
    with pytest.raises(InputError, match=INSTALL):
        encode(corpus, tmp_path / "out", tiny_embedder)
    assert not (tmp_path / "out").exists()  # nothing written
    s = encode(corpus, tmp_path / "npy", tiny_embedder, "npy")  # npy never needs pyarrow
    assert s.shards == 4 and load_embeddings(tmp_path / "npy")[0][0] == "doc-000"


@needs_pyarrow
def test_cli_parquet_without_pyarrow(no_pyarrow, tmp_path, corpus, tiny_model_dir, capsys):
    from engine.cli import main

    out = tmp_path / "out"
    assert (
        main(
            [
                "encode",
                str(corpus),
                "-o",
                str(out),
                "--model",
                str(tiny_model_dir),
                "--no-cache",
                "-q",
                "--output-format",
                "parquet",
            ]
        )
        == 1
    )
    assert "pip install 'embed-engine[corpus]'" in capsys.readouterr().err
    assert not out.exists()


@needs_pyarrow
def test_reading_parquet_without_pyarrow(pq_out, monkeypatch):
    for name in [m for m in sys.modules if m == "pyarrow" or m.startswith("pyarrow.")]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(InputError, match=INSTALL):
        load_embeddings(pq_out)


@needs_pyarrow
def test_import_does_not_load_pyarrow():
    code = (
        "import sys, engine, engine.corpus, engine.corpus.shards; engine.load_embeddings; "
        "print(sorted(m for m in ('pyarrow', 'pandas', 'duckdb') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# -- embed search: the manifest's query prompt and similarity --------------------------------------


def _brute_force(doc_vecs, query_vecs, k):
    s = query_vecs.astype(np.float64) @ doc_vecs.T.astype(np.float64)
    i = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, i, 1), i


@pytest.mark.parametrize("which", ["cosine", "dot"])
def test_embed_search_equals_brute_force_with_st_vectors(
    tmp_path, cosine_model, dot_model, st_cache, which, monkeypatch, capsys
):
    from engine.cli import main

    folder, _emb = cosine_model if which == "cosine" else dot_model
    monkeypatch.setenv("EMBED_ENGINE_CACHE", str(st_cache))
    docs = TEXTS[:8]  # distinct texts: no tied scores
    src = write_texts(tmp_path / "c.jsonl", docs)
    out = tmp_path / "out"
    assert main(["encode", str(src), "-o", str(out), "--model", str(folder), "--no-cache", "-q"]) == 0
    capsys.readouterr()
    st = st_model(folder)
    d, q = st.encode_document(docs), st.encode_query(QUERIES)
    if which == "cosine":
        d, q = normalized(d), normalized(q)
    want_s, want_i = _brute_force(d, q, 5)
    for extra, qv in (
        ([], None),
        (["--prompt-name", "other"], st.encode(QUERIES, prompt_name="other")),
        (["--prompt", ""], st.encode(QUERIES)),
    ):
        if qv is not None:
            want_s, want_i = _brute_force(d, normalized(qv) if which == "cosine" else qv, 5)
        assert main(["search", str(out), *QUERIES, "-k", "5", "--json", *extra]) == 0
        rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [r["query"] for r in rows] == QUERIES
        got_i = [[int(h["id"][1:]) for h in r["hits"]] for r in rows]
        got_s = np.array([[h["score"] for h in r["hits"]] for r in rows])
        assert got_i == want_i.tolist(), extra
        np.testing.assert_allclose(got_s, want_s, atol=1e-5 * max(1.0, np.abs(want_s).max()))


def test_load_index_follows_the_manifest(tmp_path, cosine_model, dot_model):
    from engine.corpus.shards import load_index

    src = write_texts(tmp_path / "c.jsonl", TEXTS)
    for _, emb in (cosine_model, dot_model):
        out = tmp_path / emb.similarity_fn_name
        embed_corpus(src, out, emb, cache=False)
        for precision in ("fp32", "int8"):
            index, _, _ = load_index(out, precision=precision)
            assert index.metric == emb.similarity_fn_name


@pytest.mark.parametrize(
    "edit", [{"prompts": "query: "}, {"prompts": {"query": 3}}, {"normalize": "yes"}, {"similarity_fn_name": "jaccard"}]
)
def test_damaged_prompt_fields_in_the_manifest(tmp_path, cosine_model, edit):
    from engine.errors import IndexFormatError

    _, emb = cosine_model
    embed_corpus(write_texts(tmp_path / "c.jsonl", TEXTS[:3]), tmp_path / "out", emb, cache=False)
    path = tmp_path / "out" / "manifest.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **edit}))
    with pytest.raises(IndexFormatError, match=f"manifest.json: {next(iter(edit))}"):
        read_manifest(tmp_path / "out")
