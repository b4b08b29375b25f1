"""Corpus readers: files in, a stream of ``Doc`` out, in input order, one record at a time.

This is the engine's one reader of documents: ``embed encode``, ``embed eval``/``select``/``compare``,
the benchmark harness and ``embed demo`` all read records here, and all of them embed the string
``compose(title, text)`` builds.

Formats (chosen by file suffix; ``.gz`` is read through gzip):

* JSON lines (``.jsonl``, ``.ndjson``, ``.json``): one object per line, BEIR style
  ``{"_id": ..., "title": ..., "text": ...}``. Blank lines are skipped.
* CSV / TSV (``.csv``; ``.tsv``, ``.tab``): a header row names the columns (``csv`` module).
* Parquet (``.parquet``, ``.pq``): read in record batches with pyarrow (the ``corpus`` extra).
* Anything else is plain text: one document per line. Its id is the 1-based line number
  (``"7"``) when there is one input file, ``"<path>:<line>"`` (the path as given) when there are
  several. Blank lines are skipped; they keep their line numbers.

Fields (``Fields``): ``id`` (default ``_id``; None: the line number, as for plain text), ``text``
(``text``; a tuple of names takes the first one with a non-empty value), ``title`` (``title``;
None: no title) and ``extra`` (more fields to carry along in ``Doc.extra``, e.g. a label). Ids are
always strings (a JSON integer id 7 becomes ``"7"``).

The title+text rule, the one rule: the embedded text is ``(title + " " + text).strip()``
(``compose``; BEIR's own evaluation rule, with which the published SciFact figures were measured).
A plain text line is a record without a title: it is embedded stripped. An empty text is embedded
as sentence-transformers embeds ``""`` (just the special tokens). The embedding cache's key is
``text_key`` of that string.

Bad records (invalid JSON, a missing or null field, non-UTF-8 bytes, a text holding a lone
surrogate, a CSV row of the wrong width or with bad quoting) go to ``on_bad(where, message)``;
without a handler they raise ``InputError`` naming the file and line (``raise_on_bad``: the same,
without the ``--skip-bad`` hint). A file-level problem (a CSV/Parquet file without the text
column, a CSV field over ``CSV_FIELD_LIMIT``) always raises. Memory does not grow with the file:
only one line / one record / one record batch is held at a time (``read_documents`` returns a list).

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

import csv
import glob
import gzip
import hashlib
import json
import os
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..errors import InputError, missing_extra

SKIP_HINT = "or pass --skip-bad (skip_bad=True) to skip bad records and list them in OUTDIR/rejects.jsonl"
FORMATS = {
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
    ".csv": "csv", ".tsv": "tsv", ".tab": "tsv",
    ".parquet": "parquet", ".pq": "parquet",
}
PARQUET_BATCH = 4096
CSV_FIELD_LIMIT = 32 << 20   # characters in one CSV field (module docstring)
BOM = b"\xef\xbb\xbf"
GZIP_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile)   # what a damaged .gz raises while it is read
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
    where: str  # "path:line" (or "path: row n" for parquet), for messages
    extra: tuple = ()  # the values of Fields.extra, None where a record lacks the field

    @property
    def key(self) -> bytes:
        """``text_key(self.text)``: the embedding cache's content key."""
        return text_key(self.text)


@dataclass(frozen=True)
class Fields:
    """Which record fields hold the id, the text, the title and any extra values (module docstring)."""

    id: str | None = "_id"
    text: str | tuple[str, ...] = "text"
    title: str | None = "title"
    extra: tuple[str, ...] = ()

    @property
    def texts(self) -> tuple[str, ...]:
        return (self.text,) if isinstance(self.text, str) else tuple(self.text)


# Benchmark texts: no id needed, the text from the first non-empty of these fields.
ANY_TEXT = Fields(id=None, text=("text", "sentence", "body"))


def compose(title: str, text: str) -> str:
    """The text that is embedded: ``(title + " " + text).strip()``, BEIR's rule; the one rule."""
    return (title + " " + text).strip()


def raise_on_bad(where: str, message: str) -> None:
    """An ``on_bad`` that stops at the first bad record, for callers without a skip option."""
    raise InputError(f"{where}: {message}")


def read_documents(inputs: str | os.PathLike | Sequence[str | os.PathLike], fields: Fields = Fields()) -> list[Doc]:
    """Every document of the files (paths or globs), in order; a bad record raises ``InputError``."""
    return list(iter_documents(expand_inputs(inputs), fields, raise_on_bad))


