"""Fuzzing the files the engine reads back, across the modules that read them (the one cross-cutting
fuzz file; each module's own tests are in the mirror of its path):

* index files: ``engine/index/format.py``, through ``Index.load`` (``engine/index/index.py``);
* ``embed encode`` output folders (the manifest, shard files) and their done records:
  ``engine/corpus/shards.py`` (``iter_shards``, ``load_index``, ``record_problem``);
* the config files of a model folder: ``models/fetch.py`` (``spec_from_folder``) and ``models/stack.py``
  (``read_stack``, ``load_weights``), against sentence-transformers' reading of the same folder.

Each property writes files whose checksums are VALID (so the checks behind them are the ones
exercised), with arbitrary header fields, section tables, records, paths and file kinds, and
asserts that reading either works correctly (compared with an independent reading of the same
bytes and a brute-force search) or raises ``IndexFormatError`` naming the file (an ``EngineError``
for a model folder). Each runs in a child process with a time and memory limit, so a crash, a hang
or a read without end fails the test instead of taking pytest down, with a fixed number of
derandomized examples (``EMBED_FUZZ_EXAMPLES`` to run more locally).
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = int(os.environ.get("EMBED_FUZZ_EXAMPLES", "0"))  # 0: each test's own count (CI: < 30 s each)


def _limit_memory() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_DATA, (3 << 30, 3 << 30))


def run_fuzz(name: str, tmp_path: Path, examples: int, timeout: float = 240) -> None:
    code = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r}); from tests.test_fuzz_files import {name}; "
        f"{name}({str(tmp_path)!r}, {EXAMPLES or examples})"
    )
    try:
        r = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=timeout,
            preexec_fn=_limit_memory,
            cwd=ROOT,
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{name} did not finish in {timeout} s (a read blocks or runs without end)\n{e.stdout}")
    if r.returncode < 0:
        pytest.fail(f"{name} was killed by {signal.Signals(-r.returncode).name}\n{r.stdout[-4000:]}{r.stderr[-4000:]}")
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-6000:]


def test_fuzz_index_files(tmp_path):
    run_fuzz("fuzz_index_files", tmp_path, 250)


def test_fuzz_corpus_folders(tmp_path):
    run_fuzz("fuzz_corpus_folders", tmp_path, 200)


def test_fuzz_done_records(tmp_path):
    run_fuzz("fuzz_done_records", tmp_path, 150)


def test_fuzz_model_configs(tmp_path):
    run_fuzz("fuzz_model_configs", tmp_path, 30)


# ============================================================================= in the child


def _strategies():
    from hypothesis import strategies as st

    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.sampled_from([0, 1, -1, 2, 3, 8, 2**31, 2**63 - 1, 2**63, 2**64, 10**12, 10**30]),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=6),
    )
    values = st.recursive(
        scalars,
        lambda ch: st.lists(ch, max_size=3) | st.dictionaries(st.text(max_size=4), ch, max_size=3),
        max_leaves=6,
    )
    return st, values


def _settings(examples: int):
    from hypothesis import HealthCheck, settings

    return settings(
        max_examples=examples, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
    )


def _scratch(root: str) -> Path:
    return Path(tempfile.mkdtemp(dir=root))


# ----------------------------------------------------------------------------- index files


def _oracle_index_search(meta: dict, blobs: dict, idx, path: Path, checked: bool) -> None:
    """A loaded index against the header and section bytes written: fields, and search = brute force."""
    from engine.errors import IndexFormatError

    n, d = meta["count"], meta["dim"]
    assert (len(idx), idx.dim, idx.precision, idx.model, idx.oversample) == (
        n,
        d,
        meta["precision"],
        meta["model"],
        meta["oversample"],
    )
    if d > 64:  # a fuzzed dim with no rows (or a huge one): nothing to search
        assert n == 0 or d * n * 4 == len(blobs["vectors"])
        return
    vecs = np.frombuffer(blobs["vectors"], "<f4").reshape(n, d).astype(np.float64)
    if meta["id_kind"] == "int":
        ids = np.frombuffer(blobs["ids"], "<i8").tolist()
    elif meta["id_kind"] == "str":
        offs = np.frombuffer(blobs["ids_offsets"], "<i8").tolist()
        ids = [blobs["ids_utf8"][a:b].decode() for a, b in itertools.pairwise(offs)]
    else:
        ids = list(range(n))
    row_of = {v: r for r, v in enumerate(ids)}
    assert len(row_of) == n  # unique ids
    if checked and n:  # finite unit rows
        assert np.all(np.abs((vecs**2).sum(1) - 1) <= 1e-3)
    q = np.random.default_rng(n + d).standard_normal((3, d))
    try:
        scores, got = idx.search(q, n + 2)
    except IndexFormatError as e:
        assert not checked and str(path) in str(e), e
        return
    assert scores.shape == got.shape == (3, n) and np.isfinite(scores).all()
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    want = vecs @ qn.T
    scale = max(1.0, float(np.abs(vecs).max(initial=0)) * np.sqrt(d))
    for j in range(3):
        rows = [row_of[v] for v in got[j].tolist()]
        assert sorted(rows) == list(range(n))
        np.testing.assert_allclose(scores[j], want[rows, j], atol=2e-5 * scale)
        assert np.all(np.diff(scores[j]) <= 2e-5 * scale)


def fuzz_index_files(root: str, examples: int) -> None:
    from hypothesis import given

    from engine.errors import IndexFormatError
    from engine.index import Index
    from engine.index import format as fmt
    from tests.index_files import write_index_file

    st, values = _strategies()
    dtypes = st.sampled_from(["<f4", ">f4", "|i1", "<i8", "|u1", "|O", "<f8", "<U4", "|V8", "<i4", "f4", ""])
    field_names = [*fmt.FIELDS, "metric", "format_version", "sections", "extra"]
    mutation = st.one_of(
        st.tuples(
            st.just("field"),
            st.sampled_from(field_names),
            values | st.integers(0, 9) | st.sampled_from(["fp32", "int8", "int", "str", "cosine", None]),
        ),
        st.tuples(st.just("drop_field"), st.sampled_from(field_names)),
        st.tuples(
            st.just("entry"),
            st.integers(0, 5),
            st.sampled_from(["name", "dtype", "shape", "offset", "nbytes"]),
            values | dtypes | st.lists(st.integers(-2, 10**6), max_size=3) | st.integers(-64, 2000),
        ),
        st.tuples(st.just("table"), st.sampled_from(["drop", "dup", "swap", "reverse", "junk"]), st.integers(0, 5)),
        st.tuples(st.just("blob"), st.sampled_from(list(fmt.SECTIONS)), st.binary(max_size=80)),
        st.tuples(
            st.just("value"),
            st.integers(0, 400),
            st.sampled_from([np.nan, np.inf, -np.inf, 0.0, 1e-40, 2.0, -1.0, 1e30]),
        ),
        st.tuples(st.just("dup_id"), st.integers(0, 5), st.integers(0, 5)),
        st.tuples(st.just("resize"), st.integers(0, 7)),
        st.tuples(st.just("offset"), st.sampled_from(list(fmt.SECTIONS)), st.integers(-64, 3000)),
        st.tuples(st.just("tail"), st.binary(max_size=70)),
        st.tuples(st.just("cut"), st.integers(1, 200)),
        st.tuples(st.just("version"), st.binary(min_size=2, max_size=2)),
    )

    @_settings(examples)
    @given(
        dim=st.integers(1, 5),
        count=st.integers(0, 6),
        precision=st.sampled_from(["fp32", "int8"]),
        id_kind=st.sampled_from([None, "int", "str"]),
        seed=st.integers(0, 2**32 - 1),
        muts=st.lists(mutation, min_size=1, max_size=4),
        load=st.sampled_from([(True, True), (True, False), (False, True), (False, False)]),
    )
    def prop(dim, count, precision, id_kind, seed, muts, load):
        rng = np.random.default_rng(seed)
        folder = _scratch(root)
        try:
            path = folder / "f.eidx"
            idx = Index(dim, precision, model=None if seed % 3 else "m/fp32/x")
            if count:
                x = rng.standard_normal((count, dim))
                ids = {
                    None: None,
                    "int": rng.choice(2**40, count, replace=False) - 2**39,
                    "str": [f"id{i}-{seed % 7}" for i in range(count)],
                }[id_kind]
                idx.add(x, ids=ids)
            idx.save(path)
            raw = path.read_bytes()
            hlen = int.from_bytes(raw[8:16], "little")
            meta = json.loads(raw[48 : 48 + hlen])
            blobs = {e["name"]: raw[e["offset"] : e["offset"] + e["nbytes"]] for e in meta["sections"]}
            offsets, tail, cut, magic = {}, b"", 0, raw[:8]
            for m in muts:
                _mutate_index(m, meta, blobs, offsets, rng)
                if m[0] == "tail":
                    tail += m[1]
                elif m[0] == "cut":
                    cut += m[1]
                elif m[0] == "version":
                    magic = raw[:6] + m[1]
            write_index_file(path, meta, blobs, offsets=offsets, tail=tail, cut=cut)
            if magic != raw[:8]:
                path.write_bytes(magic + path.read_bytes()[8:])
            mmap, verify = load
            try:
                loaded = Index.load(path, mmap=mmap, verify=verify)
            except IndexFormatError as e:
                assert str(path) in str(e), e
                return
            raw = path.read_bytes()  # the sections as the (valid) header places them
            written = {e["name"]: raw[e["offset"] : e["offset"] + e["nbytes"]] for e in meta["sections"]}
            _oracle_index_search(meta, written, loaded, path, checked=verify or not mmap)
            if verify or not mmap:  # a checked index saves, loads and saves again to the same bytes
                loaded.save(folder / "a.eidx")
                Index.load(folder / "a.eidx").save(folder / "b.eidx")
                assert (folder / "a.eidx").read_bytes() == (folder / "b.eidx").read_bytes()
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    prop()


def _mutate_index(m, meta, blobs, offsets, rng) -> None:
    kind = m[0]
    table = meta.get("sections")
    entries = table if isinstance(table, list) else []
    if kind == "field":
        meta[m[1]] = m[2]
    elif kind == "drop_field":
        meta.pop(m[1], None)
    elif kind == "entry" and entries:
        e = entries[m[1] % len(entries)]
        if isinstance(e, dict):
            e[m[2]] = m[3]
    elif kind == "table" and entries:
        _list_op(entries, m[1], m[2], "vectors")
    elif kind == "blob":
        blobs[m[1]] = m[2]
    elif kind == "value" and blobs.get("vectors") and len(blobs["vectors"]) % 4 == 0:
        v = np.frombuffer(blobs["vectors"], "<f4").copy()
        v[m[1] % v.size] = m[2]
        blobs["vectors"] = v.tobytes()
    elif kind == "dup_id" and meta.get("id_kind") == "int" and len(blobs.get("ids", b"")) in range(16, 10**6, 8):
        ids = np.frombuffer(blobs["ids"], "<i8").copy()
        ids[m[1] % ids.size] = ids[m[2] % ids.size]
        blobs["ids"] = ids.tobytes()
    elif kind == "dup_id" and meta.get("id_kind") == "str" and len(blobs.get("ids_offsets", b"")) % 8 == 0:
        offs = np.frombuffer(blobs["ids_offsets"], "<i8").tolist()
        strs = [blobs.get("ids_utf8", b"")[a:b] for a, b in itertools.pairwise(offs)]
        if strs:
            strs[m[1] % len(strs)] = strs[m[2] % len(strs)]
            _put_strings(meta, blobs, strs)
    elif kind == "resize" and isinstance(meta.get("dim"), int) and 0 < meta["dim"] < 100:
        _resize(meta, blobs, entries, m[1], rng)
    elif kind == "offset":
        offsets[m[1]] = m[2]


def _list_op(items: list, op: str, i: int, junk) -> None:
    """drop / dup / swap (to the front) / reverse / junk (insert a non-object) at i % len."""
    i %= len(items)
    if op == "drop":
        items.pop(i)
    elif op == "dup":
        items.insert(i, json.loads(json.dumps(items[i])))
    elif op == "swap":
        items.insert(0, items.pop(i))
    elif op == "reverse":
        items.reverse()
    else:
        items.insert(i, junk)


def _resize(meta, blobs, entries, n: int, rng) -> None:
    """A consistent file of another count n: shapes, sizes, bytes, next_id."""
    d = meta["dim"]
    meta["count"] = n
    x = rng.standard_normal((n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    sizes = {
        "vectors": ((n, d), x.astype("<f4").tobytes()),
        "codes": ((n, d), rng.integers(-127, 128, (n, d)).astype("|i1").tobytes()),
        "ids": ((n,), rng.permutation(10 * n + 1)[:n].astype("<i8").tobytes()),
    }
    for e in entries:
        if isinstance(e, dict) and e.get("name") in sizes:
            shape, data = sizes[e["name"]]
            e.update(shape=list(shape), nbytes=len(data))
            blobs[e["name"]] = data
    if "ids_offsets" in blobs:
        _put_strings(meta, blobs, [f"s{i}".encode() for i in range(n)])
    if meta.get("id_kind") is None:
        meta["next_id"] = n
    elif meta.get("id_kind") == "int":
        meta["next_id"] = 10 * n + 1


def _put_strings(meta, blobs, strs: list[bytes]) -> None:
    offs = np.zeros(len(strs) + 1, "<i8")
    np.cumsum([len(s) for s in strs], out=offs[1:])
    blobs["ids_offsets"], blobs["ids_utf8"] = offs.tobytes(), b"".join(strs)
    for e in meta.get("sections") if isinstance(meta.get("sections"), list) else []:
        if isinstance(e, dict) and e.get("name") == "ids_offsets":
            e.update(shape=[len(strs) + 1], nbytes=8 * (len(strs) + 1))
        if isinstance(e, dict) and e.get("name") == "ids_utf8":
            e.update(shape=[int(offs[-1])], nbytes=int(offs[-1]))


# ----------------------------------------------------------------------------- corpus folders

PATHS = [
    "/dev/zero",
    "../other/shard-00000.npy",
    "shard-00001.npy",
    "shard-00000.jsonl",
    "",
    "OTHER",
    "shard-00000.npy",
    "shard-00000.jsonl",
    "/etc/hostname",
    "./shard-00000.npy",
]


def _file_strategy(st, values):
    header = st.fixed_dictionaries(
        {
            "descr": st.sampled_from(["<f4", ">f4", "<f8", "|O", "<i4", "|u1", "<c8"]),
            "fortran_order": st.booleans(),
            "shape": st.tuples()
            | st.tuples(st.integers(0, 10**12))
            | st.tuples(st.integers(0, 6), st.integers(0, 10))
            | st.tuples(st.integers(0, 10**12), st.just(8))
            | st.tuples(st.integers(0, 4), st.just(8), st.integers(0, 2)),
        }
    )
    return st.one_of(
        st.tuples(st.just("npy"), header, st.binary(max_size=300)),
        st.tuples(st.just("bytes"), st.binary(max_size=300)),
        st.tuples(st.just("truncate"), st.integers(1, 100)),
        st.tuples(st.just("append"), st.binary(min_size=1, max_size=40)),
        st.tuples(
            st.just("lines"),
            st.lists(
                values
                | st.fixed_dictionaries({"id": st.text(max_size=4) | values, "title": st.text(max_size=4) | values}),
                max_size=6,
            ),
        ),
        st.tuples(st.just("kind"), st.sampled_from(list(FILE_KINDS))),
    )


def _apply_file(op, p: Path, other: Path) -> None:
    kind = op[0]
    if kind in ("npy", "bytes", "lines", "kind") and (p.is_symlink() or p.exists()):
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    if kind == "npy":
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, op[1])
        p.write_bytes(buf.getvalue() + op[2])
    elif kind == "bytes":
        p.write_bytes(op[1])
    elif kind == "lines":
        p.write_bytes(b"".join(json.dumps(v).encode() + b"\n" for v in op[1]))
    elif kind in ("truncate", "append") and p.is_file() and not p.is_symlink():
        raw = p.read_bytes()
        p.write_bytes(raw[: -op[1]] if kind == "truncate" else raw + op[1])
    elif kind == "kind":
        FILE_KINDS[op[1]](p, other)


FILE_KINDS = {  # what stands where a file should be
    "fifo": lambda p, other: os.mkfifo(p),
    "folder": lambda p, other: p.mkdir(),
    "link-zero": lambda p, other: p.symlink_to("/dev/zero"),
    "link-other": lambda p, other: p.symlink_to(other / p.name),
    "link-in": lambda p, other: p.symlink_to(p.parent / "manifest.json"),
    "missing": lambda p, other: None,
}


def _sign(out: Path, records: list) -> None:
    """Make each record's checksums those of the engine-named files, where they are regular files."""
    from engine.corpus.shards import shard_stem

    for i, rec in enumerate(records):
        if not isinstance(rec, dict) or not isinstance(rec.get("sha256"), dict):
            continue
        for role, ext in (("vectors", "npy"), ("ids", "jsonl")):
            p = out / f"{shard_stem(i)}.{ext}"
            if p.is_file() and not p.is_symlink():
                rec["sha256"][role] = hashlib.sha256(p.read_bytes()).hexdigest()


