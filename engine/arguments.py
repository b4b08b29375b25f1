"""Checking the arguments of ``Embedder`` and its ``encode`` family, sentence-transformers' way.

What ``encode`` / ``encode_query`` / ``encode_document`` / ``embed`` accept (``ENCODE_KEYWORDS``),
what they refuse and say instead (``NOT_TAKEN``), the texts argument in every form users pass it
(a string, a list, a numpy array, a pandas Series, a pyarrow Array or ChunkedArray, an iterable;
``inputs=`` / ``sentences=``), flags given under both the engine's and sentence-transformers'
names, the constructor's model precision with its former name, and the prompts a user sets.
``positive_int`` / ``non_negative_int`` are the engine's one check of count-like arguments (bools
refused, numpy integers taken). Every refusal is an :class:`~engine.errors.InputError` naming the fix.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, MappingView, Set
from typing import Literal, overload

import numpy as np

from .errors import InputError
from .precisions import MODEL_PRECISIONS, MODEL_PRECISIONS_HELP, OUTPUT_PRECISIONS

# What encode / encode_query / encode_document / embed accept: sentence-transformers 5's keywords
# in its order, then the engine's own (normalize, show_progress: other names of
# normalize_embeddings and show_progress_bar; max_tokens).
ENCODE_KEYWORDS = (
    "prompt_name",
    "prompt",
    "batch_size",
    "show_progress_bar",
    "output_value",
    "precision",
    "convert_to_numpy",
    "convert_to_tensor",
    "device",
    "normalize_embeddings",
    "truncate_dim",
    "pool",
    "chunk_size",
    "task",
    "normalize",
    "show_progress",
    "max_tokens",
)
NO_POOL = "multi-process pools are not needed: batches already run on worker threads (Embedder.batch_workers)"
# sentence-transformers keywords the engine does not take, and what to do instead
NOT_TAKEN = {
    "processing_kwargs": "set Embedder.max_seq_length to change where texts are truncated",
}


def is_int(value) -> bool:
    """Whether ``value`` is an int or a numpy integer, and not a bool (True is not a batch size)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


@overload
def positive_int(value, name: str, *, allow_none: Literal[False] = False, hint: str = "") -> int: ...
@overload
def positive_int(value, name: str, *, allow_none: bool, hint: str = "") -> int | None: ...
def positive_int(value, name: str, *, allow_none: bool = False, hint: str = "") -> int | None:
    """``value`` checked to be an integer >= 1: the one check of every count-like argument.

    Args:
        value: an int or a numpy integer; bools are refused (``True`` is not a batch size).
        name: the argument's name, for the message.
        allow_none: accept None (and return it).
        hint: words for the message after "a positive integer", e.g. "(1 turns worker threads off)".

    Returns:
        ``int(value)``, or None when ``value`` is None and ``allow_none``.

    Raises:
        InputError: "<name> must be a positive integer[ or None][ <hint>], got <value!r>".
    """
    if value is None and allow_none:
        return None
    if not is_int(value) or value < 1:
        what = "a positive integer" + (" or None" if allow_none else "") + (f" {hint}" if hint else "")
        raise InputError(f"{name} must be {what}, got {value!r}")
    return int(value)


def non_negative_int(value, name: str, *, allow_none: bool = False) -> int | None:
    """``value`` checked to be an integer >= 0; as ``positive_int`` otherwise.

    Raises:
        InputError: "<name> must be an integer >= 0[ or None], got <value!r>".
    """
    if value is None and allow_none:
        return None
    if not is_int(value) or value < 0:
        raise InputError(f"{name} must be an integer >= 0{' or None' if allow_none else ''}, got {value!r}")
    return int(value)


def flag(name: str, value) -> bool | None:
    """A True/False/None argument as a bool or None; anything else is an InputError naming ``name``."""
    if value is None or isinstance(value, (bool, np.bool_)):
        return None if value is None else bool(value)
    raise InputError(f"{name} must be True, False or None, got {value!r}")


def one_of_two(name: str, value, st_name: str, st_value) -> bool | None:
    """The engine's and sentence-transformers' name for one flag: either, or both when they agree."""
    a, b = flag(name, value), flag(st_name, st_value)
    if a is not None and b is not None and a != b:
        raise InputError(f"{name}={value!r} and {st_name}={st_value!r} disagree; they name one option: pass one")
    return a if a is not None else b


