"""Where the distributed path reads inputs and writes OUTDIR: a local folder or object storage.

A location is a local path or a URI that ``pyarrow.fs.FileSystem.from_uri`` opens: ``s3://``,
``gs://``, ``hdfs://``, ``file://`` (credentials and endpoints as pyarrow takes them: the usual
environment variables such as ``AWS_ACCESS_KEY_ID`` and ``AWS_ENDPOINT_URL``, or URI options such
as ``s3://bucket/out?endpoint_override=http://host:9000``). ``Folder`` is the one seam: read a
named file (bounded size, a regular file only), write one whole, delete, list names. Local writes
go through ``engine.files.replace_atomically`` (temp file, fsync, rename); an object store's PUT
is atomic by itself (the object appears whole or not at all), so both give the guarantee the done
records rely on: a file is the old one or the new one, never a torn mix.

Inputs on object storage are copied to a local temporary file before they are parsed (the one
reader, ``engine.corpus.readers``, reads local files); the copy must have the size the store
reported, else the object changed while it was read and the run stops with a clear error.
"""

from __future__ import annotations

import contextlib
import fnmatch
import glob
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import IndexFormatError, InputError

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
COPY_BLOCK = 1 << 22


def is_uri(location) -> bool:
    """Whether location is a URI (``s3://...``) rather than a local path."""
    return isinstance(location, str) and bool(_URI.match(location))


def _filesystem(uri: str):
    """(pyarrow filesystem, path inside it) for uri; InputError saying what is wrong."""
    try:
        import pyarrow.fs as pafs
    except ImportError:
        raise InputError("object storage URIs need pyarrow: pip install 'embed-engine[corpus]'") from None
    try:
        return pafs.FileSystem.from_uri(uri)
    except (OSError, ValueError) as e:  # ArrowInvalid is a ValueError, ArrowIOError an OSError
        raise InputError(
            f"cannot open {uri!r} ({e}); use a local path or an s3://, gs://, hdfs:// or file:// "
            "URI, with credentials in the usual environment variables"
        ) from None


class Folder:
    """OUTDIR (or any folder) by name: a local path or a URI. Only names inside it are opened."""

    def __init__(self, location: str | os.PathLike):
        self.location = os.fspath(location)
        self.local = not is_uri(self.location)
        if self.local:  # absolute: a worker's working folder is not the driver's
            self.location = os.path.abspath(self.location)
            self.path = Path(self.location)
        else:
            self.fs, self.base = _filesystem(self.location)
            self.base = self.base.rstrip("/")

    def __reduce__(self):  # to Ray workers: the location only (a filesystem is rebuilt there)
        return Folder, (self.location,)

    def __str__(self) -> str:
        return self.location

    def name(self, name: str) -> str:
        """name as it appears in messages."""
        return str(self.path / name) if self.local else f"{self.location.rstrip('/')}/{name}"

    def make(self) -> None:
        if self.local:
            if self.path.exists() and not self.path.is_dir():
                raise InputError(f"output {self.path} exists and is not a folder; choose a folder path for -o/--out")
            self.path.mkdir(parents=True, exist_ok=True)
        else:
            self.fs.create_dir(self.base, recursive=True)

    def read(self, name: str, limit: int, hint: str) -> bytes:
        """The bytes of file name: a regular file of at most limit bytes. FileNotFoundError
        passes; a link, a folder or a larger file is an IndexFormatError naming it."""
        if self.local:
            from ..files import open_regular

            with open_regular(self.path / name, hint, follow_symlinks=False) as f:
                size = os.fstat(f.fileno()).st_size
                if size > limit:
                    raise IndexFormatError(
                        f"{self.name(name)} is {size} bytes, more than the {limit} a file of "
                        f"the engine's can be. {hint}"
                    )
                return f.read(size + 1)
        import pyarrow.fs as pafs

        info = self.fs.get_file_info(f"{self.base}/{name}")
        if info.type == pafs.FileType.NotFound:
            raise FileNotFoundError(self.name(name))
        if info.type != pafs.FileType.File:
            raise IndexFormatError(f"{self.name(name)} is not a file. {hint}")
        if info.size > limit:
            raise IndexFormatError(
                f"{self.name(name)} is {info.size} bytes, more than the {limit} a file of the engine's can be. {hint}"
            )
        with self.fs.open_input_stream(f"{self.base}/{name}") as f:
            data = f.read(info.size + 1)
        if len(data) != info.size:
            raise IndexFormatError(f"{self.name(name)} changed while it was read. {hint}")
        return data

    def write(self, name: str, data: bytes, sync_dir: bool = True) -> None:
        """Write file name whole: the old file or the new one is there after a crash, never a mix."""
        if self.local:
            from .shards import atomic_write

            atomic_write(self.path / name, data, sync_dir=sync_dir)
            return
        with self.fs.open_output_stream(f"{self.base}/{name}") as f:
            f.write(data)

    def delete(self, name: str) -> None:
        """Delete file name if it is there."""
        with contextlib.suppress(FileNotFoundError):
            if self.local:
                (self.path / name).unlink()
            else:
                self.fs.delete_file(f"{self.base}/{name}")

    def names(self) -> list[str]:
        """The names of the files directly inside (none if the folder does not exist)."""
        if self.local:
            return [p.name for p in self.path.iterdir()] if self.path.is_dir() else []
        import pyarrow.fs as pafs

        infos = self.fs.get_file_info(pafs.FileSelector(self.base, allow_not_found=True))
        return [i.base_name for i in infos]