def _corpus_base(folder: Path, shard_sizes: list[int], seed: int):
    from tests.corpus.test_shards import _unit, write_outdir

    c = [
        ([f"s{i}-{j}" for j in range(n)], [f"t{i}-{j}" for j in range(n)], _unit(n, seed + i))
        for i, n in enumerate(shard_sizes)
    ]
    out, other = folder / "out", folder / "other"
    write_outdir(other, c)
    write_outdir(out, c)
    return out, other


def fuzz_corpus_folders(root: str, examples: int) -> None:
    from hypothesis import given

    from engine.corpus.shards import iter_shards, load_index, shard_stem
    from engine.errors import IndexFormatError

    st, values = _strategies()
    path_values = st.sampled_from(PATHS) | values
    files = st.tuples(st.just("file"), st.integers(0, 3), st.sampled_from(["npy", "jsonl"]), _file_strategy(st, values))
    records = st.tuples(
        st.just("record"),
        st.integers(0, 3),
        st.sampled_from(["index", "count", "vectors", "ids", "sha256", "first_id"]),
        path_values | st.integers(0, 6),
    )
    mutation = st.one_of(  # weighted towards the shard files and records (a broken manifest is found early)
        files,
        files,
        files,
        records,
        records,
        st.tuples(
            st.just("field"),
            st.sampled_from(["format", "version", "status", "dim", "model", "truncate_dim", "shards", "count"]),
            values | st.integers(0, 9),
        ),
        st.tuples(st.just("model"), st.sampled_from(["fingerprint", "ref", "precision"]), values),
        st.tuples(st.just("records"), st.sampled_from(["drop", "dup", "swap", "junk"]), st.integers(0, 3)),
        st.tuples(st.just("manifest"), st.sampled_from(["fifo", "link-zero", "deep", "bytes"])),
    )

    @_settings(examples)
    @given(
        sizes=st.lists(st.integers(0, 4), min_size=1, max_size=3),
        seed=st.integers(0, 1000),
        muts=st.lists(mutation, min_size=1, max_size=3),
        sign=st.booleans(),
        verify=st.booleans(),
    )
    def prop(sizes, seed, muts, sign, verify):
        folder = _scratch(root)
        try:
            out, other = _corpus_base(folder, sizes, seed)
            m = json.loads((out / "manifest.json").read_text())
            raw_manifest = None
            for mut in muts:
                recs = m.get("shards") if isinstance(m.get("shards"), list) else []
                if mut[0] == "field":
                    m[mut[1]] = mut[2]
                elif mut[0] == "model" and isinstance(m.get("model"), dict):
                    m["model"][mut[1]] = mut[2]
                elif mut[0] == "record" and recs and isinstance(recs[mut[1] % len(recs)], dict):
                    v = str(other / "shard-00000.npy") if mut[3] == "OTHER" else mut[3]
                    recs[mut[1] % len(recs)][mut[2]] = v
                elif mut[0] == "records" and recs:
                    _list_op(recs, mut[1], mut[2], [0])
                elif mut[0] == "file":
                    _apply_file(mut[3], out / f"{shard_stem(mut[1])}.{mut[2]}", other)
                elif mut[0] == "manifest":
                    raw_manifest = mut[1]
            if sign:
                _sign(out, m.get("shards") if isinstance(m.get("shards"), list) else [])
            mp = out / "manifest.json"
            mp.unlink()
            if raw_manifest == "fifo":
                os.mkfifo(mp)
            elif raw_manifest == "link-zero":
                mp.symlink_to("/dev/zero")
            elif raw_manifest == "deep":
                mp.write_text("[" * 50_000 + "]" * 50_000)
            else:
                mp.write_text(json.dumps(m) if raw_manifest != "bytes" else json.dumps(m)[:-3])
            try:
                got = list(iter_shards(out, verify=verify))
            except IndexFormatError as e:
                assert str(out) in str(e), e
                return
            _oracle_corpus(out, m, got)
            try:
                index, titles, _ = load_index(out, verify=verify)
            except IndexFormatError as e:
                assert str(out) in str(e), e
                return
            _oracle_corpus_index(got, index, titles)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    prop()