def read_sample(name: str = "sample_corpus.jsonl", fields: Fields = Fields()) -> list[Doc]:
    """A data file packaged with the engine (``engine/data``): ``sample_corpus.jsonl`` (200 docs,
    20 topics of 10: d001-d010 is topic 1, ...) or ``sample_queries.jsonl`` (with ``relevant`` ids)."""
    with resources.as_file(resources.files("engine").joinpath("data", name)) as path:
        return read_documents(path, fields)


def detect_format(path: str | os.PathLike) -> str:
    name = str(path).lower()
    name = name.removesuffix(".gz")
    return FORMATS.get(os.path.splitext(name)[1], "text")


def expand_inputs(inputs: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """Paths and globs -> existing files, in the order given (a glob's matches sorted by name)."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    out: list[Path] = []
    seen: set[str] = set()
    for item in inputs:
        s = os.fspath(item)
        if os.path.exists(s):
            matches = [s]
        elif glob.has_magic(s):
            matches = sorted(glob.glob(s, recursive=True))
            if not matches:
                raise InputError(f"no files match {s!r}; check the pattern (quote it so the shell does not expand it)")
        else:
            raise InputError(f"input file {s!r} does not exist")
        for m in matches:
            if os.path.isdir(m):
                raise InputError(f"{m} is a directory; pass files or a glob such as '{m}/*.jsonl'")
            real = os.path.realpath(m)
            if real not in seen:  # the same file named twice (e.g. a glob and a path) is read once
                seen.add(real)
                out.append(Path(m))
    if not out:
        raise InputError("no input files given")
    return out


def iter_documents(paths: Sequence[Path], fields: Fields = Fields(), on_bad: OnBad | None = None) -> Iterator[Doc]:
    """Every document of every file, in order."""
    several = len(paths) > 1
    for path in paths:
        fmt = detect_format(path)
        prefix = f"{path}:" if several else ""  # of line-number ids
        if fmt == "jsonl":
            yield from _read_jsonl(path, fields, on_bad, prefix)
        elif fmt in ("csv", "tsv"):
            yield from _read_csv(path, fields, on_bad, prefix, delimiter="\t" if fmt == "tsv" else ",")
        elif fmt == "parquet":
            yield from _read_parquet(path, fields, on_bad, prefix)
        else:
            yield from _read_text(path, on_bad, prefix)


def count_records(paths: Sequence[Path]) -> int | None:
    """A quick upper bound of the number of documents (newlines; parquet metadata), or None.

    Used only for the progress bar's total; gzip files are not counted (None).
    """
    total = 0
    for path in paths:
        fmt = detect_format(path)
        if str(path).lower().endswith(".gz"):
            return None
        if fmt == "parquet":
            try:
                import pyarrow.parquet as pq
            except ImportError:
                return None
            total += pq.ParquetFile(path).metadata.num_rows
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
def _open(path: Path):
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
                _bad(on_bad, f"{path}:{lineno + 1}", f"damaged gzip data ({e}; {read}{rest})",
                     "the file is truncated or not gzip data: check it with gzip -t and compress it again, "
                     "or remove the .gz suffix if it is not compressed")
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
            f"not valid UTF-8 (byte offset {offset + e.start} in the file: {raw[e.start:e.start + 4]!r})")


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
        _bad(on_bad, where, f"field '{name}' is {type(value).__name__} ({value!r:.40}), not a string",
             f"choose another field with {flag}")
    return None


def _id_value(value, name: str, where: str, on_bad: OnBad | None) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        if value is None:
            _bad(on_bad, where, f"id field '{name}' is null", "give every record an id")
        else:
            _bad(on_bad, where, f"id field '{name}' is {type(value).__name__} ({value!r:.40}); ids must be strings "
                 "or integers", "choose another field with --id-field")
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
    for role, shown, found in (("id", fields.id, fields.id is None or fields.id in record),
                               ("text", _either(fields.texts), text_name is not None)):
        if not found:
            available = ", ".join(map(str, record)) or "none"
            _bad(on_bad, where, f"no {role} field '{shown}' (fields: {available})",
                 f"name the {role} field with --{role}-field")
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
    try:
        full.encode("utf-8")
    except UnicodeEncodeError as e:  # a JSON "\ud800" escape: a lone surrogate, not text
        _bad(on_bad, where, f"text holds an invalid character (a lone surrogate at {e.start})",
             "remove the \\ud800-style escape")
        return None
    return Doc(doc_id, full, title, where, tuple(record.get(n) for n in fields.extra))


def _check_columns(path: Path, fields: Fields, columns: list[str], what: str) -> None:
    """A CSV header or Parquet schema must hold the id column (if any) and a text column."""
    for role, names, flag in (("id", (fields.id,) if fields.id else (), "--id-field"),
                              ("text", fields.texts, "--text-field")):
        if names and not any(n in columns for n in names):
            raise InputError(f"{path}: no {role} column '{_either(names)}'{what} (columns: {', '.join(columns)}); "
                             f"name it with {flag}")


# -- formats ----------------------------------------------------------------------------------
def _read_jsonl(path: Path, fields: Fields, on_bad: OnBad | None, prefix: str) -> Iterator[Doc]:
    for lineno, line in _lines(path, on_bad):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            hint = "a JSON array file is not JSON lines; write one object per line" if line.lstrip().startswith("[") \
                else "fix or remove the line"
            _bad(on_bad, where, f"invalid JSON ({e.msg} at column {e.colno})", hint)
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
        self.damaged = False       # a damaged gzip stream ended the file (reported by _raw_lines)
        self._again: deque[tuple[int, str, str | None]] = deque()
        self.record: list[tuple[int, str, str | None]] = []   # (line number, text, UTF-8 error) of the record
        self.last = 0              # the number of the last line handed out
        self.exhausted = False     # the file ran out while a record was being read

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
                return   # the damage is reported; this record was cut by it
            if "field limit" in str(e):
                raise InputError(f"{where}: a field longer than {CSV_FIELD_LIMIT:,} characters starts in this record: "
                                 "a quote left open, most likely; fix the quoting (a quote inside a quoted field is "
                                 'written twice: "")') from None
            if lines.exhausted:   # a quote left open ran to the end of the file
                _bad(on_bad, where, f"unterminated quote: a quoted field of this record is never closed (it runs "
                     f"to the end of the file, line {lines.last})",
                     'close the quote (a quote inside a quoted field is written twice: "")')
                lines.read_again()
                reader = csv.reader(lines, delimiter=delimiter, strict=True)
            else:
                at = f" at line {lines.last}" if lines.last != start else ""
                _bad(on_bad, where, f"malformed CSV ({e}{at})",
                     'fix the quoting (a quoted field ends with a quote and then the delimiter; a quote inside '
                     'it is written twice: "")')
            continue
        where, line_id = f"{path}:{start}", f"{prefix}{start}"
        error = next((f"line {n} is {error}" for n, _, error in lines.record if error), None)
        if error:
            _bad(on_bad, where, error, UTF8_HINT)
            continue
        if not row:
            continue  # a blank line
        if len(row) != len(header):
            _bad(on_bad, where, f"row has {len(row)} fields, the header has {len(header)}",
                 "fix the quoting or the delimiter")
            continue
        doc = _make_doc(dict(zip(header, row)), fields, where, on_bad, line_id)
        if doc is not None:
            yield doc


def _read_parquet(path: Path, fields: Fields, on_bad: OnBad | None, prefix: str) -> Iterator[Doc]:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise missing_extra("pyarrow", "corpus") from e
    pf = pq.ParquetFile(path)
    names = pf.schema_arrow.names
    _check_columns(path, fields, names, "")
    wanted = [fields.id, *fields.texts, fields.title, *fields.extra]
    columns = [n for n in dict.fromkeys(wanted) if n and n in names]
    row = 0
    for batch in pf.iter_batches(batch_size=PARQUET_BATCH, columns=columns):
        cols = {name: batch.column(i).to_pylist() for i, name in enumerate(batch.schema.names)}
        for j in range(batch.num_rows):
            row += 1
            doc = _make_doc({c: v[j] for c, v in cols.items()}, fields, f"{path}: row {row}", on_bad, f"{prefix}{row}")
            if doc is not None:
                yield doc


def _read_text(path: Path, on_bad: OnBad | None, prefix: str) -> Iterator[Doc]:
    for lineno, line in _lines(path, on_bad):
        if line.strip():
            yield Doc(f"{prefix}{lineno}", compose("", line), "", f"{path}:{lineno}")
