"""The output folder of ``embed encode``: shards, per-shard done records, the manifest, resume.

Layout of OUTDIR with ``output_format="npy"`` (the default)::

    manifest.json            settings, model, output_format, inputs, and (when complete) every
                             shard's record
    shard-00000.npy          float32 (n, dim) vectors, rows in input order (numpy .npy)
    shard-00000.jsonl        one line per row: {"id": "...", "title": "..."} (title, or the
                             first SNIPPET characters of the text when there is no title)
    shard-00000.done.json    the shard's commit record: counts, sha256 of its files, a digest
                             of its documents (ids, titles, text hashes) and of the settings
    rejects.jsonl            only with skip_bad: one line per skipped record (where, why)

With ``output_format="parquet"`` (pyarrow, the ``corpus`` extra) a shard is one ``shard-00000.parquet``
(columns ``id``, ``title``: strings, ``embedding``: ``fixed_size_list<float32>[dim]``) beside the
same done records and manifest; only a shard's files differ (``shard_files``: role -> name).

Shard i holds documents [i*S, (i+1)*S) of the input stream (bad records skipped). Each file is
written to a temporary name, fsynced and renamed into place, the done record last: a shard is
complete only when its record exists, its settings and document digest match the run's and its
files their checksums; anything else is redone. ``manifest.json`` says ``"in_progress"`` until the
end of the run (``"complete"``, with every shard's record); a lock file keeps two runs out of one
folder. Reading trusts nothing in the folder (``iter_shards`` lists the checks): every problem is
an IndexFormatError naming the file, and on resume a record or shard failing them is redone.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import logging
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO, cast

import numpy as np

from ..arguments import is_int
from ..errors import IndexFormatError, InputError, ModelMismatchError
from ..files import open_regular, read_regular, replace_atomically, temp_file

log = logging.getLogger(__name__)

FORMAT = "embed-engine-corpus"
VERSION = 1
MANIFEST = "manifest.json"
REJECTS = "rejects.jsonl"
LOCK = ".lock"
TMP_PREFIX = ".tmp-"
SNIPPET = 100
_SHARD_FILE = re.compile(r"^shard-(\d+)\.(npy|jsonl|parquet|done\.json)$")
_SCRATCH = re.compile(r"^(\.lock|\.tmp-.*|\.ids\.sqlite.*|rejects\.jsonl\.partial)$")
_SHA256 = re.compile(r"[0-9a-f]{64}")
MANIFEST_LIMIT = 1 << 30  # bytes; a manifest lists every shard (~400 bytes each)
DONE_LIMIT = 16 << 20  # bytes of a done record (its first/last ids are the only free text)
SHARD_LIMIT = 1 << 36  # bytes of one shard file read whole on resume (64 GiB: no limit in practice)
NPY_HEADER_LIMIT = 10_000  # bytes of a .npy header (numpy's own limit; the engine's are 128)
REWRITE = "Rerun the same embed encode command to rewrite it, or encode into a new folder"
# a shard's files in each output format: (role in its done record, suffix)
OUTPUT_FORMATS = {"npy": (("vectors", "npy"), ("ids", "jsonl")), "parquet": (("table", "parquet"),)}
DEFAULT_OUTPUT_FORMAT = "npy"  # absent from the settings (and from manifests written before parquet)


def json_bytes(obj: Any, **kw) -> bytes:
    """``json.dumps(obj, ensure_ascii=False)`` as UTF-8, with lone surrogates written as ``\\uXXXX``.

    A file name that is not valid UTF-8 reaches Python as a str with lone surrogates (PEP 383);
    UTF-8 cannot hold them, so they are written as JSON escapes, which ``json.loads`` reads back
    to the same str (a backslash in the text is itself escaped, so no escape is ever ambiguous).
    """
    return json.dumps(obj, ensure_ascii=False, **kw).encode("utf-8", "backslashreplace")


def shard_stem(i: int) -> str:
    return f"shard-{i:05d}"


def shard_files(i: int, output_format: str = DEFAULT_OUTPUT_FORMAT) -> dict[str, str]:
    """The names of shard i's files in OUTDIR, by role: the only shard paths the engine opens."""
    return {role: f"{shard_stem(i)}.{suffix}" for role, suffix in OUTPUT_FORMATS[output_format]}


def output_format_of(manifest_or_settings: dict) -> str:
    return manifest_or_settings.get("output_format", DEFAULT_OUTPUT_FORMAT)


def check_output_format(output_format: Any) -> str:
    """output_format itself if it is one the engine writes and can write here; InputError if not
    (for "parquet" without pyarrow: the install command)."""
    if output_format not in OUTPUT_FORMATS:
        raise InputError(f"output_format must be one of {', '.join(map(repr, OUTPUT_FORMATS))}, got {output_format!r}")
    if output_format == "parquet":
        _pyarrow()
    return output_format


