"""Corpus readers: files and in-memory sources in, a stream of ``Doc`` out, in input order, one record at a time.

This is the engine's one reader of documents: ``embed encode``, ``embed eval``/``select``/``compare``,
the benchmark harness and ``embed demo`` all read records here, and all of them embed the string
``compose(title, text)`` builds.

Files (the format chosen by file suffix, or forced with ``format=`` / ``--format``; ``.gz`` is read
through gzip):

* JSON lines (``.jsonl``, ``.ndjson``, ``.json``): one object per line, BEIR style
  ``{"_id": ..., "title": ..., "text": ...}``. Blank lines are skipped.
* CSV / TSV (``.csv``; ``.tsv``, ``.tab``): a header row names the columns (``csv`` module).
* Parquet (``.parquet``, ``.pq``): read in record batches with pyarrow (the ``corpus`` extra).
* Plain text (``.txt``): one document per line. Blank lines are skipped; they keep their line numbers.
* Any other suffix, or none, is an error naming the file and these types (an ``.xlsx`` file is not
  text): rename the file or force a format. ``-`` is standard input (once): JSON lines when its
  first non-blank line starts with ``{``, else plain text, unless a format is forced (csv, tsv;
  not parquet, which needs a seekable file; compressed input: pipe it through ``zcat``).

Sources besides files (``expand_inputs`` tells them apart by type, importing nothing: pandas and
pyarrow are imported only when such an object is passed), read in batches of ``BATCH_ROWS`` rows:

* a pandas ``DataFrame`` (missing values, NaN and None alike, are null);
* a pyarrow ``Table`` or ``RecordBatch``, a ``RecordBatchReader``, a ``pyarrow.dataset.Dataset``, or
  any object with ``__arrow_c_stream__`` (a polars DataFrame, ...);
* a Hugging Face ``datasets.Dataset`` or ``IterableDataset`` (duck-typed: ``datasets`` is never
  imported here; its row order, ``select``/``shuffle`` included, is kept);
* any other iterable (a generator, a list of dicts, a pandas Series): each item is a record (a
  dict, read like a JSON object) or a document (a string, read like a plain text line, but an
  empty one is kept and embedded as ``""``). A list or tuple of strings or paths is a list of
  files, as always: to embed a list of strings, pass ``iter(texts)``. A dict, a set, an open file
  and a ``DatasetDict`` are errors that say what to pass instead. A one-shot source (a generator,
  an iterator, a ``RecordBatchReader``) can be read once: passing it again is an error, not an
  empty corpus.

Fields (``Fields``): ``id`` (default ``_id``; None or ``""``: the row number, see Ids), ``text``
(``text``; a tuple of names takes the first one with a non-empty value), ``title`` (``title``;
None or ``""``: no title) and ``extra`` (more fields to carry along in ``Doc.extra``, e.g. a label).
Ids are always strings (a JSON integer id 7 becomes ``"7"``).

Ids from row numbers: a record without an id field is an error unless the id field is None
(``--id-field ''``); then a record's id is its 1-based number: the line where it starts in a JSON
lines, CSV or text file (the header is line 1, so a CSV's first record is ``"2"``), the row in a
Parquet file, table, DataFrame (its position, not its index: ``df.reset_index()`` and
``id_field="index"`` for that) or iterable. Sources without fields, plain text and strings, always
take row numbers. With several inputs such an id is ``"<input>:<number>"`` (the path as given, or
``<stdin>``), so ids stay unique.

Messages name the file and line (``path:7``), or the source and row (``<DataFrame>: row 7``,
``<stdin>:7``, ``<generator>: row 7``, ``path: row 7`` for Parquet).

The title+text rule, the one rule: the embedded text is ``(title + " " + text).strip()``
(``compose``; BEIR's own evaluation rule, with which the published SciFact figures were measured).
A plain text line is a record without a title: it is embedded stripped. An empty text is embedded
as sentence-transformers embeds ``""`` (just the special tokens). The embedding cache's key is
``text_key`` of that string.

Bad records (invalid JSON, a missing or null field, non-UTF-8 bytes, a text holding a lone
surrogate, a CSV row of the wrong width or with bad quoting) go to ``on_bad(where, message)``;
without a handler they raise ``InputError`` naming the file and line (``raise_on_bad``: the same,
without the ``--skip-bad`` hint); the same holds for a row of a DataFrame, table or iterable (an
item that is neither a dict nor a string, a non-string text, ...). A source-level problem (a file
or table without the text column, a CSV field over ``CSV_FIELD_LIMIT``) always raises. Memory does
not grow with the input: only one line / one record / one batch of rows is held at a time
(``read_documents`` returns a list).

CSV quoting is strict (``csv.reader(strict=True)``): a quoted field must be closed and followed by
the delimiter, so a stray quote is an error at the record where it starts instead of rows merged
in silence. A quote left open runs to the end of the file: that record (named by the line where it
starts) is bad; with ``on_bad`` it is reported and the lines after its first are read again as
records, so one stray quote costs one record. A field longer than ``CSV_FIELD_LIMIT`` (32 MiB; a
document is never that long, a quote left open in a large file is) always raises: where such a
field ends cannot be known, and a record is held in memory while it is read. The reader sets the
``csv`` module's process-wide ``csv.field_size_limit`` to ``CSV_FIELD_LIMIT``.

A damaged compressed stream (a truncated ``.gz``, or a ``.gz`` file that is not gzip data) cannot be
resynchronised: the lines read before the damage are kept, the damage is one bad record at the
line it was reached (``path:N``, whose message says how many lines were read), and the rest of that
file is skipped; the next file is read as usual. Without ``on_bad`` it raises ``InputError``.
gzip checks its CRC only at the end of a stream: bytes flipped inside one can first decompress to
wrong lines (bad records of their own, mostly), before the damage is reported.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import gzip
import hashlib
import inspect
import io
import itertools
import json
import os
import sys
import weakref
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Sized
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..errors import InputError, missing_extra

SKIP_HINT = "or pass --skip-bad (skip_bad=True) to skip bad records and list them in OUTDIR/rejects.jsonl"
FORMATS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".txt": "text",
}
FORMAT_NAMES = ("jsonl", "csv", "tsv", "text", "parquet")  # what format= / --format takes
SUPPORTED = (
    ".jsonl/.ndjson/.json (JSON lines), .csv, .tsv/.tab, .parquet/.pq and .txt (one document per line), each also .gz"
)
BATCH_ROWS = 4096  # rows per batch read from Parquet, Arrow, DataFrames and datasets
CSV_FIELD_LIMIT = 32 << 20  # characters in one CSV field (module docstring)
BOM = b"\xef\xbb\xbf"
GZIP_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile)  # what a damaged .gz raises while it is read
ID_HINT = "--id-field '' (id_field=None) for row numbers"
OnBad = Callable[[str, str], None]


def text_key(text: str) -> bytes:
    """sha256 of the exact text (UTF-8, lone surrogates kept): the embedding cache's content key."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


