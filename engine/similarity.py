"""sentence-transformers' similarity functions on numpy: cosine, dot, euclidean, manhattan.

``similarity(a, b, fn_name, pairwise=False)`` is ``util.cos_sim`` / ``dot_score`` /
``euclidean_sim`` / ``manhattan_sim`` and their ``pairwise_`` forms; ``Embedder.similarity`` and
``Embedder.similarity_pairwise`` call it with the model's ``similarity_fn_name``.
"""

from __future__ import annotations

import numpy as np

from .errors import InputError
from .models.stack import SIMILARITIES


def _as_rows(x, name: str, batch: bool) -> np.ndarray:
    """A float numpy array of ``x`` (array, list, torch tensor on any device); 1-d -> (1, d) when ``batch``."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    try:  # Python lists are float32, as torch.tensor makes them in sentence-transformers
        arr = np.asarray(x) if isinstance(x, np.ndarray) else np.asarray(x, dtype=_list_dtype(x))
    except (ValueError, TypeError) as e:
        raise InputError(f"{name} could not be read as an array of vectors ({e})") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise InputError(f"{name} must hold numbers (vectors), got dtype {arr.dtype}")
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float32)
    if batch and arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim not in ((2,) if batch else (1, 2)) or arr.shape[-1] == 0:
        raise InputError(f"{name} must be (n, dim) vectors or one (dim,) vector, got shape {arr.shape}")
    return arr


def _list_dtype(x):
    """float32 for nested Python lists of floats (sentence-transformers' torch.tensor), else numpy's choice."""
    first = x
    while isinstance(first, (list, tuple)) and first:
        first = first[0]
    return np.float32 if isinstance(first, (float, int)) and not isinstance(first, bool) else None


def _cosine(a, b):
    """cos(a_i, b_j) = a_i . b_j / (max(|a_i|, 1e-12) max(|b_j|, 1e-12)) (torch's normalize, as s-t)."""
    an = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
    bn = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-12)
    return an @ bn.T


def _euclidean(a, b):
    """-|a_i - b_j|_2 = -sqrt(max(|a_i|^2 + |b_j|^2 - 2 a_i . b_j, 0)), in float64 so near-equal rows give ~0."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    sq = (a64 * a64).sum(1)[:, None] + (b64 * b64).sum(1)[None, :] - 2 * (a64 @ b64.T)
    return -np.sqrt(np.maximum(sq, 0)).astype(np.result_type(a, b))


def _manhattan(a, b):
    """-sum_k |a_ik - b_jk|, a block of rows of a at a time (memory ~32 MB per block)."""
    out = np.empty((len(a), len(b)), dtype=np.result_type(a, b))
    step = max(1, (1 << 22) // max(1, len(b) * a.shape[1]))
    for s in range(0, len(a), step):
        out[s : s + step] = -np.abs(a[s : s + step, None, :] - b[None, :, :]).sum(-1)
    return out


_MATRIX = {"cosine": _cosine, "dot": lambda a, b: a @ b.T, "euclidean": _euclidean, "manhattan": _manhattan}
_PAIRWISE = {
    "cosine": lambda a, b: (
        a
        / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
        * (b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-12))
    ).sum(-1),
    "dot": lambda a, b: (a * b).sum(-1),
    "euclidean": lambda a, b: -np.sqrt(((a - b) ** 2).sum(-1)),
    "manhattan": lambda a, b: -np.abs(a - b).sum(-1),
}


def similarity(embeddings1, embeddings2, fn_name: str = "cosine", pairwise: bool = False):
    """sentence-transformers' similarity functions (``util.cos_sim``, ``dot_score``, ``euclidean_sim``,
    ``manhattan_sim`` and their ``pairwise_`` forms) on numpy, with the input's type back.

    cosine: a.b / (|a| |b|); dot: a.b; euclidean: -|a - b|_2; manhattan: -|a - b|_1 (higher is more
    similar, as there). Integer input (quantized vectors) is computed in float32.

    Args:
        embeddings1: (n, dim) vectors (a 1-d input is one row in the matrix form): a numpy array,
            a list, or a torch tensor on any device.
        embeddings2: (m, dim) vectors, likewise.
        fn_name: "cosine", "dot", "euclidean" or "manhattan".
        pairwise: score row i against row i only (the two inputs of one shape).

    Returns:
        (n, m) scores of every row of embeddings1 against every row of embeddings2, or (n,) when
        ``pairwise``: a tensor on the first tensor's device when either input is a torch tensor,
        else a numpy array.

    Raises:
        InputError: an unknown ``fn_name``, inputs that are not numeric vectors, different
            dimensions, or (pairwise) different shapes.
    """
    if fn_name not in _MATRIX:
        raise InputError(f"similarity function must be one of {', '.join(SIMILARITIES)}, got {fn_name!r}")
    like = next((x for x in (embeddings1, embeddings2) if hasattr(x, "detach") and hasattr(x, "cpu")), None)
    a, b = _as_rows(embeddings1, "embeddings1", not pairwise), _as_rows(embeddings2, "embeddings2", not pairwise)
    if a.shape[-1] != b.shape[-1]:
        raise InputError(f"the embeddings have different dimensions: {a.shape[-1]} and {b.shape[-1]}")
    if pairwise and a.shape != b.shape:
        raise InputError(f"similarity_pairwise needs two arrays of one shape, got {a.shape} and {b.shape}")
    out = (_PAIRWISE if pairwise else _MATRIX)[fn_name](a, b)
    if like is not None:
        import torch

        return torch.from_numpy(np.ascontiguousarray(out)).to(like.device)
    return out