def _pyarrow():
    """(pyarrow, pyarrow.parquet), or InputError with the install command."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError(
            "Parquet output needs pyarrow, which comes with the 'corpus' extra: "
            "pip install 'embed-engine[corpus]' (or: pip install pyarrow); "
            "or write .npy shards (output_format='npy', --output-format npy)"
        ) from None
    return pa, pq


def parquet_schema(dim: int):
    """The schema of a Parquet shard: id, title (strings) and embedding (fixed_size_list<float32>[dim])."""
    pa, _ = _pyarrow()
    return pa.schema([("id", pa.string()), ("title", pa.string()), ("embedding", pa.list_(pa.float32(), dim))])


def settings_digest(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def atomic_write(path: Path, data: bytes, sync_dir: bool = True) -> None:
    """Write data to path so that a crash leaves the old file or the new one, never a mix; the
    file's mode follows the umask. OutputError (an OSError) naming path if writing fails.

    sync_dir=False skips the folder fsync (the rename's durability) when a later write syncs it.
    """
    replace_atomically(path, [data], prefix=f"{TMP_PREFIX}{path.name}.", sync_dir=sync_dir)


def _mkstemp(path: Path) -> tuple[int, str]:
    """A temporary file beside path, named as ``atomic_write`` names them: (fd, name)."""
    return temp_file(path.parent, f"{TMP_PREFIX}{path.name}.")


def _npy_bytes(vectors: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(vectors, dtype="<f4"), allow_pickle=False)
    return buf.getvalue()


def _parquet_bytes(vectors: np.ndarray, ids: Sequence[str], titles: Sequence[str]) -> bytes:
    """One Parquet file (one row group, no dictionary encoding: ids and vectors do not repeat)."""
    pa, pq = _pyarrow()
    vectors = np.ascontiguousarray(vectors, dtype="<f4")
    embedding = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])
    table = pa.Table.from_arrays(
        [pa.array(ids, pa.string()), pa.array(titles, pa.string()), embedding], schema=parquet_schema(vectors.shape[1])
    )
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, use_dictionary=False, row_group_size=max(len(ids), 1))
    return sink.getvalue().to_pybytes()


def _payload(output_format: str, vectors: np.ndarray, ids: Sequence[str], titles: Sequence[str]) -> dict[str, bytes]:
    """A shard's files' bytes by role (``OUTPUT_FORMATS``): all that differs between the formats on writing."""
    if output_format == "parquet":
        return {"table": _parquet_bytes(vectors, ids, titles)}
    side = b"".join(json_bytes({"id": d, "title": t}) + b"\n" for d, t in zip(ids, titles))
    return {"vectors": _npy_bytes(vectors), "ids": side}


def snippet(title: str, text: str) -> str:
    """What the sidecar stores to show a hit: the title, else the text's first SNIPPET characters."""
    if title:
        return title
    return " ".join(text[: SNIPPET * 2].split())[:SNIPPET]


class OutputDir:
    """An OUTDIR being written by one run (holds its lock until ``close``).

    Files are written through :func:`engine.files.replace_atomically`, so their mode follows the umask.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise InputError(f"output {self.path} exists and is not a folder; choose a folder path for -o/--out")
        self.path.mkdir(parents=True, exist_ok=True)
        self._dim: int | None = None  # the run's dim and output format, from check_settings
        self._format = DEFAULT_OUTPUT_FORMAT
        self._lock = self._take_lock()
        for p in self.path.glob(f"{TMP_PREFIX}*"):  # leftovers of a killed run
            with contextlib.suppress(OSError):
                p.unlink()

    def _take_lock(self):
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        try:  # never through a link: the lock file is created, and would be wherever one points
            f = os.fdopen(os.open(self.path / LOCK, flags, 0o666), "a+")
        except OSError as e:
            if e.errno != errno.ELOOP:
                raise
            raise InputError(f"{self.path / LOCK} is a symbolic link; delete it (embed encode makes it)") from None
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            return f
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            raise InputError(
                f"another 'embed encode' is writing to {self.path}; wait for it to finish "
                "or choose another output folder"
            ) from None
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
        self._dim = settings.get("dim")  # what completed() checks shard files against
        self._format = check_output_format(output_format_of(settings))
        manifest = self.path / MANIFEST
        if manifest.is_symlink() or manifest.exists():
            try:
                old = _load_json(manifest, MANIFEST_LIMIT)
                old_settings = old.get("settings") if isinstance(old, dict) and old.get("format") == FORMAT else None
            except (IndexFormatError, FileNotFoundError):
                old_settings = None
            if not isinstance(old_settings, dict):
                old_settings = None
            if old_settings is None and not overwrite:
                raise InputError(
                    f"{manifest} is not an embed encode manifest (or is damaged); choose another "
                    "output folder, or pass --overwrite (overwrite=True) to replace its contents"
                )
            if old_settings is not None and old_settings != settings and not overwrite and not self._has_shards():
                # a run that failed before writing any shard (a wrong column name, say) pins nothing
                log.info("%s: replacing the manifest of an earlier run that wrote no shard", self.path)
                overwrite = True
            if old_settings is not None and old_settings != settings and not overwrite:
                was, now = _with_defaults(old_settings), _with_defaults(settings)
                diff = [
                    f"{k}: {was.get(k)!r} then, {now.get(k)!r} now"
                    for k in sorted(set(now) | set(was))
                    if was.get(k) != now.get(k)
                ]
                cls = ModelMismatchError if old_settings.get("model") != settings.get("model") else InputError
                raise cls(
                    f"{self.path} holds output written with other settings ({'; '.join(diff)}). Rerun with "
                    "the original settings to resume, choose another output folder, or pass --overwrite "
                    "(overwrite=True) to delete it and start again"
                )
            if overwrite:
                self.clear()
        else:
            foreign = [p.name for p in self.path.iterdir() if not _SCRATCH.match(p.name)]
            if foreign and not overwrite:
                raise InputError(
                    f"{self.path} is not empty and has no {MANIFEST} ({', '.join(sorted(foreign)[:5])}"
                    f"{', ...' if len(foreign) > 5 else ''}); choose a new or empty output folder, "
                    "or pass --overwrite (overwrite=True) to delete the shards and start again"
                )
            if overwrite:
                self.clear()

    def _has_shards(self) -> bool:
        return any(_SHARD_FILE.match(p.name) for p in self.path.iterdir())

    def clear(self) -> None:
        """Delete what encode writes here (shards, records, manifest, rejects); nothing else."""
        for p in self.path.iterdir():
            if _SHARD_FILE.match(p.name) or p.name in (MANIFEST, REJECTS):
                p.unlink()

    # -- manifest -----------------------------------------------------------------------
    def write_manifest(self, manifest: dict) -> None:
        atomic_write(self.path / MANIFEST, json_bytes(manifest, indent=1) + b"\n")

    # -- shards -------------------------------------------------------------------------
    def completed(self, i: int, content: str, settings_sha: str) -> dict | None:
        """Shard i's done record if the shard is complete for these documents and settings, else None.

        Nothing the record says is trusted: it must name the engine's files for shard i, which
        must be regular files whose checksums match it: the .npy of shape (count, dim) float32
        and the .jsonl of count lines, or the .parquet of the engine's schema and count rows. A
        record or file that fails is reported (a warning) and the shard redone; one from other
        documents or settings is redone silently.
        """
        return shard_completed(self._folder(), i, content, settings_sha, self._format, self._dim)

    def _folder(self):
        from .storage import Folder

        return Folder(self.path)

    def write_shard(
        self, i: int, vectors: np.ndarray, ids: Sequence[str], titles: Sequence[str], content: str, settings_sha: str
    ) -> dict:
        """Write shard i (its files in the output format, then its done record), each atomically;
        return the record."""
        return write_shard(self._folder(), i, self._format, vectors, ids, titles, content, settings_sha)

    def remove_shards_from(self, n: int) -> None:
        """Delete shards numbered n and above (left by an earlier run over a longer corpus)."""
        for p in self.path.iterdir():
            m = _SHARD_FILE.match(p.name)
            if m and int(m.group(1)) >= n:
                p.unlink()


def _with_defaults(settings: dict) -> dict:
    """settings with the values that are left out when they are the default (for messages)."""
    return {"output_format": DEFAULT_OUTPUT_FORMAT, **settings}


def done_name(i: int) -> str:
    return f"{shard_stem(i)}.done.json"


def write_shard(
    folder,
    i: int,
    output_format: str,
    vectors: np.ndarray,
    ids: Sequence[str],
    titles: Sequence[str],
    content: str,
    settings_sha: str,
) -> dict:
    """Write shard i into folder (an ``engine.corpus.storage.Folder``: local or object storage): its
    files in output_format, then its done record, each whole (atomically); return the record.

    The one writer of shards: ``OutputDir.write_shard`` (the driver) and the distributed path's
    workers (``engine.corpus.distributed``) call it.
    """
    folder.delete(done_name(i))  # the old record must not vouch for the files being replaced
    names, payload = shard_files(i, output_format), _payload(output_format, vectors, ids, titles)
    # a local folder is synced once, with the done record: after a power loss a record that
    # outlived its files' renames fails the checksum test and the shard is redone
    for role, data in payload.items():
        folder.write(names[role], data, sync_dir=False)
    rec = {
        "index": i,
        "count": len(ids),
        **names,
        "sha256": {role: hashlib.sha256(data).hexdigest() for role, data in payload.items()},
        "first_id": ids[0] if len(ids) else None,
        "last_id": ids[-1] if len(ids) else None,
        "content_sha256": content,
        "settings_sha256": settings_sha,
    }
    folder.write(done_name(i), json_bytes(rec) + b"\n")
    return rec


def shard_completed(
    folder, i: int, content: str, settings_sha: str, output_format: str, dim: int | None
) -> dict | None:
    """Shard i's done record if the shard in folder (a ``storage.Folder``) is complete for these
    documents and settings, else None (``OutputDir.completed``, which the distributed path's
    workers share).

    Nothing the record says is trusted: it must name the engine's files for shard i, which must
    be regular files whose checksums match it: the .npy of shape (count, dim) float32 and the
    .jsonl of count lines, or the .parquet of the engine's schema and count rows (each checked
    before it is parsed). A record or file that fails is reported (a warning) and the shard
    redone; one from other documents or settings is redone silently.
    """
    try:
        name = done_name(i)
        rec = _parse_json(folder.read(name, DONE_LIMIT, REWRITE), folder.name(name))
        if why := record_problem(rec, i, output_format):
            raise IndexFormatError(f"{folder.name(name)}: {why}")
        if rec.get("settings_sha256") != settings_sha or rec.get("content_sha256") != content:
            return None
        for role, name in shard_files(i, output_format).items():
            data = folder.read(name, SHARD_LIMIT, REWRITE)
            if not _check_file(
                role, io.BytesIO(data), Path(folder.name(name)), len(data), rec["count"], dim, rec["sha256"][role]
            ):
                return None
    except FileNotFoundError:
        return None
    except IndexFormatError as e:
        log.warning("not resuming shard %d: %s; embedding it again", i, e)
        return None
    return rec


# -- reading the output -------------------------------------------------------------------
def _load_json(path: Path, limit: int) -> Any:
    """A JSON file of OUTDIR: a regular file (not a link) of at most limit bytes, UTF-8, not
    nested too deeply. FileNotFoundError passes; anything else is an IndexFormatError."""
    return _parse_json(read_regular(path, limit, REWRITE, follow_symlinks=False), path)


def _parse_json(raw: bytes, path) -> Any:
    """JSON bytes of the file named path (for messages); IndexFormatError if they are not JSON."""
    try:
        return json.loads(raw.decode("utf-8"))
    except RecursionError:
        raise IndexFormatError(f"{path} is nested too deeply to be the engine's JSON. {REWRITE}") from None
    except ValueError as e:  # UnicodeDecodeError is one
        raise IndexFormatError(f"{path} is not valid JSON ({e}). {REWRITE}") from None


def record_problem(rec: Any, i: int, output_format: str = DEFAULT_OUTPUT_FORMAT) -> str | None:
    """What is wrong with shard i's record (from the manifest or its done file), or None.

    The file names must be the ones the engine gives shard i in output_format, so no other path
    is ever opened.
    """
    if not isinstance(rec, dict):
        return f"shard record {i} is not an object"
    if not is_int(rec.get("index")) or rec["index"] != i:
        return f"shard record {i} has index {rec.get('index')!r}"
    if not is_int(rec.get("count")) or rec["count"] < 0:
        return f"shard record {i} has count {rec.get('count')!r}"
    files = shard_files(i, output_format)
    for role, name in files.items():
        if rec.get(role) != name:
            return f"shard record {i} names {role} file {rec.get(role)!r}, the engine's is {name!r}"
    sums = rec.get("sha256")
    if not isinstance(sums, dict) or not all(
        isinstance(sums.get(r), str) and _SHA256.fullmatch(sums[r]) for r in files
    ):
        return f"shard record {i} has no valid sha256 for its files"
    if not all(rec.get(k) is None or isinstance(rec[k], str) for k in ("first_id", "last_id")):
        return f"shard record {i} has first_id/last_id that are not strings"
    return None


def _check_manifest(path: Path, m: dict) -> None:
    """The fields of a complete manifest that readers use: dim, model, truncate_dim, normalize,
    similarity_fn_name, prompts, output_format (those four absent from manifests written before)
    and shards."""

    def bad(why: str) -> IndexFormatError:
        return IndexFormatError(f"{path}: {why}. {REWRITE}")

    dim: Any = m.get("dim")  # a JSON value, checked next
    if not is_int(dim) or dim < 1:
        raise bad(f"dim is {dim!r}, not a positive integer")
    model = m.get("model")
    if not isinstance(model, dict) or not all(
        isinstance(model.get(k), str) for k in ("fingerprint", "ref", "precision")
    ):
        raise bad("model must be an object with string fingerprint, ref and precision")
    td = m.get("truncate_dim")
    if td is not None and (not is_int(td) or td < 1):
        raise bad(f"truncate_dim is {td!r}")
    if not isinstance(m.get("normalize", True), bool):
        raise bad(f"normalize is {m.get('normalize')!r}, not true or false")
    if m.get("similarity_fn_name", "cosine") not in ("cosine", "dot", "euclidean", "manhattan"):
        raise bad(f"similarity_fn_name is {m.get('similarity_fn_name')!r}")
    prompts = m.get("prompts", {})
    if not isinstance(prompts, dict) or not all(isinstance(prompts.get(k, ""), str) for k in ("document", "query")):
        raise bad("prompts must be an object with string document and query prompts")
    fmt = output_format_of(m)
    if not isinstance(fmt, str) or fmt not in OUTPUT_FORMATS:
        raise bad(f"output_format is {fmt!r}, not one of {', '.join(map(repr, OUTPUT_FORMATS))}")
    shards = m.get("shards")
    if not isinstance(shards, list):
        raise bad("it has no list of shards")
    for i, rec in enumerate(shards):
        if why := record_problem(rec, i, fmt):
            raise bad(why)
    if not is_int(m.get("count")) or m["count"] != sum(r["count"] for r in shards):
        raise bad(f"count {m.get('count')!r} is not the sum of the shards' counts")


def read_manifest(out_dir: str | os.PathLike) -> dict:
    """The manifest of a complete OUTDIR; an error says what to do when it is absent or unfinished.

    Raises FileNotFoundError without a manifest, IndexFormatError (naming the file) for one that
    is damaged, unfinished, of a newer version, or whose shard records are not the engine's.
    """
    path = Path(out_dir) / MANIFEST
    try:
        manifest = _load_json(path, MANIFEST_LIMIT)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"no {MANIFEST} in {out_dir}; create it with: embed encode INPUT -o {out_dir}"
        ) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise IndexFormatError(f"{path} is not an embed encode manifest")
    version = manifest.get("version", 0)
    if not is_int(version):
        raise IndexFormatError(f"{path} has format version {version!r}, not an integer. {REWRITE}")
    if version > VERSION:
        raise IndexFormatError(
            f"{path} has format version {version}; this engine reads up to {VERSION}. Upgrade embed-engine"
        )
    if manifest.get("status") != "complete":
        raise IndexFormatError(
            f"{out_dir} is incomplete (an encode run stopped before the end); rerun the same "
            "embed encode command to resume and finish it"
        )
    _check_manifest(path, manifest)
    return manifest


def _open_shard_file(path: Path) -> tuple[io.BufferedReader, int]:
    """(file, size) of one of OUTDIR's shard files: a regular file, not a link (IndexFormatError
    for anything else; FileNotFoundError passes)."""
    # open_regular is annotated BinaryIO; it returns os.fdopen(fd, "rb"), a BufferedReader (readinto)
    f = cast(io.BufferedReader, open_regular(path, REWRITE, follow_symlinks=False))
    return f, os.fstat(f.fileno()).st_size


def _missing(path: Path) -> IndexFormatError:
    return IndexFormatError(f"{path} is missing; rerun embed encode to rebuild it")


def _npy_data_offset(f: BinaryIO, path: Path, size: int, count: int, dim: int | None) -> int:
    """Check a .npy file's header against its record before any data is read: float32
    little-endian, C order, shape (count, dim) (any dim >= 1 when dim is None), and a file size of
    exactly header + count * dim * 4 bytes. Returns where the data starts."""
    bio = io.BytesIO(f.read(NPY_HEADER_LIMIT + 16))
    fmt = np.lib.format
    try:
        version = fmt.read_magic(bio)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(bio, max_header_size=NPY_HEADER_LIMIT)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(bio, max_header_size=NPY_HEADER_LIMIT)
        else:
            raise ValueError(f".npy version {version} (the engine writes 1.0)")
    except (ValueError, TypeError, SyntaxError, EOFError, OverflowError, RecursionError, MemoryError) as e:
        raise IndexFormatError(f"{path} is not a valid .npy file ({e}). {REWRITE}") from None
    if dim is None and len(shape) == 2:
        dim = shape[1]  # a done record without the run's settings: any width >= 1
    if dtype.str != "<f4" or fortran or shape != (count, dim) or not dim or dim < 1:
        raise IndexFormatError(
            f"{path} holds {dtype.str} {shape}{' in Fortran order' if fortran else ''}, its "
            f"record says <f4 (float32) {(count, dim)} in C order. {REWRITE}"
        )
    offset = bio.tell()
    if size != offset + count * dim * 4:
        raise IndexFormatError(
            f"{path} is {size} bytes, a {shape} float32 .npy file is {offset + count * dim * 4}"
            f" ({'truncated' if size < offset + count * dim * 4 else 'trailing data'}). {REWRITE}"
        )
    return offset


def _sha256_of(f: BinaryIO) -> str:
    h = hashlib.sha256()
    f.seek(0)
    while block := f.read(1 << 22):
        h.update(block)
    return h.hexdigest()


def _check_file(role: str, f: BinaryIO, path: Path, size: int, count: int, dim: int | None, sha: str) -> bool:
    """On resume: whether one of a shard's files (open) is the one its done record vouches for.

    False when its sha256 differs (the shard is redone); IndexFormatError when it does not fit the
    record: a .npy header (before the checksum), a .jsonl line count, a Parquet footer (after it).
    """
    if role == "vectors":
        _npy_data_offset(f, path, size, count, dim)
    if _sha256_of(f) != sha:
        return False
    f.seek(0)
    if role == "ids":
        lines = sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 22), b""))
        if lines != count:
            raise IndexFormatError(f"{path} has {lines} lines, its done record says {count}")
    elif role == "table":
        _parquet_file(f, path, count, dim)
    return True


def _checksum_error(path: Path) -> IndexFormatError:
    return IndexFormatError(
        f"{path} does not match its checksum in the manifest (damaged or "
        "edited); rerun the same embed encode command to rewrite it"
    )


def _read_vectors(path: Path, count: int, dim: int, sha: str | None) -> np.ndarray:
    """Shard vectors (count, dim) float32, writable; the file checked before its data is read."""
    try:
        f, size = _open_shard_file(path)
    except FileNotFoundError:
        raise _missing(path) from None
    with f:
        offset = _npy_data_offset(f, path, size, count, dim)
        buf = bytearray(size)
        f.seek(0)
        if f.readinto(buf) != size:
            raise IndexFormatError(f"{path} shrank while it was read. {REWRITE}")
    if sha is not None and hashlib.sha256(buf).hexdigest() != sha:
        raise _checksum_error(path)
    return np.frombuffer(buf, dtype="<f4", offset=offset).reshape(count, dim)


def _read_checked(path: Path, sha: str | None) -> bytes:
    """A shard file's bytes (a regular file inside OUTDIR), checked against ``sha`` when given."""
    try:
        f, _ = _open_shard_file(path)
    except FileNotFoundError:
        raise _missing(path) from None
    with f:
        raw = f.read()
    if sha is not None and hashlib.sha256(raw).hexdigest() != sha:
        raise _checksum_error(path)
    return raw


