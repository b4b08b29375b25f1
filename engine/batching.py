"""Length-sorted, token-budget batching.

Texts are sorted by token count (longest first, stable), then cut into batches that hold at
most ``batch_size`` texts, at most ``max_tokens`` padded tokens (rows x longest row) and at
most ``max_cells`` attention cells per head (rows x longest row^2), so short texts are not
padded to long ones and memory per batch is bounded. Callers scatter each batch's outputs back
by the returned indices, which restores the input order.

Why the attention cap: the attention scores of a batch take rows x heads x L^2 floats (100 MB
per layer for 32 texts of 256 tokens with 12 heads), and on a CPU the score/softmax passes run
at cache speed only while they fit. Capping rows x L^2 leaves batches of short texts alone and
cuts batches of long ones to a few rows (bench/token_budget.py has the measurements).
"""

from __future__ import annotations

import numpy as np


def plan_batches(
    lengths: np.ndarray, batch_size: int, max_tokens: int | None = None, max_cells: int | None = None
) -> list[np.ndarray]:
    """Split indices 0..n-1 into batches of similar length, longest first.

    A batch holds at least one text, so a single text over either budget runs alone.

    Args:
        lengths: (n,) token counts of the texts.
        batch_size: texts per batch, at most.
        max_tokens: padded tokens (rows x longest row) per batch, at most; None: no cap.
        max_cells: attention cells per head (rows x longest row^2) per batch, at most; None: no cap.

    Returns:
        int64 index arrays, one per batch, covering 0..n-1 once.

    Raises:
        ValueError: ``batch_size`` below 1.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = np.argsort(-lengths, kind="stable")
    batches: list[np.ndarray] = []
    start = 0
    n = len(order)
    while start < n:
        longest = max(int(lengths[order[start]]), 1)
        rows = batch_size
        if max_tokens is not None:
            rows = min(rows, max_tokens // longest)
        if max_cells is not None:
            rows = min(rows, max_cells // (longest * longest))
        rows = max(1, rows)
        batches.append(order[start : start + rows])
        start += rows
    return batches


def pad_batch(ids: list[np.ndarray], pad_id: int, left: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Pad token id arrays to the longest one, on the right (or the left when ``left``).

    Returns:
        (input_ids, attention_mask), both int64 (len(ids), longest): ``pad_id`` and 0 in the padding.
    """
    t = max(len(x) for x in ids)
    input_ids = np.full((len(ids), t), pad_id, dtype=np.int64)
    mask = np.zeros((len(ids), t), dtype=np.int64)
    for i, x in enumerate(ids):
        at = slice(t - len(x), t) if left else slice(0, len(x))
        input_ids[i, at] = x
        mask[i, at] = 1
    return input_ids, mask