def expand_uris(pattern: str) -> list[tuple[str, int, float | None]]:
    """The files a URI names, a glob's matches sorted by name: (uri, size, mtime) each."""
    import pyarrow.fs as pafs

    fs, path = _filesystem(pattern)
    head, sep, query = pattern.partition("?")
    # a match's URI: what precedes the path in the pattern (scheme, host), its path, the options
    prefix = head[: len(head) - len(path)] if head.endswith(path) else head[: head.index("://") + 3]

    def uri(p: str) -> str:
        return prefix + p + sep + query

    if not glob.has_magic(path):
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise InputError(f"input file {pattern!r} does not exist")
        if info.type != pafs.FileType.File:
            raise InputError(f"{pattern} is a directory; pass files or a glob such as '{pattern.rstrip('/')}/*.jsonl'")
        return [(pattern, info.size, _mtime(info))]
    parts = path.split("/")
    fixed = "/".join(_fixed_parts(parts))
    infos = fs.get_file_info(pafs.FileSelector(fixed, recursive=True, allow_not_found=True))
    found = sorted(
        (i for i in infos if i.type == pafs.FileType.File and fnmatch.fnmatchcase(i.path, path)), key=lambda i: i.path
    )
    if not found:
        raise InputError(f"no files match {pattern!r}; check the pattern (quote it so the shell does not expand it)")
    return [(uri(i.path), i.size, _mtime(i)) for i in found]


def _fixed_parts(parts: list[str]) -> Iterator[str]:
    """The leading path components without glob characters."""
    for p in parts:
        if glob.has_magic(p):
            return
        yield p


def _mtime(info) -> float | None:
    return info.mtime.timestamp() if info.mtime is not None else None


@contextlib.contextmanager
def local_copy(uri: str, size: int) -> Iterator[Path]:
    """A local temporary copy of the object at uri (same base name, so its suffix picks the
    format), deleted afterwards; InputError if it is not ``size`` bytes (it changed meanwhile)."""
    fs, path = _filesystem(uri)
    folder = tempfile.mkdtemp(prefix="embed-input-")
    try:
        local = Path(folder) / os.path.basename(path)
        with fs.open_input_stream(path) as src, open(local, "wb") as dst:
            shutil.copyfileobj(src, dst, COPY_BLOCK)
        got = local.stat().st_size
        if got != size:
            raise InputError(
                f"{uri} is {got} bytes now, {size} when the run was planned: it changed while the run "
                "read it; rerun when it no longer changes"
            )
        yield local
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def readable_outdir(out_dir: str | os.PathLike) -> Path:
    """A local path to read a complete OUTDIR from: ``out_dir`` itself when it is local; for a URI,
    a local mirror of the engine's files in it (the manifest, rejects and ``shard-NNNNN.*`` files;
    any other name is left where it is), fresh on every call (the folder may have changed) and
    removed when the process exits (an Index may keep its files memory-mapped until then).

    The readers (``load_embeddings``, ``iter_shards``, ``load_index``) then check the mirror as they
    check any OUTDIR: the manifest, every shard's size and sha256. A URI that holds no manifest is
    a FileNotFoundError naming it.
    """
    if not is_uri(out_dir):
        return Path(out_dir)
    uri = os.fspath(out_dir).rstrip("/")
    import atexit

    import pyarrow.fs as pafs

    from .shards import _SHARD_FILE, MANIFEST, REJECTS

    folder = Folder(uri)
    names = [n for n in folder.names() if n in (MANIFEST, REJECTS) or _SHARD_FILE.match(n)]
    if MANIFEST not in names:
        raise FileNotFoundError(f"{uri} has no {MANIFEST}: not a finished 'embed encode' output folder")
    local = Path(tempfile.mkdtemp(prefix="embed-outdir-"))
    atexit.register(shutil.rmtree, local, True)
    for name in names:
        src = f"{folder.base}/{name}"
        if folder.fs.get_file_info(src).type != pafs.FileType.File:
            raise IndexFormatError(f"{folder.name(name)} is not a file; the output folder is damaged")
        with folder.fs.open_input_stream(src) as f, open(local / name, "wb") as dst:
            shutil.copyfileobj(f, dst, COPY_BLOCK)
    return local