@dataclass(frozen=True, slots=True)
class Doc:
    """One document: its id, the text to embed, its title ('' if none) and where it came from."""

    id: str
    text: str
    title: str
    where: str  # "path:line", "path: row n" (parquet), "<DataFrame>: row n", ..., for messages
    extra: tuple = ()  # the values of Fields.extra, None where a record lacks the field

    @property
    def key(self) -> bytes:
        """``text_key(self.text)``: the embedding cache's content key."""
        return text_key(self.text)


@dataclass(frozen=True)
class Fields:
    """Which record fields hold the id, the text, the title and any extra values (module docstring).

    An id or title of ``""`` is None: row numbers as ids, no title.
    """

    id: str | None = "_id"
    text: str | tuple[str, ...] = "text"
    title: str | None = "title"
    extra: tuple[str, ...] = ()

    def __post_init__(self):
        for name in ("id", "title"):
            if getattr(self, name) == "":
                object.__setattr__(self, name, None)

    @property
    def texts(self) -> tuple[str, ...]:
        return (self.text,) if isinstance(self.text, str) else tuple(self.text)


# Benchmark texts: no id needed, the text from the first non-empty of these fields.
ANY_TEXT = Fields(id=None, text=("text", "sentence", "body"))


class Source:
    """An input that is not a file (module docstring), made by ``expand_inputs``. kind: ``stdin``,
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


def compose(title: str, text: str) -> str:
    """The text that is embedded: ``(title + " " + text).strip()``, BEIR's rule; the one rule."""
    return (title + " " + text).strip()


