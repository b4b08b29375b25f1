"""Ids given to ``Index.add``: one kind per batch (int64 or str), one id per row, no repeats."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from engine.errors import InputError


def parse_ids(ids: Any, m: int) -> tuple[str | None, np.ndarray | list[str] | None]:
    """Parse the explicit ids of m new rows.

    Args:
        ids: A sequence (or array) of one int or str per row.
        m: The number of new rows.

    Returns:
        ``("int", int64 array)`` or ``("str", list of str)``; ``(None, None)`` for an empty batch.

    Raises:
        InputError: A single string, a wrong count, a mix of kinds, or integers beyond int64.
    """
    if isinstance(ids, (str, bytes)):
        raise InputError("ids must be a sequence with one id per vector, not a single string")
    ids_list = list(ids) if not isinstance(ids, np.ndarray) else ids
    if len(ids_list) != m:
        raise InputError(f"got {len(ids_list)} ids for {m} vectors; pass exactly one id per vector")
    if m == 0:
        return None, None
    if isinstance(ids_list, np.ndarray):
        arr = ids_list
        if arr.dtype == object:
            ids_list = arr.tolist()
    elif all(isinstance(v, str) for v in ids_list):
        arr = np.asarray(ids_list, dtype=object)
    elif all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in ids_list):
        try:
            arr = np.asarray(ids_list, dtype=np.int64)
        except OverflowError:
            raise InputError("integer ids must fit in int64") from None
    else:
        arr = np.asarray(ids_list, dtype=object)
    if arr.dtype.kind in "iu":
        if arr.dtype.kind == "u" and arr.size and arr.max() > np.iinfo(np.int64).max:
            raise InputError("integer ids must fit in int64")
        return "int", arr.astype(np.int64).reshape(-1)
    if arr.dtype.kind == "U" or (arr.dtype == object and all(isinstance(v, str) for v in ids_list)):
        return "str", [str(v) for v in ids_list]
    raise InputError(f"ids must all be integers or all be strings, got {arr.dtype} values; convert them to one kind")


def check_unique(new: np.ndarray | list[str], existing: np.ndarray | set[str] | None) -> None:
    """Check that new ids are unique, within the batch and against the index.

    Args:
        new: The batch's ids, as ``parse_ids`` returns them (int64 array or list of str).
        existing: The index's int64 ids, or its set of string ids (None or empty: none yet).

    Raises:
        InputError: An id repeats within ``new`` or is already in ``existing``.
    """
    if isinstance(new, np.ndarray):
        uniq, counts = np.unique(new, return_counts=True)
        if (counts > 1).any():
            raise InputError(f"duplicate ids in this batch: {uniq[counts > 1][:10].tolist()}; ids must be unique")
        dup = new[np.isin(new, existing)].tolist() if isinstance(existing, np.ndarray) and existing.size else []
    else:
        if d_in := repeated(new):
            raise InputError(f"duplicate ids in this batch: {d_in[:10]}; ids must be unique")
        dup = [v for v in new if existing and v in existing]
    if dup:
        raise InputError(
            f"ids already in the index: {dup[:10]}; ids must be unique "
            "(remove the old entries by rebuilding, or choose new ids)"
        )


def repeated(values: Iterable[str]) -> list[str]:
    """The values seen before in ``values``, in order (a value seen three times is listed twice)."""
    seen: set[str] = set()
    out: list[str] = []
    for v in values:
        if v in seen:
            out.append(v)
        else:
            seen.add(v)
    return out