def _read_sidecar(path: Path, count: int, sha: str | None) -> tuple[list[str], list[str]]:
    """(ids, titles) of a shard's .jsonl: count lines of {"id": str, "title": str}."""
    raw = _read_checked(path, sha)
    # split on "\n" only: str.splitlines would also split inside ids holding U+2028
    lines = raw.split(b"\n")
    if lines[-1] != b"" or len(lines) - 1 != count:
        raise IndexFormatError(
            f"{path} has {len(lines) - 1} lines{'' if lines[-1] == b'' else ' (no final newline)'}"
            f", the manifest says {count}. {REWRITE}"
        )
    ids, titles = [], []
    for n, line in enumerate(lines[:-1], 1):
        try:
            row = json.loads(line.decode("utf-8"))
        except (ValueError, RecursionError):
            row = None
        if not (isinstance(row, dict) and isinstance(row.get("id"), str) and isinstance(row.get("title", ""), str)):
            raise IndexFormatError(f"{path}:{n}: not a JSON object with a string id and title. {REWRITE}")
        ids.append(row["id"])
        titles.append(row.get("title", ""))
    return ids, titles


def _parquet_file(source, path: Path, count: int, dim: int | None):
    """A Parquet shard's ``pq.ParquetFile`` (only its footer read), checked against its record:
    exactly ``parquet_schema(dim)`` (any dim >= 1 when dim is None) and count rows."""
    pa, pq = _pyarrow()
    try:
        pf = pq.ParquetFile(source)
        schema, rows = pf.schema_arrow, pf.metadata.num_rows
    except (pa.ArrowException, OSError, ValueError) as e:
        raise IndexFormatError(f"{path} is not a readable Parquet file ({e}). {REWRITE}") from None
    if dim is None:  # a done record without the run's settings: any width >= 1
        dim = getattr(schema.field("embedding").type, "list_size", 0) if "embedding" in schema.names else 0
    want = parquet_schema(max(dim, 1))
    if not schema.equals(want):

        def cols(sc) -> str:
            return ", ".join(f"{f.name}: {f.type}" for f in sc)

        raise IndexFormatError(f"{path} has columns ({cols(schema)}), the engine's are ({cols(want)}). {REWRITE}")
    if rows != count:
        raise IndexFormatError(f"{path} has {rows} rows, its record says {count}. {REWRITE}")
    return pf