def display_text(s: str) -> str:
    """``s`` as valid UTF-8 text: the bytes of a file name that is not UTF-8 (PEP 383's lone
    surrogates) as ``\\xNN`` escapes; any other lone surrogate as ``\\udNNN``."""
    try:
        return s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return s.encode("utf-8", "backslashreplace").decode("utf-8")


def display_name(src) -> str:
    """A file's name for ids and messages (``display_text`` of its path); other sources as ``str``."""
    return display_text(os.fsdecode(src)) if isinstance(src, (str, os.PathLike)) else str(src)


def raise_on_bad(where: str, message: str) -> None:
    """An ``on_bad`` that stops at the first bad record, for callers without a skip option."""
    raise InputError(f"{where}: {message}")


def read_documents(inputs, fields: Fields = Fields(), format: str | None = None) -> list[Doc]:
    """Every document of the inputs (files, globs or a source, see ``expand_inputs``), in order;
    a bad record raises ``InputError``."""
    return list(iter_documents(expand_inputs(inputs, format), fields, raise_on_bad, format))


def read_sample(name: str = "sample_corpus.jsonl", fields: Fields = Fields()) -> list[Doc]:
    """A data file packaged with the engine (``engine/data``): ``sample_corpus.jsonl`` (200 docs,
    20 topics of 10: d001-d010 is topic 1, ...) or ``sample_queries.jsonl`` (with ``relevant`` ids)."""
    with resources.as_file(resources.files("engine").joinpath("data", name)) as path:
        return read_documents(path, fields)


def detect_format(path: str | os.PathLike, format: str | None = None) -> str:
    """The format a file is read as: ``format`` when given, else from its suffix (``.gz`` aside);
    InputError for a suffix the reader does not know, or none."""
    if format is not None:
        return _check_format(format)
    name = os.path.basename(str(path).lower()).removesuffix(".gz")
    ext = os.path.splitext(name)[1]
    if ext in FORMATS:
        return FORMATS[ext]
    force = f"or pass --format {'|'.join(FORMAT_NAMES)} (format=...) to read it as one of them"
    if not ext:
        raise InputError(
            f"{path} has no file extension, so its format is unknown; embed reads {SUPPORTED}. Rename it, {force}"
        )
    raise InputError(
        f"{path}: unknown file type '{ext}'; embed reads {SUPPORTED}. Convert it (a spreadsheet: "
        f"save it as CSV, or read it with pandas and pass the DataFrame), {force}"
    )


def _check_format(format: str) -> str:
    if format not in FORMAT_NAMES:
        raise InputError(f"unknown format {format!r}; choose one of {', '.join(FORMAT_NAMES)}")
    return format


def expand_inputs(inputs, format: str | None = None) -> list[Input]:
    """Inputs -> what ``iter_documents`` reads: existing files (paths and globs, in the order
    given, a glob's matches sorted by name; ``-`` is stdin) or one in-memory source (module
    docstring). InputError for a missing file, an unknown file type (unless ``format`` forces one)
    and anything that is not a corpus."""
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


def _matches(s: str) -> list[str]:
    """The existing file s, or a glob's matches sorted by name."""
    if os.path.exists(s):
        return [s]
    if glob.has_magic(s):
        matches = sorted(glob.glob(s, recursive=True))
        if not matches:
            raise InputError(f"no files match {s!r}; check the pattern (quote it so the shell does not expand it)")
        return matches
    texts = (
        " (a list of strings is a list of file names: to embed the strings themselves, pass iter(texts))"
        if any(c.isspace() for c in s)
        else ""
    )
    raise InputError(f"input file {s!r} does not exist{texts}")


_READ_ONCE: weakref.WeakSet = weakref.WeakSet()  # one-shot sources (generators, readers) already read