def _oracle_corpus(out: Path, m: dict, got: list) -> None:
    """What iter_shards returned is what the engine-named regular files hold, as the manifest says."""
    from engine.corpus.shards import shard_stem

    assert len(got) == len(m["shards"])
    for i, (ids, titles, vectors) in enumerate(got):
        rec = m["shards"][i]
        assert rec["vectors"] == f"{shard_stem(i)}.npy" and rec["ids"] == f"{shard_stem(i)}.jsonl"
        npy, side = out / rec["vectors"], out / rec["ids"]
        assert npy.is_file() and not npy.is_symlink() and side.is_file() and not side.is_symlink()
        want = np.load(npy, allow_pickle=False)
        assert want.dtype == np.dtype("<f4") and want.shape == (rec["count"], m["dim"]) == vectors.shape
        np.testing.assert_array_equal(vectors, want)
        rows = [json.loads(line) for line in side.read_bytes().decode().split("\n") if line]
        assert ids == [r["id"] for r in rows] and titles == [r.get("title", "") for r in rows]


def _oracle_corpus_index(got: list, index, titles: dict) -> None:
    ids = [i for s in got for i in s[0]]
    assert len(index) == len(ids) == len(set(ids)) and titles == {i: t for s in got for i, t in zip(s[0], s[1])}
    if not ids:
        return
    vecs = np.concatenate([s[2] for s in got]).astype(np.float64)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    q = np.random.default_rng(len(ids)).standard_normal((2, vecs.shape[1]))
    scores, found = index.search(q, len(ids))
    want = vecs @ (q / np.linalg.norm(q, axis=1, keepdims=True)).T
    row = {v: r for r, v in enumerate(ids)}
    for j in range(2):
        np.testing.assert_allclose(scores[j], want[[row[v] for v in found[j]], j], atol=1e-5)
        assert sorted(found[j].tolist()) == sorted(ids)