def surrogate_check(text: str, where: str) -> None:
    """InputError when ``text`` holds a lone surrogate (not encodable as UTF-8); ``where`` names it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InputError(
            f"{where} holds a lone surrogate ({text[e.start]!r} at character {e.start}), not text; remove it, "
            "e.g. t.encode('utf-8', 'replace').decode()"
        ) from None


def check_container(texts) -> tuple[Iterable, bool]:
    """(the texts as an iterable, whether a single string was given); refuses what has no text order."""
    if isinstance(texts, str):
        if not texts.isascii():
            surrogate_check(texts, "the text")
        return [texts], True
    if texts is None:
        raise InputError("texts is None; pass a string or a list of strings")
    if isinstance(texts, (bytes, bytearray)):
        raise InputError("texts is bytes; decode it first, e.g. texts.decode('utf-8')")
    if isinstance(texts, np.ndarray):
        if texts.ndim == 0:
            raise InputError(
                f"texts is a 0-d array ({texts!r:.60}); pass texts.item() for one text, or a 1-d array or list of texts"
            )
        return texts.tolist(), False
    kind = type(texts).__name__
    if type(texts).__module__.startswith("pyarrow"):
        if hasattr(texts, "column_names"):  # Table, RecordBatch
            raise InputError(f"texts is a pyarrow {kind}, not a column of texts; pass one column, e.g. table['text']")
        if hasattr(texts, "to_pylist"):  # Array, ChunkedArray: iterating gives pyarrow scalars, not str
            return texts.to_pylist(), False
    if isinstance(texts, Mapping) or (hasattr(texts, "columns") and hasattr(texts, "iloc")):
        raise InputError(
            f"texts is a {kind}: iterating it gives its keys (column names), not texts; pass the texts "
            "themselves, e.g. list(d.values()) or df['text']"
        )
    if isinstance(texts, (Set, MappingView)):
        raise InputError(
            f"texts is a {kind}, whose order is not one encode can keep, so the vectors could not be matched "
            "to the texts; pass a list (e.g. sorted(texts) or list(d.values()))"
        )
    if not isinstance(texts, Iterable):
        raise InputError(f"texts must be a string or a list of strings, got {kind}")
    return texts, False


def check_items(items: list, offset: int = 0) -> None:
    """Every item a str without lone surrogates; errors name the text's index (``offset`` + position)."""
    for i, t in enumerate(items):
        if not isinstance(t, str):
            raise InputError(
                f"texts[{offset + i}] is {type(t).__name__} ({t!r:.60}), not str; convert or drop it "
                "(e.g. [str(t) for t in texts] or filter out None)"
            )
        if not t.isascii():
            surrogate_check(t, f"texts[{offset + i}]")


def prompts_argument(prompts) -> dict[str, str]:
    """A prompts dict ({name: text}) as sentence-transformers keeps it: None texts become "" (no prompt)."""
    if not isinstance(prompts, Mapping):
        raise InputError(
            f"prompts must be a dict of prompt name -> text, e.g. {{'query': 'query: '}}, got {prompts!r:.60}"
        )
    out = {}
    for name, text in prompts.items():
        if not isinstance(name, str) or not (text is None or isinstance(text, str)):
            raise InputError(f"prompts must map names (str) to texts (str), got {name!r}: {text!r:.60}")
        out[name] = text or ""
    return out


def check_texts(texts) -> tuple[list[str], bool]:
    """(list of texts, whether a single string was given), checked."""
    texts, single = check_container(texts)
    out = texts if single else list(texts)
    if not single:
        check_items(out)
    return out, single


def model_precision_argument(model_precision, precision, caller: str = "Embedder") -> str:
    """The model precision from ``model_precision`` and its former name ``precision`` (deprecated),
    checked; ``caller`` names the function in the messages."""
    if precision is not None:
        if model_precision not in ("fp32", precision):
            raise InputError(
                f"model_precision={model_precision!r} and precision={precision!r} disagree; precision= is the former "
                "name of model_precision=: pass model_precision only"
            )
        if precision not in MODEL_PRECISIONS and precision in OUTPUT_PRECISIONS:
            raise InputError(
                f"{caller}(precision={precision!r}): this precision is the model's "
                f"({MODEL_PRECISIONS_HELP}), now named model_precision=; {precision!r} quantizes output "
                f"vectors: pass it to encode(texts, precision={precision!r})"
            )
        warnings.warn(
            f"{caller}(precision=...) is now {caller}(model_precision=...), the precision the model runs in; "
            "encode(precision=...) quantizes the output vectors, as in sentence-transformers",
            DeprecationWarning,
            stacklevel=3,
        )
        model_precision = precision
    if model_precision not in MODEL_PRECISIONS:
        hint = (
            f"; {model_precision!r} quantizes output vectors: pass it to encode(texts, precision={model_precision!r})"
            if model_precision in OUTPUT_PRECISIONS
            else ""
        )
        raise InputError(f"model_precision must be {MODEL_PRECISIONS_HELP}, got {model_precision!r}{hint}")
    return model_precision


def texts_argument(texts, kwargs: dict):
    """``texts``, or sentence-transformers' ``inputs=`` / ``sentences=`` (taken out of kwargs)."""
    given = [k for k in ("inputs", "sentences") if k in kwargs]
    if not given:
        return texts
    if texts is not None or len(given) > 1:
        raise InputError(f"the texts are given twice (texts and {', '.join(given)}); pass them once")
    return kwargs.pop(given[0])
