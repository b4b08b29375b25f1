"""The output folder of ``embed encode``: shards, per-shard done records, the manifest, resume.

Layout of OUTDIR::

    manifest.json            settings, model, inputs, and (when complete) every shard's record
    shard-00000.npy          float32 (n, dim) vectors, rows in input order (numpy .npy)
    shard-00000.jsonl        one line per row: {"id": "...", "title": "..."} (title, or the
                             first SNIPPET characters of the text when there is no title)
    shard-00000.done.json    the shard's commit record: counts, sha256 of both files, a digest
                             of its documents (ids, titles, text hashes) and of the settings
    rejects.jsonl            only with skip_bad: one line per skipped record (where, why)

Shard i holds documents [i*S, (i+1)*S) of the input stream (after bad records are skipped), so
a rerun knows each shard's documents before embedding them. Each file is written to a temporary
name, fsynced and renamed into place; the done record is written last, so a shard counts as
complete only when its record exists, its settings and document digest match the current run,
and both files match their checksums. Anything else is redone. ``manifest.json`` is written at
the start with ``"status": "in_progress"`` and rewritten with ``"complete"`` and the shard list at
the end. A lock file keeps two runs from writing into one folder at the same time.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from ..errors import IndexFormatError, InputError, ModelMismatchError

FORMAT = "embed-engine-corpus"
VERSION = 1
MANIFEST = "manifest.json"
REJECTS = "rejects.jsonl"
LOCK = ".lock"
TMP_PREFIX = ".tmp-"
SNIPPET = 100
_SHARD_FILE = re.compile(r"^shard-(\d+)\.(npy|jsonl|done\.json)$")
_SCRATCH = re.compile(r"^(\.lock|\.tmp-.*|\.ids\.sqlite.*|rejects\.jsonl\.partial)$")


def shard_stem(i: int) -> str:
    return f"shard-{i:05d}"


def settings_digest(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def atomic_write(path: Path, data: bytes, sync_dir: bool = True) -> None:
    """Write data to path so that a crash leaves the old file or the new one, never a mix.

    sync_dir=False skips the folder fsync (the rename's durability) when a later write syncs it.
    """
    fd, tmp = _mkstemp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if sync_dir:
        _fsync_dir(path.parent)


def _mkstemp(path: Path) -> tuple[int, str]:
    import tempfile

    return tempfile.mkstemp(prefix=f"{TMP_PREFIX}{path.name}.", dir=path.parent)


def _fsync_dir(folder: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256_file(path: Path) -> str | None:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while block := f.read(1 << 22):
                h.update(block)
    except FileNotFoundError:
        return None
    return h.hexdigest()


def _npy_bytes(vectors: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(vectors, dtype="<f4"), allow_pickle=False)
    return buf.getvalue()


def snippet(title: str, text: str) -> str:
    """What the sidecar stores to show a hit: the title, else the text's first SNIPPET characters."""
    if title:
        return title
    return " ".join(text[: SNIPPET * 2].split())[:SNIPPET]


class OutputDir:
    """An OUTDIR being written by one run (holds its lock until ``close``)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise InputError(f"output {self.path} exists and is not a folder; choose a folder path for -o/--out")
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = self._take_lock()
        for p in self.path.glob(f"{TMP_PREFIX}*"):  # leftovers of a killed run
            with contextlib.suppress(OSError):
                p.unlink()

    def _take_lock(self):
        f = open(self.path / LOCK, "a+")
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            return f
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            raise InputError(f"another 'embed encode' is writing to {self.path}; wait for it to finish "
                             "or choose another output folder") from None
        return f

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None

    def __enter__(self) -> OutputDir:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- settings -----------------------------------------------------------------------
    def check_settings(self, settings: dict, overwrite: bool) -> None:
        """Refuse (or with overwrite, clear) an OUTDIR written with other settings or by something else."""
        manifest = self.path / MANIFEST
        if manifest.exists():
            try:
                old = json.loads(manifest.read_text(encoding="utf-8"))
                old_settings = old["settings"] if old.get("format") == FORMAT else None
            except (ValueError, KeyError, TypeError):
                old_settings = None
            if old_settings is None and not overwrite:
                raise InputError(f"{manifest} is not an embed encode manifest (or is damaged); choose another "
                                 "output folder, or pass --overwrite (overwrite=True) to replace its contents")
            if old_settings is not None and old_settings != settings and not overwrite:
                diff = [f"{k}: {old_settings.get(k)!r} then, {settings.get(k)!r} now"
                        for k in sorted(set(settings) | set(old_settings)) if old_settings.get(k) != settings.get(k)]
                cls = ModelMismatchError if old_settings.get("model") != settings.get("model") else InputError
                raise cls(f"{self.path} holds output written with other settings ({'; '.join(diff)}). Rerun with "
                          "the original settings to resume, choose another output folder, or pass --overwrite "
                          "(overwrite=True) to delete it and start again")
            if overwrite:
                self.clear()
        else:
            foreign = [p.name for p in self.path.iterdir() if not _SCRATCH.match(p.name)]
            if foreign and not overwrite:
                raise InputError(f"{self.path} is not empty and has no {MANIFEST} ({', '.join(sorted(foreign)[:5])}"
                                 f"{', ...' if len(foreign) > 5 else ''}); choose a new or empty output folder, "
                                 "or pass --overwrite (overwrite=True) to delete the shards and start again")
            if overwrite:
                self.clear()

    def clear(self) -> None:
        """Delete what encode writes here (shards, records, manifest, rejects); nothing else."""
        for p in self.path.iterdir():
            if _SHARD_FILE.match(p.name) or p.name in (MANIFEST, REJECTS):
                p.unlink()

    # -- manifest -----------------------------------------------------------------------
    def write_manifest(self, manifest: dict) -> None:
        atomic_write(self.path / MANIFEST, (json.dumps(manifest, indent=1, ensure_ascii=False) + "\n").encode())

    # -- shards -------------------------------------------------------------------------
    def completed(self, i: int, content: str, settings_sha: str) -> dict | None:
        """Shard i's done record if the shard is complete for these documents and settings, else None."""
        try:
            rec = json.loads((self.path / f"{shard_stem(i)}.done.json").read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return None
        if rec.get("settings_sha256") != settings_sha or rec.get("content_sha256") != content:
            return None
        sums = rec.get("sha256", {})
        for role in ("vectors", "ids"):
            if _sha256_file(self.path / rec[role]) != sums.get(role):
                return None
        return rec

    def write_shard(self, i: int, vectors: np.ndarray, ids: Sequence[str], titles: Sequence[str],
                    content: str, settings_sha: str) -> dict:
        """Write shard i (vectors, sidecar, then its done record), each atomically; return the record."""
        stem = shard_stem(i)
        done = self.path / f"{stem}.done.json"
        with contextlib.suppress(FileNotFoundError):
            done.unlink()  # the old record must not vouch for the files being replaced
        npy = _npy_bytes(vectors)
        side = "".join(json.dumps({"id": d, "title": t}, ensure_ascii=False) + "\n" for d, t in zip(ids, titles))
        side_b = side.encode("utf-8")
        # the folder is synced once, with the done record: after a power loss a record that
        # outlived its files' renames fails the checksum test and the shard is redone
        atomic_write(self.path / f"{stem}.npy", npy, sync_dir=False)
        atomic_write(self.path / f"{stem}.jsonl", side_b, sync_dir=False)
        rec = {
            "index": i,
            "count": len(ids),
            "vectors": f"{stem}.npy",
            "ids": f"{stem}.jsonl",
            "sha256": {"vectors": hashlib.sha256(npy).hexdigest(), "ids": hashlib.sha256(side_b).hexdigest()},
            "first_id": ids[0] if len(ids) else None,
            "last_id": ids[-1] if len(ids) else None,
            "content_sha256": content,
            "settings_sha256": settings_sha,
        }
        atomic_write(done, (json.dumps(rec, ensure_ascii=False) + "\n").encode())
        return rec

    def remove_shards_from(self, n: int) -> None:
        """Delete shards numbered n and above (left by an earlier run over a longer corpus)."""
        for p in self.path.iterdir():
            m = _SHARD_FILE.match(p.name)
            if m and int(m.group(1)) >= n:
                p.unlink()


# -- reading the output -------------------------------------------------------------------
def read_manifest(out_dir: str | os.PathLike) -> dict:
    """The manifest of a complete OUTDIR; an error says what to do when it is absent or unfinished."""
    path = Path(out_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"no {MANIFEST} in {out_dir}; create it with: embed encode INPUT -o {out_dir}") from None
    except ValueError as e:
        raise IndexFormatError(f"{path} is not valid JSON ({e}); rerun embed encode into a new folder") from None
    if manifest.get("format") != FORMAT:
        raise IndexFormatError(f"{path} is not an embed encode manifest")
    if manifest.get("version", 0) > VERSION:
        raise IndexFormatError(f"{path} has format version {manifest.get('version')}; this engine reads "
                               f"up to {VERSION}. Upgrade embed-engine")
    if manifest.get("status") != "complete":
        raise IndexFormatError(f"{out_dir} is incomplete (an encode run stopped before the end); rerun the same "
                               "embed encode command to resume and finish it")
    return manifest


def iter_shards(out_dir: str | os.PathLike, verify: bool = True) -> Iterator[tuple[list[str], list[str], np.ndarray]]:
    """(ids, titles, vectors) per shard of a complete OUTDIR, in order; verify checks the sha256s."""
    out_dir = Path(out_dir)
    manifest = read_manifest(out_dir)
    dim = manifest["dim"]
    for rec in manifest["shards"]:
        vec_path, side_path = out_dir / rec["vectors"], out_dir / rec["ids"]
        try:
            raw_v, raw_s = vec_path.read_bytes(), side_path.read_bytes()
        except FileNotFoundError as e:
            raise IndexFormatError(f"{e.filename} is missing; rerun embed encode to rebuild it") from None
        if verify:
            for raw, role, p in ((raw_v, "vectors", vec_path), (raw_s, "ids", side_path)):
                if hashlib.sha256(raw).hexdigest() != rec["sha256"][role]:
                    raise IndexFormatError(f"{p} does not match its checksum in the manifest (damaged or "
                                           "edited); rerun the same embed encode command to rewrite it")
        vectors = np.load(io.BytesIO(raw_v), allow_pickle=False)
        # split on "\n" only: str.splitlines would also split inside ids holding U+2028
        rows = [json.loads(line) for line in raw_s.decode("utf-8").split("\n") if line]
        if vectors.shape != (rec["count"], dim) or len(rows) != rec["count"]:
            raise IndexFormatError(f"shard {rec['vectors']} has {vectors.shape} vectors and {len(rows)} ids, the "
                                   f"manifest says ({rec['count']}, {dim}); rerun embed encode to rewrite it")
        yield [r["id"] for r in rows], [r.get("title", "") for r in rows], vectors


def load_index(out_dir: str | os.PathLike, precision: str = "fp32", verify: bool = True):
    """Load a complete OUTDIR into an ``Index``: (index, titles by id, manifest).

    The index's model is the manifest's fingerprint, so searching it with another model's
    vectors raises ModelMismatchError.
    """
    from ..index.index import Index

    manifest = read_manifest(out_dir)
    index = Index(manifest["dim"], precision=precision, model=manifest["model"]["fingerprint"])
    titles: dict[str, str] = {}
    for ids, tits, vectors in iter_shards(out_dir, verify=verify):
        if len(ids):
            index.add(vectors, ids=ids, model=manifest["model"]["fingerprint"])
            titles.update(zip(ids, tits))
    return index, titles, manifest


class CorpusSearcher:
    """Search an ``embed encode`` output: loads its shards into an ``Index`` and embeds queries
    with the manifest's model (or ``model``), refusing a model whose fingerprint differs.

    >>> s = CorpusSearcher("out/")
    >>> s.search(["what causes ..."], k=5)[0][0]   # (id, score, title) of the best hit
    """

    def __init__(self, out_dir: str | os.PathLike, model=None, precision: str = "fp32", *, device: str = "cpu",
                 threads: int | None = None, verify: bool = True, cache_dir: str | os.PathLike | None = None):
        from ..embedder import Embedder

        manifest = read_manifest(out_dir)
        want = manifest["model"]["fingerprint"]
        if isinstance(model, Embedder):
            self.embedder = model
        else:
            ref = model if model is not None else manifest["model"]["ref"]
            self.embedder = Embedder(ref, device=device, precision=manifest["model"]["precision"],
                                     threads=threads, cache_dir=cache_dir)
        if self.embedder.fingerprint != want:
            raise ModelMismatchError(
                f"{out_dir} was embedded with {want}, but the query model is {self.embedder.fingerprint}. "
                f"Use the same model (--model {manifest['model']['ref']}) and precision "
                f"({manifest['model']['precision']}), or re-encode the corpus with this one")
        self.index, self.titles, self.manifest = load_index(out_dir, precision=precision, verify=verify)
        self.truncate_dim = manifest.get("truncate_dim")

    def search(self, queries: str | Sequence[str], k: int = 10) -> list[list[tuple[str, float, str]]]:
        """For each query, up to k hits (id, cosine score, title or snippet), best first."""
        queries = [queries] if isinstance(queries, str) else list(queries)
        if not queries:
            return []
        q = self.embedder.encode(queries, truncate_dim=self.truncate_dim)
        scores, ids = self.index.search(q, k, model=self.embedder.fingerprint)
        return [[(str(i), float(s), self.titles.get(str(i), "")) for s, i in zip(rs, ri)] for rs, ri in zip(scores, ids)]