def _as_source(obj) -> Source | None:
    """The Source for an in-memory input; None for a path, a glob, ``-`` or a list of those."""
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


def iter_documents(
    inputs: Sequence[Input], fields: Fields = Fields(), on_bad: OnBad | None = None, format: str | None = None
) -> Iterator[Doc]:
    """Every document of every input (``expand_inputs``' files and sources), in order.

    format: read every file (and stdin) as this format (``FORMAT_NAMES``) instead of by suffix.
    """
    several = len(inputs) > 1
    for src in inputs:
        # of row-number ids; a file name that is not UTF-8 (PEP 383 surrogates) is spelled with \x escapes,
        # so ids stay valid UTF-8 (sidecars, Parquet, index files, SQLite)
        prefix = f"{display_name(src)}:" if several else ""
        if isinstance(src, Source):
            yield from _read_source(src, fields, on_bad, prefix, format)
            continue
        yield from _read_file(src, detect_format(src, format), fields, on_bad, prefix)


def _read_file(path, fmt: str, fields: Fields, on_bad: OnBad | None, prefix: str) -> Iterator[Doc]:
    """One file (or stdin, a Source whose ``stream`` is set) in a line format, or a Parquet file."""
    if fmt == "jsonl":
        yield from _read_jsonl(path, fields, on_bad, prefix)
    elif fmt in ("csv", "tsv"):
        yield from _read_csv(path, fields, on_bad, prefix, delimiter="\t" if fmt == "tsv" else ",")
    elif fmt == "parquet":
        yield from _read_parquet(path, fields, on_bad, prefix)
    else:
        yield from _read_text(path, on_bad, prefix)


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


# -- helpers ----------------------------------------------------------------------------------
def _open(path: Input):
    if isinstance(path, Source):  # stdin: its lines, the ones read to detect its format first
        return contextlib.nullcontext(path.stream)
    return gzip.open(path, "rb") if str(path).lower().endswith(".gz") else open(path, "rb")


def _bad(on_bad: OnBad | None, where: str, message: str, hint: str = "") -> None:
    if on_bad is None or on_bad is raise_on_bad:
        hint = hint or "fix the record"
        skip = f", {SKIP_HINT}" if on_bad is None else ""
        raise InputError(f"{where}: {message}. {hint[0].upper()}{hint[1:]}{skip}.")
    on_bad(where, message)


def _raw_lines(path: Path, on_bad: OnBad | None) -> Iterator[tuple[int, bytes, int]]:
    """(line number, bytes of the line, its byte offset in the file), the byte order mark dropped.

    A damaged gzip stream is a bad record at the line reached; the rest of the file is skipped.
    """
    lineno = offset = 0
    with _open(path) as f:
        lines = iter(f)
        while True:
            try:
                raw = next(lines)
            except StopIteration:
                return
            except GZIP_ERRORS as e:
                read = f"lines 1-{lineno} were read" if lineno else "nothing was read"
                rest = "" if on_bad in (None, raise_on_bad) else ", the rest of the file is skipped"
                _bad(
                    on_bad,
                    f"{path}:{lineno + 1}",
                    f"damaged gzip data ({e}; {read}{rest})",
                    "the file is truncated or not gzip data: check it with gzip -t and compress it again, "
                    "or remove the .gz suffix if it is not compressed",
                )
                return
            lineno += 1
            start, offset = offset, offset + len(raw)
            if lineno == 1 and raw.startswith(BOM):
                raw, start = raw[3:], 3
            yield lineno, raw, start


def _decode(raw: bytes, offset: int) -> tuple[str, str | None]:
    """(the line decoded, None) or (the line with U+FFFD replacements, why it is not valid UTF-8)."""
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as e:
        return raw.decode("utf-8", "replace"), (
            f"not valid UTF-8 (byte offset {offset + e.start} in the file: {raw[e.start : e.start + 4]!r})"
        )


UTF8_HINT = "re-encode the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)"


