"""engine.batching: length-sorted batches within the row, token and attention-cell budgets, and padding."""

from __future__ import annotations

import numpy as np

from engine.batching import pad_batch, plan_batches


def test_plan_batches_budget_and_cover():
    lengths = np.array([5, 100, 3, 50, 50, 7, 1, 100, 20])
    batches = plan_batches(lengths, batch_size=4, max_tokens=200)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(len(lengths)))
    for b in batches:
        assert len(b) <= 4
        assert lengths[b].max() * len(b) <= 200 or len(b) == 1
    # longest first, each batch sorted by length descending
    assert lengths[batches[0][0]] == 100
    assert all(lengths[b[i]] >= lengths[b[i + 1]] for b in batches for i in range(len(b) - 1))


def test_plan_batches_attention_cells():
    """max_cells caps rows x longest^2: long texts go a few at a time, short ones fill batch_size."""
    lengths = np.array([256] * 5 + [128] * 9 + [16] * 40)
    batches = plan_batches(lengths, batch_size=32, max_cells=2 * 256 * 256)
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(lengths)))
    sizes = [(int(lengths[b].max()), len(b)) for b in batches]
    assert sizes == [(256, 2), (256, 2), (256, 2), (128, 8), (16, 32), (16, 8)]
    # a text over the budget on its own still gets a batch; both budgets apply together
    assert [len(b) for b in plan_batches(np.array([600, 600]), 32, max_cells=1000)] == [1, 1]
    assert [len(b) for b in plan_batches(np.array([10] * 8), 32, max_tokens=30, max_cells=10_000)] == [3, 3, 2]


def test_pad_batch_mask():
    ids, mask = pad_batch([np.array([1, 2, 3]), np.array([4])], pad_id=0)
    np.testing.assert_array_equal(ids, [[1, 2, 3], [4, 0, 0]])
    np.testing.assert_array_equal(mask, [[1, 1, 1], [1, 0, 0]])