# ----------------------------------------------------------------------------- done records


def fuzz_done_records(root: str, examples: int) -> None:
    from hypothesis import given

    from engine.corpus.shards import record_problem, shard_stem
    from tests.corpus.test_shards import DIM, _completed

    st, values = _strategies()
    mutation = st.one_of(
        st.tuples(
            st.just("field"),
            st.sampled_from(
                [
                    "index",
                    "count",
                    "vectors",
                    "ids",
                    "sha256",
                    "first_id",
                    "last_id",
                    "content_sha256",
                    "settings_sha256",
                ]
            ),
            st.sampled_from(PATHS) | values | st.integers(0, 6),
        ),
        st.tuples(st.just("raw"), st.sampled_from([b"[]", b"5", b"[" * 60_000, b"\xff", b"", b"null"])),
        st.tuples(st.just("kind"), st.sampled_from(["fifo", "link-zero", "link-other", "folder", "link-in"])),
        st.tuples(st.just("file"), st.sampled_from(["npy", "jsonl"]), _file_strategy(st, values)),
    )

    @_settings(examples)
    @given(
        sizes=st.lists(st.integers(0, 4), min_size=2, max_size=3),
        seed=st.integers(0, 1000),
        muts=st.lists(mutation, min_size=1, max_size=3),
        sign=st.booleans(),
    )
    def prop(sizes, seed, muts, sign):
        folder = _scratch(root)
        try:
            out, other = _corpus_base(folder, sizes, seed)
            done = out / f"{shard_stem(1)}.done.json"
            rec = json.loads(done.read_text())
            instead = None  # raw bytes, or a kind of file, in place of the record
            for mut in muts:
                if mut[0] == "field":
                    rec[mut[1]] = str(other / "shard-00001.npy") if mut[2] == "OTHER" else mut[2]
                elif mut[0] in ("raw", "kind"):
                    instead = mut[1]
                elif mut[0] == "file":
                    _apply_file(mut[2], out / f"{shard_stem(1)}.{mut[1]}", other)
            if sign:
                _sign(out, [None, rec])
            done.unlink()
            if isinstance(instead, str):
                FILE_KINDS[instead](done, other)
            else:
                done.write_bytes(json.dumps(rec).encode() if instead is None else instead)
            got = _completed(out, 1)
            if got is None:
                return
            assert record_problem(got, 1) is None
            for role, ext in (("vectors", "npy"), ("ids", "jsonl")):
                p = out / f"{shard_stem(1)}.{ext}"
                assert p.is_file() and not p.is_symlink()
                assert hashlib.sha256(p.read_bytes()).hexdigest() == got["sha256"][role]
            assert np.load(out / got["vectors"], allow_pickle=False).shape == (got["count"], DIM)
            assert (out / got["ids"]).read_bytes().count(b"\n") == got["count"]
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    prop()