def _read_parquet(path: Path, count: int, dim: int, sha: str | None) -> tuple[list[str], list[str], np.ndarray]:
    """(ids, titles, vectors (count, dim) float32, writable) of a Parquet shard: the file checked
    against sha before it is parsed, its footer (``_parquet_file``) before its data, and no nulls."""
    pa, _ = _pyarrow()
    raw = _read_checked(path, sha)
    pf = _parquet_file(pa.BufferReader(raw), path, count, dim)
    try:
        table = pf.read()
        embedding = table.column("embedding").combine_chunks()
        values = embedding.flatten()
    except (pa.ArrowException, OSError, ValueError) as e:
        raise IndexFormatError(f"{path} is damaged: its Parquet data cannot be read ({e}). {REWRITE}") from None
    nulls = [c for c in ("id", "title") if table.column(c).null_count]
    if embedding.null_count or values.null_count:
        nulls.append("embedding")
    if nulls:
        raise IndexFormatError(f"{path} has nulls in ({', '.join(nulls)}); the engine writes none. {REWRITE}")
    if table.num_rows != count:
        raise IndexFormatError(f"{path} has {table.num_rows} rows, its record says {count}. {REWRITE}")
    vectors = np.array(values.to_numpy(), dtype="<f4").reshape(count, dim)
    return table.column("id").to_pylist(), table.column("title").to_pylist(), vectors


