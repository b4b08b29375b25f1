"""An ``embed encode`` output folder is untrusted: manifests, done records, shard files.

Folders are written by the engine's own ``OutputDir`` (as the driver does) and then edited with
checksums kept valid, so only the rule under test breaks. Cases that used to block for ever
(fifos, ``/dev/zero``) run in a child process with a time limit, so a regression fails instead
of hanging the suite.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from engine.corpus import shards
from engine.corpus.shards import FORMAT, VERSION, OutputDir, iter_shards, load_index, read_manifest, settings_digest
from engine.errors import IndexFormatError, InputError

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
        sys.path.insert(0, {str(Path(__file__).parents[1])!r})
        from tests.test_shards import _completed
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