def _lines(path: Path, on_bad: OnBad | None) -> Iterator[tuple[int, str]]:
    """(line number, decoded line without its newline); non-UTF-8 lines go to on_bad."""
    for lineno, raw, offset in _raw_lines(path, on_bad):
        line, error = _decode(raw, offset)
        if error:
            _bad(on_bad, f"{path}:{lineno}", error, UTF8_HINT)
            continue
        yield lineno, line.rstrip("\r\n")


def _text_value(value, name: str, where: str, on_bad: OnBad | None, flag: str) -> str | None:
    if isinstance(value, str):
        return value
    if value is None:
        _bad(on_bad, where, f"field '{name}' is null", f"fill it in or choose another field with {flag}")
    else:
        _bad(
            on_bad,
            where,
            f"field '{name}' is {type(value).__name__} ({value!r:.40}), not a string",
            f"choose another field with {flag}",
        )
    return None


def _id_value(value, name: str, where: str, on_bad: OnBad | None) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        if value is None:
            _bad(on_bad, where, f"id field '{name}' is null", "give every record an id")
        else:
            _bad(
                on_bad,
                where,
                f"id field '{name}' is {type(value).__name__} ({value!r:.40}); ids must be strings or integers",
                "choose another field with --id-field",
            )
        return None
    s = str(value)
    if not s:
        _bad(on_bad, where, f"id field '{name}' is empty", "give every record an id")
        return None
    if not s.isascii():
        try:
            s.encode("utf-8")
        except UnicodeEncodeError:
            _bad(on_bad, where, f"id {s!r} holds a lone surrogate (a \\ud800-style JSON escape)", "fix the id")
            return None
    return s


def _either(names: Sequence[str]) -> str:
    return "' or '".join(names)


def _text_name(record: dict, names: tuple[str, ...]) -> str | None:
    """The first of ``names`` with a non-empty value, else the first present, else None."""
    present = [n for n in names if n in record]
    return next((n for n in present if isinstance(record[n], str) and record[n]), present[0] if present else None)


def _make_doc(record: dict, fields: Fields, where: str, on_bad: OnBad | None, line_id: str) -> Doc | None:
    """A Doc from a mapping (JSON object or CSV row), or None after reporting a bad record.

    ``line_id`` is the id when ``fields.id`` is None.
    """
    text_name = _text_name(record, fields.texts)
    for role, shown, found in (
        ("id", fields.id, fields.id is None or fields.id in record),
        ("text", _either(fields.texts), text_name is not None),
    ):
        if not found:
            available = ", ".join(map(str, record)) or "none"
            _bad(
                on_bad,
                where,
                f"no {role} field '{shown}' (fields: {available})",
                f"name the {role} field with --{role}-field" + (f", or pass {ID_HINT}" if role == "id" else ""),
            )
            return None
    doc_id = line_id if fields.id is None else _id_value(record[fields.id], fields.id, where, on_bad)
    text = _text_value(record[text_name], text_name, where, on_bad, "--text-field")
    if doc_id is None or text is None:
        return None
    title = record.get(fields.title) if fields.title else None
    if title is not None and not isinstance(title, str):
        title = _text_value(title, fields.title, where, on_bad, "--title-field")
        if title is None:
            return None
    title = title or ""
    full = compose(title, text)
    if not _encodable(full, where, on_bad):
        return None
    return Doc(doc_id, full, title, where, tuple(record.get(n) for n in fields.extra))


