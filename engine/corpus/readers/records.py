"""The record model: ``Doc`` out, ``Fields`` in, the title+text rule, and the checks every record passes.

Every reader turns a record (a JSON object, a CSV row, a table row, a dict) into a ``Doc`` with
``_make_doc``, which checks its id and text. A bad record goes to the reader's ``on_bad(where, message)``
handler (``OnBad``); ``where`` names the file and line (``path:7``) or the source and row
(``<DataFrame>: row 7``, ``<stdin>:7``, ``<generator>: row 7``, ``path: row 7`` for Parquet). Without a
handler a bad record raises ``InputError`` with a hint and ``SKIP_HINT`` (``raise_on_bad``: without it).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ...errors import InputError

if TYPE_CHECKING:
    from .sources import Input

SKIP_HINT = "or pass --skip-bad (skip_bad=True) to skip bad records and list them in OUTDIR/rejects.jsonl"
ID_HINT = "--id-field '' (id_field=None) for row numbers"
OnBad = Callable[[str, str], None]  # on_bad(where, message): told of each bad record, which is then skipped


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
    """Which record fields hold the id, the text, the title and any extra values.

    Attributes:
        id: the id field (``_id``). Ids are always strings (a JSON integer id 7 becomes ``"7"``). A record
            without it is an error, unless ``id`` is None (or ``""``): then a record's id is its 1-based
            number: the line where it starts in a JSON lines, CSV or text file (the header is line 1, so a
            CSV's first record is ``"2"``), or its row in a Parquet file, table, DataFrame (its position, not
            its index: ``df.reset_index()`` and ``id="index"`` for that) or iterable. Plain text and strings
            always take row numbers. With several inputs such an id is ``"<input>:<number>"`` (the path as
            given, or ``<stdin>``), so ids stay unique.
        text: the text field (``text``); a tuple of names takes the first one with a non-empty value.
        title: the title field (``title``); None or ``""``: no title.
        extra: more fields to carry along in ``Doc.extra`` (e.g. a label), None where a record lacks one.
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


DEFAULT_FIELDS = Fields()  # BEIR's _id, text and title: what the readers take by default
# Benchmark texts: no id needed, the text from the first non-empty of these fields.
ANY_TEXT = Fields(id=None, text=("text", "sentence", "body"))


def compose(title: str, text: str) -> str:
    """The text that is embedded: ``(title + " " + text).strip()``, BEIR's rule; the one rule.

    A plain text line is a record without a title: it is embedded stripped. An empty text is embedded as
    sentence-transformers embeds ``""`` (just the special tokens).
    """
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


def _bad(on_bad: OnBad | None, where: str, message: str, hint: str = "") -> None:
    """Report a bad record to ``on_bad`` (the reader then skips it); without a handler raise InputError
    ``"<where>: <message>. <Hint>, <SKIP_HINT>."`` (``raise_on_bad``: without the skip hint)."""
    if on_bad is None or on_bad is raise_on_bad:
        hint = hint or "fix the record"
        skip = f", {SKIP_HINT}" if on_bad is None else ""
        raise InputError(f"{where}: {message}. {hint[0].upper()}{hint[1:]}{skip}.")
    on_bad(where, message)


def _either(names: Sequence[str]) -> str:
    return "' or '".join(names)


def _text_name(record: Mapping, names: tuple[str, ...]) -> str | None:
    """The first of ``names`` with a non-empty value, else the first present, else None."""
    present = [n for n in names if n in record]
    return next((n for n in present if isinstance(record[n], str) and record[n]), present[0] if present else None)


def _make_doc(record: Mapping, fields: Fields, where: str, on_bad: OnBad | None, line_id: str) -> Doc | None:
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
    assert text_name is not None  # the loop returned when no text field is present
    doc_id = line_id if fields.id is None else _id_value(record[fields.id], fields.id, where, on_bad)
    text = _text_value(record[text_name], text_name, where, on_bad, "--text-field")
    if doc_id is None or text is None:
        return None
    title = None
    if fields.title:
        title = record.get(fields.title)
        if title is not None and not isinstance(title, str):
            title = _text_value(title, fields.title, where, on_bad, "--title-field")
            if title is None:
                return None
    title = title or ""
    full = compose(title, text)
    if not _encodable(full, where, on_bad):
        return None
    return Doc(doc_id, full, title, where, tuple(record.get(n) for n in fields.extra))


def _text_value(value, name: str, where: str, on_bad: OnBad | None, flag: str) -> str | None:
    """``value`` if it is a string, else None after reporting a bad record (``flag`` chooses another field)."""
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
    """The id as a string (an int as its digits), else None after reporting a bad record."""
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
