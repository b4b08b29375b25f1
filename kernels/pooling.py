"""sentence-transformers' Pooling modes and its Dense / LayerNorm head, on the session's output.

Each function reproduces the torch code of sentence-transformers 5.x (models Pooling, Dense,
LayerNorm) on (batch, seq, dim) float32 token embeddings and a (batch, seq) 0/1 mask that already
excludes prompt tokens when the model says so. Masked positions are selected with ``np.where``,
never multiplied by 0, so a non-finite value at a padded position cannot leak into a vector.

Where it runs: after the onnxruntime session, on the host (mean in the Numba kernel of
``kernels.normalize``, the other modes in numpy), on every device except plain mean pooling on
CUDA, which stays in the graph (models/graph.py: the device-to-host copy shrinks by the sequence
length). Every mode and head costs a small fraction of a batch's session time, so none is worth a
graph edit of its own (the timings: bench/experiments/models_notes.md#kernels).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, vectorize

from .normalize import l2_normalize, mean_pool


def _valid(mask: np.ndarray) -> np.ndarray:
    return (np.asarray(mask) != 0)[:, :, None]


def cls_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """out_b = h_b,f(b), f(b) = first t with mask_bt = 1 (0 when none): the first real token, on either padding side."""
    first = np.argmax(np.asarray(mask) != 0, axis=1)
    return np.ascontiguousarray(hidden[np.arange(hidden.shape[0]), first], dtype=np.float32)


def max_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """out_bj = max_{t: mask_bt = 1} h_btj  (-inf for a row without tokens, as sentence-transformers)."""
    return np.where(_valid(mask), hidden, np.float32(-np.inf)).max(axis=1).astype(np.float32)


def mean_sqrt_len_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """out_b = sum_t mask_bt h_bt / sqrt(max(sum_t mask_bt, 1e-9))."""
    count = np.maximum((np.asarray(mask) != 0).sum(axis=1, dtype=np.float32), np.float32(1e-9))
    s = np.where(_valid(mask), hidden, np.float32(0)).sum(axis=1, dtype=np.float32)
    return (s / np.sqrt(count)[:, None]).astype(np.float32)


def weighted_mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """out_b = sum_t w_t mask_bt h_bt / max(sum_t w_t mask_bt, 1e-9), w_t = t + 1 (position in the padded row)."""
    w = (np.asarray(mask) != 0) * np.arange(1, hidden.shape[1] + 1, dtype=np.float32)[None, :]
    s = np.where(_valid(mask), hidden * w[:, :, None].astype(np.float32), np.float32(0)).sum(axis=1, dtype=np.float32)
    return (s / np.maximum(w.sum(axis=1, dtype=np.float32), np.float32(1e-9))[:, None]).astype(np.float32)


def last_token_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """out_b = h_b,l(b) if mask_b,l(b) = 1 else 0, l(b) = last t with mask_bt = 1 (seq - 1 when none)."""
    m = np.asarray(mask) != 0
    t = hidden.shape[1]
    last = t - 1 - np.argmax(m[:, ::-1], axis=1)
    rows = np.arange(hidden.shape[0])
    keep = m[rows, last][:, None]
    return np.where(keep, hidden[rows, last], np.float32(0)).astype(np.float32)


POOLERS = {
    "cls": cls_pool,
    "max": max_pool,
    "mean": mean_pool,
    "mean_sqrt_len_tokens": mean_sqrt_len_pool,
    "weightedmean": weighted_mean_pool,
    "lasttoken": last_token_pool,
}


def pool(hidden: np.ndarray, mask: np.ndarray, modes: tuple[str, ...]) -> np.ndarray:
    """sentence-transformers' Pooling: the pooled vectors of every mode, concatenated in order.

    Args:
        hidden: (batch, seq, dim) float32 token embeddings.
        mask: (batch, seq) 0/1 attention mask (prompt tokens already excluded when the model says so).
        modes: names in ``POOLERS``, e.g. ("cls", "mean").

    Returns:
        (batch, len(modes) * dim) float32.
    """
    outs = [POOLERS[m](hidden, mask) for m in modes]
    return outs[0] if len(outs) == 1 else np.ascontiguousarray(np.concatenate(outs, axis=1))


def exclude_prompt(mask: np.ndarray, prompt_length: int) -> np.ndarray:
    """The mask with each row's first ``prompt_length`` real tokens set to 0 (after any left padding)."""
    m = np.array(mask, copy=True)
    first = np.argmax(m != 0, axis=1)
    pos = np.arange(m.shape[1])[None, :]
    m[(pos >= first[:, None]) & (pos < (first + prompt_length)[:, None])] = 0
    return m


@vectorize(["float32(float32)"], cache=True)
def _gelu(x):
    """gelu(x) = x / 2 * (1 + erf(x / sqrt(2)))   (torch.nn.GELU(), approximate='none')."""
    return np.float32(0.5 * x * (1.0 + math.erf(x * 0.7071067811865476)))


def _sigmoid(x):
    return (np.float32(0.5) * (np.float32(1) + np.tanh(np.float32(0.5) * x))).astype(np.float32)


# Dense activations by the name models/stack.py gives each torch class
ACTIVATIONS = {
    "identity": lambda x: x,
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, np.float32(0)),
    "sigmoid": _sigmoid,
    "gelu": _gelu,
    "silu": lambda x: (x * _sigmoid(x)).astype(np.float32),
}


def dense(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, activation: str) -> np.ndarray:
    """y = act(x W^T + b)   (torch.nn.Linear then the activation), float32.

    Args:
        x: (n, in_features) float32.
        weight: (out_features, in_features).
        bias: (out_features,) or None.
        activation: a name in ``ACTIVATIONS`` (models/stack.py maps the torch classes to them).
    """
    y = x @ weight.T
    if bias is not None:
        y += bias
    return np.ascontiguousarray(ACTIVATIONS[activation](y), dtype=np.float32)


@njit(cache=True, fastmath=False)
def _layer_norm(x, w, b, eps, out):
    """out_i = (x_i - mean(x_i)) / sqrt(var(x_i) + eps) * w + b, var biased; accumulated in float64."""
    n, d = x.shape
    for i in range(n):
        mu = 0.0
        for j in range(d):
            mu += x[i, j]
        mu /= d
        var = 0.0
        for j in range(d):
            v = x[i, j] - mu
            var += v * v
        inv = 1.0 / np.sqrt(var / d + eps)
        for j in range(d):
            out[i, j] = (x[i, j] - mu) * inv * w[j] + b[j]


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """torch.nn.LayerNorm over the last axis of a (n, d) float32 array."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty_like(x)
    _layer_norm(x, weight, bias, eps, out)
    return out


def normalize(x: np.ndarray) -> np.ndarray:
    """The Normalize module: x / ||x||_2 per row (zero rows stay zero)."""
    return l2_normalize(x, copy=False)