def _encodable(text: str, where: str, on_bad: OnBad | None) -> bool:
    """False (after reporting a bad record) for a text holding a lone surrogate, which no
    tokenizer takes: a JSON "\\ud800" escape, or a Python string holding one."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        _bad(
            on_bad,
            where,
            f"text holds an invalid character (a lone surrogate at {e.start})",
            "remove the \\ud800-style escape",
        )
        return False
    return True


def _check_columns(path: Input, fields: Fields, columns: list, what: str) -> None:
    """A CSV header, Parquet/Arrow schema or DataFrame must hold the id column (if any) and a text column."""
    for role, names, flag in (
        ("id", (fields.id,) if fields.id else (), "--id-field"),
        ("text", fields.texts, "--text-field"),
    ):
        if names and not any(n in columns for n in names):
            hint = f"name it with {flag}" + (f", or pass {ID_HINT}" if role == "id" else "")
            raise InputError(
                f"{path}: no {role} column '{_either(names)}'{what} "
                f"(columns: {', '.join(map(str, columns)) or 'none'}); {hint}"
            )


def _wanted(fields: Fields, names: list | None) -> list:
    """The columns of ``names`` (all when None) that a record needs: id, texts, title, extras."""
    wanted = dict.fromkeys([fields.id, *fields.texts, fields.title, *fields.extra])
    return [n for n in wanted if n and (names is None or n in names)]


# -- formats ----------------------------------------------------------------------------------
def _read_jsonl(path: Path, fields: Fields, on_bad: OnBad | None, prefix: str) -> Iterator[Doc]:
    for lineno, line in _lines(path, on_bad):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            hint = (
                "a JSON array file is not JSON lines; write one object per line"
                if line.lstrip().startswith("[")
                else "fix or remove the line"
            )
            _bad(on_bad, where, f"invalid JSON ({e.msg} at column {e.colno})", hint)
            continue
        except RecursionError:
            _bad(on_bad, where, "a JSON value nested too deep to read", "fix or remove the line")
            continue
        except Exception as e:  # any other parser failure, e.g. a number of more than 4300 digits
            _bad(on_bad, where, f"unreadable JSON ({type(e).__name__}: {str(e)[:200]})", "fix or remove the line")
            continue
        if not isinstance(record, dict):
            _bad(on_bad, where, f"a JSON {type(record).__name__}, not an object", "write one object per line")
            continue
        doc = _make_doc(record, fields, where, on_bad, f"{prefix}{lineno}")
        if doc is not None:
            yield doc


class _CsvLines:
    """The decoded lines of a CSV file for ``csv.reader``, keeping those of the record being read
    (bounded by CSV_FIELD_LIMIT), so that the lines a quote left open swallowed can be read again."""

    def __init__(self, path: Path, on_bad: OnBad | None):
        def damaged(where: str, message: str) -> None:
            self.damaged = True
            on_bad(where, message)

        self._raw = _raw_lines(path, on_bad if on_bad in (None, raise_on_bad) else damaged)
        self.damaged = False  # a damaged gzip stream ended the file (reported by _raw_lines)
        self._again: deque[tuple[int, str, str | None]] = deque()
        self.record: list[tuple[int, str, str | None]] = []  # (line number, text, UTF-8 error) of the record
        self.last = 0  # the number of the last line handed out
        self.exhausted = False  # the file ran out while a record was being read

    def __iter__(self):
        return self

    def __next__(self) -> str:
        if self._again:
            line = self._again.popleft()
        else:
            try:
                n, raw, offset = next(self._raw)
            except StopIteration:
                self.exhausted = True
                raise
            line = (n, *_decode(raw, offset))
        self.record.append(line)
        self.last = line[0]
        return line[1]

    def next_record(self) -> int:
        """Start a record; returns the line number it starts at."""
        self.record.clear()
        return self.last + 1

    def read_again(self) -> None:
        """Hand out the current record's lines after its first one again."""
        self._again.extendleft(reversed(self.record[1:]))
        self.last = self.record[0][0]
        self.exhausted = False