def _read_shard(
    out_dir: Path, i: int, rec: dict, dim: int, output_format: str, verify: bool
) -> tuple[list[str], list[str], np.ndarray]:
    """(ids, titles, vectors) of shard i from its files in output_format (``shard_files``); the
    counterpart of ``_payload``."""
    files = {role: out_dir / name for role, name in shard_files(i, output_format).items()}
    sums = rec["sha256"] if verify else {}
    if output_format == "parquet":
        return _read_parquet(files["table"], rec["count"], dim, sums.get("table"))
    vectors = _read_vectors(files["vectors"], rec["count"], dim, sums.get("vectors"))
    ids, titles = _read_sidecar(files["ids"], rec["count"], sums.get("ids"))
    return ids, titles, vectors


def iter_shards(out_dir: str | os.PathLike, verify: bool = True) -> Iterator[tuple[list[str], list[str], np.ndarray]]:
    """(ids, titles, vectors) per shard of a complete OUTDIR (either output format), in order;
    verify checks the sha256s.

    IndexFormatError naming the file for anything that is not as the manifest says. Reading
    trusts nothing in the folder:

    Only the engine's own names inside OUTDIR are opened: the shard files are named from the
    shard's number (a record whose ``vectors``/``ids`` names differ, say an absolute path or
    ``../``, is refused), and every file must be a regular file, not a symbolic link (a fifo,
    ``/dev/zero`` or a link out of the folder is refused, so nothing blocks or reads without
    end). A ``.npy`` file's header is checked before its data is read: float32 little-endian, C
    order, shape ``(count, dim)`` as the manifest or done record says, and a file size that
    matches exactly, so a header claiming 1e8 rows allocates nothing. A ``.parquet`` file is
    checked against its checksum before it is parsed (``verify``), then its footer before its
    data: exactly the three columns and types of the layout (module docstring) with the
    manifest's dim, and the record's row count; nulls are refused, and pyarrow's errors on a
    damaged file become IndexFormatErrors. JSON is parsed with bounded sizes and nesting. Every problem found by
    ``read_manifest``, ``iter_shards`` and ``load_index`` (including NaN, zero or duplicate-id
    rows that ``Index.add`` refuses) is an :class:`~engine.errors.IndexFormatError` naming the
    file; on resume (``OutputDir.completed``) a done record or shard that fails these checks is
    not trusted: the shard is redone (a warning names the file).
    """
    from .storage import readable_outdir

    out_dir = readable_outdir(out_dir)
    yield from _iter_shards(out_dir, read_manifest(out_dir), verify)


