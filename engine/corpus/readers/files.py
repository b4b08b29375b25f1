"""Files: paths and globs, format detection, and the JSON lines, CSV/TSV, Parquet and plain text readers.

The format is chosen by file suffix, or forced with ``format=`` / ``--format``; ``.gz`` is read through gzip:

* JSON lines (``.jsonl``, ``.ndjson``, ``.json``): one object per line, BEIR style
  ``{"_id": ..., "title": ..., "text": ...}``. Blank lines are skipped.
* CSV / TSV (``.csv``; ``.tsv``, ``.tab``): a header row names the columns (``csv`` module, strict quoting).
* Parquet (``.parquet``, ``.pq``): read in record batches with pyarrow (the ``corpus`` extra).
* Plain text (``.txt``): one document per line. Blank lines are skipped; they keep their line numbers.

Any other suffix, or none, is an error naming the file and these types (an ``.xlsx`` file is not text):
rename the file or force a format. Standard input (``-``) is read like a file (``_read_stdin``).
Files are read line by line (a Parquet file batch by batch), so memory does not grow with the file.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import gzip
import itertools
import json
import os
import sys
import zlib
from collections import deque
from collections.abc import Iterator
from pathlib import Path

from ...errors import InputError, missing_extra
from .records import Doc, Fields, OnBad, _bad, _check_columns, _make_doc, _wanted, compose, raise_on_bad
from .sources import BATCH_ROWS, Input, Source, _arrow_batches, _read_rows

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
CSV_FIELD_LIMIT = 32 << 20  # characters in one CSV field (see _read_csv)
BOM = b"\xef\xbb\xbf"
GZIP_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile)  # what a damaged .gz raises while it is read
UTF8_HINT = "re-encode the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)"


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


def _read_jsonl(path: Path, fields: Fields, on_bad: OnBad | None, prefix: str) -> Iterator[Doc]:
    """The records of a JSON lines file, one object per line; blank lines are skipped."""
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
            assert on_bad is not None  # damaged stands in only for a callback (below)
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
    """The records of a CSV or TSV file (a header row names the columns); a record's line is where it starts.

    Quoting is strict (``csv.reader(strict=True)``): a quoted field must be closed and followed by the
    delimiter, so a stray quote is an error at the record where it starts instead of rows merged in
    silence. A quote left open runs to the end of the file: that record (named by the line where it
    starts) is bad; with ``on_bad`` it is reported and the lines after its first are read again as
    records, so one stray quote costs one record. A field longer than ``CSV_FIELD_LIMIT`` (32 MiB; a
    document is never that long, a quote left open in a large file is) always raises: where such a
    field ends cannot be known, and a record is held in memory while it is read. This sets the ``csv``
    module's process-wide ``csv.field_size_limit`` to ``CSV_FIELD_LIMIT``.

    Raises:
        InputError: for a header that cannot be read, is not UTF-8 or lacks the id or text column, and
            for a field over ``CSV_FIELD_LIMIT``; a bad record goes to ``on_bad`` (without one, raises).
    """
    csv.field_size_limit(CSV_FIELD_LIMIT)  # deliberately, for the whole process (see above)
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
    """The rows of a Parquet file, ``BATCH_ROWS`` at a time; InputError for a damaged or non-Parquet file."""
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
    """One document per non-blank line of a text file, its id the line number."""
    for lineno, line in _lines(path, on_bad):
        if line.strip():
            yield Doc(f"{prefix}{lineno}", compose("", line), "", f"{path}:{lineno}")


def _read_stdin(src: Source, fields: Fields, on_bad: OnBad | None, prefix: str, format: str | None) -> Iterator[Doc]:
    """Standard input (``-``, once) as JSON lines when its first non-blank line starts with ``{``, else
    as plain text, unless a format is forced (csv, tsv; not parquet, which needs a seekable file;
    compressed input: pipe it through ``zcat``).

    Raises:
        InputError: when there is no standard input (``sys.stdin`` is None).
    """
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


def _open(path: Input):
    """A binary file object for a path (through gzip for ``.gz``), or stdin's lines for its Source."""
    if isinstance(path, Source):  # stdin: its lines, the ones read to detect its format first
        return contextlib.nullcontext(path.stream)
    return gzip.open(path, "rb") if str(path).lower().endswith(".gz") else open(path, "rb")


def _raw_lines(path: Path, on_bad: OnBad | None) -> Iterator[tuple[int, bytes, int]]:
    """(line number, bytes of the line, its byte offset in the file), the byte order mark dropped.

    A damaged compressed stream (a truncated ``.gz``, or a ``.gz`` file that is not gzip data) cannot be
    resynchronised: the lines read before the damage are kept, the damage is one bad record at the line
    it was reached (``path:N``, whose message says how many lines were read), and the rest of the file is
    skipped; the next file is read as usual. Without ``on_bad`` it raises ``InputError``. gzip checks its
    CRC only at the end of a stream: bytes flipped inside one can first decompress to wrong lines (bad
    records of their own, mostly), before the damage is reported.
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


def _lines(path: Path, on_bad: OnBad | None) -> Iterator[tuple[int, str]]:
    """(line number, decoded line without its newline); non-UTF-8 lines go to on_bad."""
    for lineno, raw, offset in _raw_lines(path, on_bad):
        line, error = _decode(raw, offset)
        if error:
            _bad(on_bad, f"{path}:{lineno}", error, UTF8_HINT)
            continue
        yield lineno, line.rstrip("\r\n")
