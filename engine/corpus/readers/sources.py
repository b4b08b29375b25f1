"""In-memory sources: DataFrames, Arrow data, Hugging Face datasets and iterables, read ``BATCH_ROWS`` rows at a time.

``_as_source`` tells them apart by type, importing nothing (pandas and pyarrow are imported only when
such an object is passed):

* a pandas ``DataFrame`` (missing values, NaN and None alike, are null);
* a pyarrow ``Table`` or ``RecordBatch``, a ``RecordBatchReader``, a ``pyarrow.dataset.Dataset``, or
  any object with ``__arrow_c_stream__`` (a polars DataFrame, ...);
* a Hugging Face ``datasets.Dataset`` or ``IterableDataset`` (duck-typed: ``datasets`` is never
  imported here; its row order, ``select``/``shuffle`` included, is kept);
* any other iterable (a generator, a list of dicts, a pandas Series): each item is a record (a
  dict, read like a JSON object) or a document (a string, read like a plain text line, but an
  empty one is kept and embedded as ``""``).

A list or tuple of strings or paths is a list of files, as always: to embed a list of strings, pass
``iter(texts)``. A dict, a set, an open file and a ``DatasetDict`` are errors that say what to pass
instead. A one-shot source (a generator, an iterator, a ``RecordBatchReader``) can be read once:
passing it again is an error, not an empty corpus. Standard input is a ``Source`` too (kind
``stdin``), read like a file by ``files._read_stdin``.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import os
import sys
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sized
from pathlib import Path

from ...errors import InputError
from .records import Doc, Fields, OnBad, _bad, _check_columns, _encodable, _make_doc, _wanted, compose

BATCH_ROWS = 4096  # rows per batch read from Parquet, Arrow, DataFrames and datasets


class Source:
    """An input that is not a file, made by ``expand_inputs``. kind: ``stdin``,
    ``pandas``, ``arrow`` (Table, RecordBatch), ``arrow-stream`` (RecordBatchReader, Arrow C
    stream), ``arrow-dataset``, ``hf-dataset`` or ``iterable``. ``str(source)`` names it in messages
    and row-number ids (``<stdin>``, ``<DataFrame>``, ``<generator>``, ...)."""

    def __init__(self, kind: str, obj=None, rows: int | None = None):
        self.kind, self.obj, self.rows = kind, obj, rows  # rows: known before reading, else None
        self.read: int | None = None  # rows read by a complete pass
        self.format: str | None = None  # stdin: the format it was read as
        self.stream: Iterator[bytes] | None = None  # stdin: its lines, while it is read

    def __str__(self) -> str:
        return "<stdin>" if self.kind == "stdin" else f"<{type(self.obj).__name__}>"

    def __repr__(self) -> str:
        return f"Source({self.kind!r}, {self})"

    def info(self) -> dict:
        """What the manifest records: kind, type, rows (when known) and, for stdin, the format."""
        if self.kind == "stdin":
            return {"kind": "stdin", "format": self.format}
        cls = type(self.obj)
        return {
            "kind": self.kind,
            "type": f"{cls.__module__.partition('.')[0]}.{cls.__qualname__}",
            "rows": self.rows if self.rows is not None else self.read,
        }


Input = Path | Source


_READ_ONCE: weakref.WeakSet = weakref.WeakSet()  # one-shot sources (generators, readers) already read


def _as_source(obj) -> Source | None:
    """The Source for an in-memory input (module docstring); None for a path, a glob, ``-`` or a list of those.

    Raises:
        InputError: for what is not a corpus (bytes, a dict, a set, an open file, a ``DatasetDict``, ...),
            saying what to pass instead, and for a one-shot source read before.
    """
    if isinstance(obj, (str, os.PathLike)):
        return None
    if isinstance(obj, (bytes, bytearray)):
        raise InputError(
            "inputs are bytes; pass a path (str), a list of paths, or decode the text and pass iter([text])"
        )
    module, name = type(obj).__module__.partition(".")[0], type(obj).__name__
    if module == "pandas" and hasattr(obj, "columns") and hasattr(obj, "iloc"):
        return Source("pandas", obj, len(obj))
    if module == "pyarrow":
        return _arrow_source(obj)
    if module == "datasets":
        if isinstance(obj, Mapping):
            raise InputError(f"a {name} holds splits ({', '.join(map(str, obj))}); pass one of them, e.g. ds['train']")
        if hasattr(obj, "with_format") and hasattr(obj, "iter"):
            return Source("hf-dataset", obj, len(obj) if isinstance(obj, Sized) else None)
    if isinstance(obj, Mapping):
        raise InputError(f"inputs are a {name}: one record, not a corpus; pass a list of dicts (or a DataFrame)")
    if isinstance(obj, (list, tuple)) and all(isinstance(x, (str, os.PathLike)) for x in obj):
        return None  # paths and globs
    if isinstance(obj, io.IOBase) or obj is sys.stdin:
        raise InputError("inputs are an open file; pass its path, or '-' for standard input")
    if hasattr(obj, "__arrow_c_stream__") and module != "pandas":  # polars, duckdb, ...
        return Source("arrow-stream", obj)
    if isinstance(obj, (set, frozenset)):
        raise InputError(f"inputs are a {name}, which has no order (ids would change from run to run); pass a list")
    if isinstance(obj, Iterable):
        _check_unread(obj)
        return Source("iterable", obj, len(obj) if isinstance(obj, Sized) else None)
    raise InputError(
        f"inputs of type {name} cannot be read as a corpus; pass files (paths or globs), '-' for "
        "stdin, a pandas DataFrame, a pyarrow Table/RecordBatchReader/dataset, a Hugging Face "
        "Dataset, or an iterable of dicts or of strings"
    )


def _arrow_source(obj) -> Source:
    import pyarrow as pa

    if isinstance(obj, (pa.Table, pa.RecordBatch)):
        return Source("arrow", obj, obj.num_rows)
    if isinstance(obj, pa.RecordBatchReader):
        _check_unread(obj)
        return Source("arrow-stream", obj)
    import pyarrow.dataset as pads

    if isinstance(obj, pads.Dataset):
        return Source("arrow-dataset", obj)
    raise InputError(
        f"a pyarrow {type(obj).__name__} is not a corpus; pass a Table, RecordBatch, "
        "RecordBatchReader or dataset (e.g. pa.table({'text': array}))"
    )


def _check_unread(obj) -> bool:
    """InputError for a one-shot source read before (it would read as empty, or from the middle);
    returns whether obj is one-shot (an iterator, a generator, an Arrow reader)."""
    if not (_is_arrow_reader(obj) or iter(obj) is obj):
        return False
    try:
        seen = obj in _READ_ONCE  # False for what takes no weak reference (a list iterator)
    except TypeError:  # unhashable
        seen = False
    if seen or (inspect.isgenerator(obj) and inspect.getgeneratorstate(obj) == inspect.GEN_CLOSED):
        raise InputError(
            f"this {type(obj).__name__} was read before and can be read only once; create a new "
            "one (a list, DataFrame or Table can be read again)"
        )
    return True


def _is_arrow_reader(obj) -> bool:
    return type(obj).__module__.partition(".")[0] == "pyarrow" and hasattr(obj, "read_next_batch")


def _mark_read(obj) -> None:
    """Remember that a one-shot source is being read (``_check_unread`` refuses it from now on)."""
    if _check_unread(obj):
        with contextlib.suppress(TypeError):  # not tracked: no weak references to it, or unhashable
            _READ_ONCE.add(obj)


def _read_source(src: Source, fields: Fields, on_bad: OnBad | None, prefix: str) -> Iterator[Doc]:
    """The documents of an in-memory source (any kind but ``stdin``), in its row order."""
    if src.kind == "iterable":
        yield from _read_items(src, fields, on_bad, prefix)
        return
    names, batches = _TABLES[src.kind](src.obj)
    if names is not None:
        _check_columns(src, fields, names, "")
    columns = _wanted(fields, names)
    if src.kind == "arrow-stream":
        _mark_read(src.obj)
    yield from _read_rows(src, batches(columns), fields, on_bad, prefix)


# kind -> (column names or None when unknown, columns -> (rows, {column: values}) batches)
def _pandas_table(df):
    return list(df.columns), lambda columns: _pandas_batches(df, columns)


def _arrow_table(table):
    return table.schema.names, lambda columns: _arrow_batches([table], columns)


def _arrow_stream(obj):
    if not _is_arrow_reader(obj):  # an __arrow_c_stream__ object: a new reader each time
        import pyarrow as pa

        obj = pa.RecordBatchReader.from_stream(obj)
    return obj.schema.names, lambda columns: _arrow_batches(obj, columns)


def _arrow_dataset(ds):
    return ds.schema.names, lambda columns: _arrow_batches(
        ds.to_batches(columns=columns, batch_size=BATCH_ROWS), columns
    )


def _hf_dataset(ds):
    """Through its public API, so its row order (select, shuffle, filter) is kept."""
    names = ds.column_names  # None for a streamed dataset whose columns are not known yet

    def batches(columns):
        part = ds.select_columns(columns) if names is not None else ds
        return _arrow_batches(part.with_format("arrow").iter(batch_size=BATCH_ROWS), columns)

    return names, batches


_TABLES = {
    "pandas": _pandas_table,
    "arrow": _arrow_table,
    "arrow-stream": _arrow_stream,
    "arrow-dataset": _arrow_dataset,
    "hf-dataset": _hf_dataset,
}


def _read_rows(
    src: Input, batches: Iterator[tuple[int, dict]], fields: Fields, on_bad: OnBad | None, prefix: str
) -> Iterator[Doc]:
    """Docs from (rows, {column: values}) batches; a row's id is its 1-based number when fields.id is None."""
    row = 0
    for n, cols in batches:
        for j in range(n):
            row += 1
            doc = _make_doc({c: v[j] for c, v in cols.items()}, fields, f"{src}: row {row}", on_bad, f"{prefix}{row}")
            if doc is not None:
                yield doc
    if isinstance(src, Source):
        src.read = row