# ----------------------------------------------------------------------------- model folder configs

# (file, keys the engine or sentence-transformers reads in it)
MODEL_CONFIGS = [
    ("modules.json", ()),
    (
        "sentence_bert_config.json",
        ("max_seq_length", "do_lower_case", "tokenizer_args", "model_args", "processor_kwargs", "transformer_task"),
    ),
    (
        "config_sentence_transformers.json",
        ("prompts", "default_prompt_name", "similarity_fn_name", "truncate_dim", "model_type"),
    ),
    (
        "1_Pooling/config.json",
        (
            "pooling_mode",
            "include_prompt",
            "embedding_dimension",
            "pooling_mode_cls_token",
            "pooling_mode_mean_tokens",
            "pooling_mode_max_tokens",
        ),
    ),
    ("2_Dense/config.json", ("in_features", "out_features", "bias", "activation_function", "module_input_name")),
]


def _st_view(model) -> dict:
    """What a loaded SentenceTransformer computes with, in the engine's terms (the oracle)."""
    from sentence_transformers.models import Dense, Normalize, Pooling

    pooling = next(m for m in model if isinstance(m, Pooling))
    modes = pooling.pooling_mode
    head = []
    for m in model:
        if isinstance(m, Dense):
            act = type(m.activation_function)
            head.append(
                (
                    "Dense",
                    m.linear.in_features,
                    m.linear.out_features,
                    m.linear.bias is not None,
                    f"{act.__module__}.{act.__name__}",
                )
            )
        elif isinstance(m, Normalize):
            head.append(("Normalize",))
    return {
        "modes": tuple([modes] if isinstance(modes, str) else modes),
        "include_prompt": pooling.include_prompt,
        "head": head,
        "max_seq_length": model.max_seq_length,
        "do_lower_case": model[0].do_lower_case,
        "prompts": dict(model.prompts),
        "default_prompt_name": model.default_prompt_name,
        "similarity_fn_name": model.similarity_fn_name or "cosine",
        "truncate_dim": model.truncate_dim,
    }