def _read_csv(path: Path, fields: Fields, on_bad: OnBad | None, prefix: str, delimiter: str) -> Iterator[Doc]:
    csv.field_size_limit(CSV_FIELD_LIMIT)  # deliberately: see the module docstring
    lines = _CsvLines(path, on_bad)
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as e:
        raise InputError(f"{path}:1: cannot read the header row ({e}); fix the quoting") from None
    bad = [f"line {n} is {error}" for n, _, error in lines.record if error]
    if bad:
        raise InputError(f"{path}: header {bad[0]}; re-encode the file as UTF-8")
    _check_columns(path, fields, header, " in the header")
    while True:
        start = lines.next_record()
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            where = f"{path}:{start}"
            if lines.damaged:
                return  # the damage is reported; this record was cut by it
            if "field limit" in str(e):
                raise InputError(
                    f"{where}: a field longer than {CSV_FIELD_LIMIT:,} characters starts in this record: "
                    "a quote left open, most likely; fix the quoting (a quote inside a quoted field is "
                    'written twice: "")'
                ) from None
            if lines.exhausted:  # a quote left open ran to the end of the file
                _bad(
                    on_bad,
                    where,
                    f"unterminated quote: a quoted field of this record is never closed (it runs "
                    f"to the end of the file, line {lines.last})",
                    'close the quote (a quote inside a quoted field is written twice: "")',
                )
                lines.read_again()
                reader = csv.reader(lines, delimiter=delimiter, strict=True)
            else:
                at = f" at line {lines.last}" if lines.last != start else ""
                _bad(
                    on_bad,
                    where,
                    f"malformed CSV ({e}{at})",
                    "fix the quoting (a quoted field ends with a quote and then the delimiter; a quote inside "
                    'it is written twice: "")',
                )
            continue
        where, line_id = f"{path}:{start}", f"{prefix}{start}"
        error = next((f"line {n} is {error}" for n, _, error in lines.record if error), None)
        if error:
            _bad(on_bad, where, error, UTF8_HINT)
            continue
        if not row:
            continue  # a blank line
        if len(row) != len(header):
            _bad(
                on_bad,
                where,
                f"row has {len(row)} fields, the header has {len(header)}",
                "fix the quoting or the delimiter",
            )
            continue
        doc = _make_doc(dict(zip(header, row)), fields, where, on_bad, line_id)
        if doc is not None:
            yield doc


def _read_parquet(path: Path, fields: Fields, on_bad: OnBad | None, prefix: str) -> Iterator[Doc]:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise missing_extra("pyarrow", "corpus") from e
    import pyarrow as pa

    def damaged(e: Exception) -> InputError:
        return InputError(
            f"{path}: not a readable Parquet file ({e}); check that the file is complete (e.g. "
            "re-download or re-export it), or pass --format if it is another format"
        )

    try:
        pf = pq.ParquetFile(path)
        names = pf.schema_arrow.names
    except (pa.ArrowException, OSError) as e:
        raise damaged(e) from None
    _check_columns(path, fields, names, "")
    columns = _wanted(fields, names)

    def batches():
        it = pf.iter_batches(batch_size=BATCH_ROWS, columns=columns)
        while True:
            try:
                batch = next(it)
                batch.validate(full=True)  # e.g. strings that are not UTF-8 (a damaged page that decoded)
            except StopIteration:
                return
            except (pa.ArrowException, OSError) as e:  # a damaged page or column chunk
                raise damaged(e) from None
            yield batch

    yield from _read_rows(path, _arrow_batches(batches(), columns), fields, on_bad, prefix)


def _read_text(path: Path, on_bad: OnBad | None, prefix: str) -> Iterator[Doc]:
    for lineno, line in _lines(path, on_bad):
        if line.strip():
            yield Doc(f"{prefix}{lineno}", compose("", line), "", f"{path}:{lineno}")


# -- sources ----------------------------------------------------------------------------------
def _read_source(src: Source, fields: Fields, on_bad: OnBad | None, prefix: str, format: str | None) -> Iterator[Doc]:
    if src.kind == "stdin":
        yield from _read_stdin(src, fields, on_bad, prefix, format)
        return
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


def _read_stdin(src: Source, fields: Fields, on_bad: OnBad | None, prefix: str, format: str | None) -> Iterator[Doc]:
    """Standard input as JSON lines or text (detected from its first non-blank line) or a forced format."""
    stdin = sys.stdin
    if stdin is None:
        raise InputError("there is no standard input to read (-)")
    stream = iter(stdin.buffer) if hasattr(stdin, "buffer") else (line.encode("utf-8") for line in stdin)
    fmt = format
    if fmt is None:
        head: list[bytes] = []
        for raw in stream:
            head.append(raw)
            if raw.removeprefix(BOM).strip():
                break
        fmt = "jsonl" if head and head[-1].removeprefix(BOM).lstrip().startswith(b"{") else "text"
        stream = itertools.chain(head, stream)
    src.format, src.stream = fmt, stream
    try:
        yield from _read_file(src, fmt, fields, on_bad, prefix)
    finally:
        src.stream = None