def _iter_shards(out_dir: Path, manifest: dict, verify: bool) -> Iterator[tuple[list[str], list[str], np.ndarray]]:
    for i, rec in enumerate(manifest["shards"]):
        yield _read_shard(out_dir, i, rec, manifest["dim"], output_format_of(manifest), verify)


def load_embeddings(out_dir: str | os.PathLike, *, verify: bool = True) -> tuple[list[str], np.ndarray]:
    """Every id and vector of a complete ``embed encode`` OUTDIR (npy or parquet), in input order.

    Returns (ids, vectors): vectors is float32 (n, dim) and row j is ids[j]'s vector (unit
    length for cosine models, as the manifest's ``normalize`` says). verify checks each file's
    sha256 against the manifest. Raises FileNotFoundError without a manifest and
    IndexFormatError naming the file for an unfinished run or anything damaged (``iter_shards``
    lists the checks). ``pq.read_table(OUTDIR)`` fails on manifest.json: other tools read the
    Parquet shards with the glob ``OUTDIR/*.parquet`` (pyarrow, pandas, DuckDB).

    >>> ids, vectors = load_embeddings("out/")
    >>> len(ids), vectors.shape, vectors.dtype
    (5183, (5183, 384), dtype('float32'))
    """
    from .storage import readable_outdir

    out_dir = readable_outdir(out_dir)
    manifest = read_manifest(out_dir)
    ids: list[str] = []
    parts = [np.empty((0, manifest["dim"]), dtype=np.float32)]
    for shard_ids, _, vectors in _iter_shards(out_dir, manifest, verify):
        ids.extend(shard_ids)
        parts.append(vectors)
    return ids, np.concatenate(parts)


