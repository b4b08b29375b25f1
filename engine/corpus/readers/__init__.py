"""Corpus readers: files and in-memory sources in, a stream of ``Doc`` out, in input order, one record at a time.

The engine's one reader of documents: ``embed encode``, ``embed eval``/``select``/``compare``, the benchmark
harness and ``embed demo`` all read records here, and all of them embed the string ``compose(title, text)`` builds.

Inputs (``expand_inputs``): files and globs, read by suffix or as a forced ``format=`` (``files``: JSON lines, CSV,
TSV, Parquet, plain text, each also ``.gz``); ``-`` for standard input; or one in-memory source (``sources``: a
pandas DataFrame, a pyarrow Table/RecordBatchReader/dataset, a Hugging Face dataset, an iterable of dicts or of
strings). pandas and pyarrow are imported only when such an object is passed.

Fields (``Fields``): which record fields hold the id (``_id``), the text (``text``, or the first non-empty of
several), the title (``title``) and extra values. Ids are strings; with ``id=None`` a record's id is its 1-based
line or row number. The embedded text is ``(title + " " + text).strip()`` (``compose``); the embedding cache's
key is ``text_key`` of it.

Bad records (invalid JSON, a missing or null field, non-UTF-8 bytes, a lone surrogate, a malformed CSV row, a
damaged ``.gz``) go to ``on_bad(where, message)``, ``where`` naming the file and line (``path:7``) or the source
and row (``<DataFrame>: row 7``); without a handler they raise ``InputError`` (``raise_on_bad``: the same, without
the ``--skip-bad`` hint). A source-level problem (no text column, an over-long CSV field) always raises. Memory
does not grow with the input: one line, record or batch of rows is held at a time (``read_documents`` returns a
list).

Modules: ``records`` (Doc, Fields, compose, the checks on every record), ``files`` (paths, formats, the file
readers, stdin), ``sources`` (in-memory sources); this package holds the entry points.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from importlib import resources
from pathlib import Path

from ...errors import InputError
from .files import FORMAT_NAMES, _check_format, _matches, _read_stdin, detect_format
from .files import _read_file as _read_file  # re-exported: distributed.py reads one file per task
from .records import (
    ANY_TEXT,
    DEFAULT_FIELDS,
    SKIP_HINT,
    Doc,
    Fields,
    OnBad,
    compose,
    display_name,
    display_text,
    raise_on_bad,
    text_key,
)
from .sources import Input, Source, _as_source, _read_source

__all__ = [
    "ANY_TEXT",
    "FORMAT_NAMES",
    "SKIP_HINT",
    "Doc",
    "Fields",
    "Input",
    "OnBad",
    "Source",
    "compose",
    "count_records",
    "detect_format",
    "display_name",
    "display_text",
    "expand_inputs",
    "iter_documents",
    "raise_on_bad",
    "read_documents",
    "read_sample",
    "text_key",
]


def read_documents(inputs, fields: Fields = DEFAULT_FIELDS, format: str | None = None) -> list[Doc]:
    """Every document of the inputs (files, globs or a source, see ``expand_inputs``), in order;
    a bad record raises ``InputError``."""
    return list(iter_documents(expand_inputs(inputs, format), fields, raise_on_bad, format))


def read_sample(name: str = "sample_corpus.jsonl", fields: Fields = DEFAULT_FIELDS) -> list[Doc]:
    """A data file packaged with the engine (``engine/data``): ``sample_corpus.jsonl`` (200 docs,
    20 topics of 10: d001-d010 is topic 1, ...) or ``sample_queries.jsonl`` (with ``relevant`` ids)."""
    with resources.as_file(resources.files("engine").joinpath("data", name)) as path:
        return read_documents(path, fields)


def expand_inputs(inputs, format: str | None = None) -> list[Input]:
    """Inputs -> what ``iter_documents`` reads.

    Args:
        inputs: a path, a glob or ``-`` (stdin, once), or a list or tuple of those (a glob's matches
            sorted by name; the same file named twice is read once); or one in-memory source
            (``sources``: a DataFrame, an Arrow table or stream, a Hugging Face dataset, an iterable).
        format: read every file (and stdin) as this format (``FORMAT_NAMES``) instead of by suffix.

    Returns:
        The existing files as ``Path``s and stdin as a ``Source``, in the order given; or ``[source]``.

    Raises:
        InputError: for a missing file, a directory, an unknown file type (unless ``format`` forces one),
            a format given with an in-memory source, and anything that is not a corpus.
    """
    if format is not None:
        _check_format(format)
    source = _as_source(inputs)
    if source is not None:
        if format is not None:
            raise InputError(f"format={format!r} applies to files and stdin, not to a {type(inputs).__name__}")
        return [source]
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    out: list[Input] = []
    seen: set[str] = set()
    for item in inputs:
        s = os.fspath(item)
        if s == "-":
            if "-" in seen:
                raise InputError("standard input (-) is named twice; it can be read once")
            if format == "parquet":
                raise InputError(
                    "parquet cannot be read from standard input (it needs a seekable file); "
                    "save it to a file and pass its path"
                )
            seen.add("-")
            out.append(Source("stdin"))
            continue
        for m in _matches(s):
            if os.path.isdir(m):
                raise InputError(f"{m} is a directory; pass files or a glob such as '{m}/*.jsonl'")
            detect_format(m, format)  # an unknown type fails here, before any output is written
            real = os.path.realpath(m)
            if real not in seen:  # the same file named twice (e.g. a glob and a path) is read once
                seen.add(real)
                out.append(Path(m))
    if not out:
        raise InputError("no input files given")
    return out


def iter_documents(
    inputs: Sequence[Input], fields: Fields = DEFAULT_FIELDS, on_bad: OnBad | None = None, format: str | None = None
) -> Iterator[Doc]:
    """Every document of every input (``expand_inputs``' files and sources), in order.

    Args:
        inputs: what ``expand_inputs`` returns.
        fields: which record fields hold the id, text, title and extras.
        on_bad: called as ``on_bad(where, message)`` for each bad record, which is skipped; None: the
            first bad record raises ``InputError`` with the ``--skip-bad`` hint.
        format: read every file (and stdin) as this format (``FORMAT_NAMES``) instead of by suffix.

    Raises:
        InputError: for a bad record without ``on_bad``, and for a source-level problem (no text column,
            a damaged Parquet file, a CSV field over the limit) always.
    """
    several = len(inputs) > 1
    for src in inputs:
        # the prefix of row-number ids; a file name that is not UTF-8 (PEP 383 surrogates) is spelled with \x escapes,
        # so ids stay valid UTF-8 (sidecars, Parquet, index files, SQLite)
        prefix = f"{display_name(src)}:" if several else ""
        if not isinstance(src, Source):
            yield from _read_file(src, detect_format(src, format), fields, on_bad, prefix)
        elif src.kind == "stdin":
            yield from _read_stdin(src, fields, on_bad, prefix, format)
        else:
            yield from _read_source(src, fields, on_bad, prefix)


def count_records(inputs: Sequence[Input], format: str | None = None) -> int | None:
    """A quick upper bound of the number of documents (newlines; parquet metadata; a source's
    length), or None.

    Used only for the progress bar's total; gzip files, pipes, stdin and sources of unknown
    length are not counted (None).
    """
    total = 0
    for path in inputs:
        if isinstance(path, Source):
            if path.rows is None:
                return None
            total += path.rows
            continue
        fmt = detect_format(path, format)
        if str(path).lower().endswith(".gz") or not os.path.isfile(path):  # a fifo is read once
            return None
        if fmt == "parquet":
            try:
                import pyarrow.parquet as pq
            except ImportError:
                return None
            try:
                total += pq.ParquetFile(path).metadata.num_rows
            except Exception:  # damaged or not Parquet: no count here; reading it says what is wrong
                return None
            continue
        n, last = 0, b"\n"
        with open(path, "rb") as f:
            while block := f.read(1 << 24):
                n += block.count(b"\n")
                last = block[-1:]
        n += last != b"\n"
        total += n - 1 if fmt in ("csv", "tsv") else n
    return total