def _engine_view(folder: Path) -> dict:
    from engine.models.fetch import spec_from_folder
    from engine.models.stack import ACTIVATIONS, Dense, load_weights, read_stack

    spec = spec_from_folder(folder)
    stack = read_stack(folder, spec.hidden_size)
    load_weights(folder, stack)
    torch_name = {v: k for k, v in ACTIVATIONS.items()}
    head = [
        ("Dense", m.in_features, m.out_features, m.bias, torch_name[m.activation])
        if isinstance(m, Dense)
        else (type(m).__name__,)
        for m in stack.head
    ]
    return {
        "modes": stack.pooling.modes,
        "include_prompt": stack.pooling.include_prompt,
        "head": head,
        "max_seq_length": spec.max_seq_length or None,
        "do_lower_case": stack.do_lower_case,
        "prompts": stack.prompts,
        "default_prompt_name": stack.default_prompt_name,
        "similarity_fn_name": stack.similarity_fn_name,
        "truncate_dim": stack.truncate_dim,
    }


def _mutate_config(folder: Path, op) -> None:
    kind, i, *args = op
    name, keys = MODEL_CONFIGS[i]
    path = folder / name
    if kind == "raw":
        path.write_bytes(args[0])
        return
    try:  # an edit that no longer applies (an earlier one replaced the structure) is left out
        data = json.loads(path.read_text())
        if kind == "whole":
            data = args[0]
        elif kind == "modules":  # an entry's field, or the whole entry
            j, field, value = args[0] % len(data), args[1], args[2]
            if field is None:
                data[j] = value
            else:
                data[j][field] = value
        elif kind == "delete":
            data.pop(keys[args[0] % len(keys)], None)
        else:  # "set": a known key (or a new one) to a fuzzed value
            key = keys[args[0] % len(keys)] if args[0] < 100 else f"extra_{args[0]}"
            data[key] = args[1]
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, ZeroDivisionError, RecursionError):
        return
    path.write_text(json.dumps(data))