def stored_normalized(similarity_fn_name: str | None) -> bool:
    """Whether the vectors the engine stores for a model are L2-normalized: True for cosine models
    (None, not recorded, counts as cosine), False for others (the model's output). The one place of
    this rule: ``embed encode``'s shards (the manifest's ``normalize``), the embedding cache rows they
    share with ``encode_cached`` (eval, select, lab) and ``embed_dataset`` follow it, asking ``encode``
    for it explicitly (``encode``'s own default is the model's output, as in sentence-transformers).
    Stored vectors of a cosine model thus score by plain inner products in any vector store."""
    return similarity_fn_name in (None, "cosine")


def metric_for(similarity_fn_name: str | None, unit: bool) -> str:
    """The ``Index`` metric that ranks as a model's similarity does, ``unit``: its vectors are unit
    length. The one place of this rule (``embed search``, eval, select and demo use it).

    "cosine" -> "cosine", "dot" -> "dot" (raw vectors, inner products), None (not recorded) ->
    "cosine". "euclidean" on unit vectors -> "cosine": ``||a - b||^2 = 2 - 2 a.b`` ranks as cosine
    does. "euclidean" on raw vectors and "manhattan" (which no inner product reproduces) are
    returned as they are, and ``Index(metric=...)`` refuses them, saying what to do instead.
    """
    if similarity_fn_name == "euclidean" and unit:
        return "cosine"
    return similarity_fn_name or "cosine"