def _arrow_batches(batches, columns: list) -> Iterator[tuple[int, dict]]:
    """Arrow tables / record batches -> (rows, {column: Python values}), BATCH_ROWS rows at a time."""
    for batch in batches:
        present = [c for c in columns if c in batch.schema.names]
        for start in range(0, batch.num_rows, BATCH_ROWS):
            part = batch.slice(start, BATCH_ROWS)
            yield part.num_rows, {c: part.column(c).to_pylist() for c in present}


def _pandas_batches(df, columns: list) -> Iterator[tuple[int, dict]]:
    """A DataFrame -> (rows, {column: Python values}), BATCH_ROWS rows at a time; NaN, None and NA are None."""
    names = list(df.columns)
    twice = [str(c) for c in columns if names.count(c) > 1]
    if twice:
        raise InputError(f"<{type(df).__name__}>: columns named twice ({', '.join(twice)}); rename them")
    for start in range(0, len(df), BATCH_ROWS):
        part = df.iloc[start : start + BATCH_ROWS]
        cols = {}
        for c in columns:
            values = part[c].tolist()
            for j, missing in enumerate(part[c].isna().tolist()):
                if missing:
                    values[j] = None
            cols[c] = values
        yield len(part), cols


def _read_items(src: Source, fields: Fields, on_bad: OnBad | None, prefix: str) -> Iterator[Doc]:
    """An iterable: a dict is a record, a string a document whose id is its row number."""
    _mark_read(src.obj)
    row = 0
    for row, item in enumerate(src.obj, 1):
        where, row_id = f"{src}: row {row}", f"{prefix}{row}"
        if isinstance(item, str):
            text = compose("", item)
            doc = Doc(row_id, text, "", where) if _encodable(text, where, on_bad) else None
        elif isinstance(item, Mapping):
            doc = _make_doc(item, fields, where, on_bad, row_id)
        else:
            _bad(
                on_bad,
                where,
                f"a {type(item).__name__} ({item!r:.40}), not a dict (a record) or a string (a document)",
                "pass an iterable of dicts or of strings",
            )
            doc = None
        if doc is not None:
            yield doc
    src.read = row