def fuzz_model_configs(root: str, examples: int) -> None:
    """Any edit of a model folder's configs: reading the folder either works and agrees with what
    sentence-transformers loads from it (pooling, head, max_seq_length, prompts, similarity,
    truncate_dim), or raises an EngineError (no other exception)."""
    import logging
    import warnings

    from hypothesis import given
    from sentence_transformers import SentenceTransformer

    from engine.errors import EngineError
    from tests.st_tiny import build_transformer, write_stack

    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")
    st, values = _strategies()
    base = build_transformer(Path(root) / "base", "bert")
    write_stack(base, dense=[(16, "torch.nn.modules.activation.GELU", True)], prompts={"query": "q: "})
    config = st.integers(0, len(MODEL_CONFIGS) - 1)
    keyed = st.integers(1, len(MODEL_CONFIGS) - 1)  # the files with keys (modules.json: "modules" edits)
    interesting = st.sampled_from(
        [
            -5,
            0,
            1,
            5,
            16,
            24,
            32,
            10**9,
            1e9,
            "abc",
            "mean",
            ["mean", "cls"],
            "query",
            "torch.nn.modules.activation.ReLU",
            "dot",
            {"query": 1},
            [1, 2],
            None,
            True,
        ]
    )
    value = interesting | values
    mutation = st.one_of(
        st.tuples(st.just("set"), keyed, st.integers(0, 105), value),
        st.tuples(st.just("delete"), keyed, st.integers(0, 9)),
        st.tuples(st.just("whole"), config, values),
        st.tuples(
            st.just("modules"),
            st.just(0),
            st.integers(0, 3),
            st.sampled_from(["idx", "path", "type", None]),
            st.sampled_from(
                ["", ".", "2_Dense", "../x", "/tmp", "1_Pooling", 0, 7, "sentence_transformers.models.Normalize"]
            )
            | values,
        ),
        st.tuples(st.just("raw"), config, st.sampled_from([b"", b"{", b"[" * 60_000, b"\xff", b"1" * 5000, b"null"])),
    )

    @_settings(examples)
    @given(muts=st.lists(mutation, min_size=1, max_size=3))
    def prop(muts):
        folder = _scratch(root) / "model"
        shutil.copytree(base, folder)
        try:
            for op in muts:
                _mutate_config(folder, op)
            try:
                ours = _engine_view(folder)
            except EngineError:
                return
            theirs = _st_view(SentenceTransformer(str(folder), device="cpu"))
            assert ours == theirs, (muts, ours, theirs)
        finally:
            shutil.rmtree(folder.parent, ignore_errors=True)

    prop()