def index_metric(manifest: dict) -> str:
    """The ``Index`` metric of an OUTDIR (``metric_for``): the manifest's similarity_fn_name and
    normalize ("cosine" for manifests written before the similarity was recorded)."""
    return metric_for(manifest.get("similarity_fn_name"), manifest.get("normalize", True) is not False)


def load_index(out_dir: str | os.PathLike, precision: str = "fp32", verify: bool = True):
    """Load a complete OUTDIR into an ``Index``: (index, titles by id, manifest).

    The index's metric follows the manifest (``index_metric``: the model's similarity) and its
    model is the manifest's fingerprint, so searching it with another model's vectors raises
    ModelMismatchError. Rows the Index refuses (NaN, zero vectors, an id seen
    before) are an IndexFormatError naming the shard.
    """
    from ..index.index import Index
    from .storage import readable_outdir

    out_dir = readable_outdir(out_dir)
    manifest = read_manifest(out_dir)
    fingerprint = manifest["model"]["fingerprint"]
    index = Index(manifest["dim"], precision=precision, model=fingerprint, metric=index_metric(manifest))
    titles: dict[str, str] = {}
    for i, (ids, tits, vectors) in enumerate(_iter_shards(out_dir, manifest, verify)):
        if len(ids):
            try:
                index.add(vectors, ids=ids, model=fingerprint)
            except InputError as e:
                names = "/".join(shard_files(i, output_format_of(manifest)).values())
                raise IndexFormatError(f"{Path(out_dir)}/{names}: {e}. {REWRITE}") from None
            titles.update(zip(ids, tits))
    return index, titles, manifest


class CorpusSearcher:
    """Search an ``embed encode`` output: loads its shards into an ``Index`` and embeds queries
    with the manifest's model (or ``model``), refusing a model whose fingerprint differs.

    Queries get the manifest's query prompt (the model's, what ``encode_query`` prepends) and the
    manifest's normalization, and are scored with its similarity (cosine or dot: ``load_index``).

    >>> s = CorpusSearcher("out/")
    >>> s.search(["what causes ..."], k=5)[0][0]   # (id, score, title) of the best hit
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        model=None,
        precision: str = "fp32",
        *,
        device: str = "cpu",
        threads: int | None = None,
        verify: bool = True,
        cache_dir: str | os.PathLike | None = None,
    ):
        from ..embedder import Embedder
        from .storage import readable_outdir

        out_dir = readable_outdir(out_dir)  # a URI: one checked local mirror for the manifest and the index
        manifest = read_manifest(out_dir)
        want = manifest["model"]["fingerprint"]
        if isinstance(model, Embedder):
            self.embedder = model
        else:
            ref = model if model is not None else manifest["model"]["ref"]
            self.embedder = Embedder(
                ref, device=device, model_precision=manifest["model"]["precision"], threads=threads, cache_dir=cache_dir
            )
        if self.embedder.fingerprint != want:
            raise ModelMismatchError(
                f"{out_dir} was embedded with {want}, but the query model is {self.embedder.fingerprint}. "
                f"Use the same model (--model {manifest['model']['ref']}) and precision "
                f"({manifest['model']['precision']}), or re-encode the corpus with this one"
            )
        self.index, self.titles, self.manifest = load_index(out_dir, precision=precision, verify=verify)
        self.truncate_dim = manifest.get("truncate_dim")

    def search(
        self, queries: str | Sequence[str], k: int = 10, *, prompt_name: str | None = None, prompt: str | None = None
    ) -> list[list[tuple[str, float, str]]]:
        """For each query, up to k hits (id, score, title or snippet), best first.

        The score is the index's metric (cosine, or dot product for a dot model). prompt_name /
        prompt (as ``Embedder.encode``) override the manifest's query prompt; manifests written
        before prompts were recorded get ``encode``'s default.
        """
        queries = [queries] if isinstance(queries, str) else list(queries)
        if not queries:
            return []
        if prompt is None and prompt_name is None:
            prompt = (self.manifest.get("prompts") or {}).get("query")
        q = self.embedder.encode(
            queries,
            truncate_dim=self.truncate_dim,
            prompt_name=prompt_name,
            prompt=prompt,
            normalize=self.manifest.get("normalize", True) is not False,
        )
        scores, ids = self.index.search(q, k, model=self.embedder.fingerprint)
        return [
            [(str(i), float(s), self.titles.get(str(i), "")) for s, i in zip(rs, ri)] for rs, ri in zip(scores, ids)
        ]
