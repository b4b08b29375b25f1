"""kernels/pooling.py against sentence-transformers' own Pooling, Dense and LayerNorm modules."""

from __future__ import annotations

import numpy as np
import pytest


def _st_pool(hidden, mask, modes, prompt_length=None):
    import torch
    from sentence_transformers.models import Pooling

    p = Pooling(hidden.shape[2], pooling_mode=modes, include_prompt=prompt_length is None)
    feats = {"token_embeddings": torch.from_numpy(hidden), "attention_mask": torch.from_numpy(mask)}
    if prompt_length is not None:
        feats["prompt_length"] = prompt_length
    return p(feats)["sentence_embedding"].numpy()


def _pool_cases():
    rng = np.random.default_rng(7)
    h = rng.standard_normal((6, 9, 5)).astype(np.float32)
    right = np.array([[1] * 9, [1] * 4 + [0] * 5, [1] + [0] * 8, [1] * 2 + [0] * 7, [1] * 8 + [0], [1] * 3 + [0] * 6])
    left = right[:, ::-1].copy()
    return h, {"right": right, "left": left}


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize(
    "modes", ["cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken", ("cls", "mean", "lasttoken")]
)
@pytest.mark.parametrize("prompt_length", [None, 2])
def test_pooling_matches_sentence_transformers(side, modes, prompt_length):
    from engine.kernels.pooling import exclude_prompt, pool

    h, masks = _pool_cases()
    mask = masks[side].astype(np.int64)
    ref = _st_pool(h, mask, modes, prompt_length)
    m = exclude_prompt(mask, prompt_length) if prompt_length else mask
    ours = pool(h, m, modes if isinstance(modes, tuple) else (modes,))
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)  # -inf (max over no token) compares equal


def test_pooling_ignores_non_finite_padding():
    from engine.kernels.pooling import POOLERS

    h, masks = _pool_cases()
    bad = h.copy()
    bad[masks["right"] == 0] = np.nan
    for name, fn in POOLERS.items():
        np.testing.assert_allclose(fn(bad, masks["right"]), fn(h, masks["right"]), rtol=1e-6, err_msg=name)


@pytest.mark.parametrize("act", ["Tanh", "ReLU", "Sigmoid", "GELU", "SiLU", "Identity"])
def test_dense_and_layer_norm_match_torch(act):
    import torch

    from engine.kernels.pooling import dense, layer_norm

    rng = np.random.default_rng(3)
    x = (rng.standard_normal((7, 12)) * 3).astype(np.float32)
    x[0] = 0.0
    w = rng.standard_normal((5, 12)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    fn = getattr(torch.nn, act)()
    ref = fn(torch.nn.functional.linear(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b))).numpy()
    name = {"Identity": "identity"}.get(act, act.lower())
    np.testing.assert_allclose(dense(x, w, b, name), ref, rtol=1e-5, atol=1e-6)
    g, beta = rng.standard_normal(12).astype(np.float32), rng.standard_normal(12).astype(np.float32)
    ln = torch.nn.functional.layer_norm(torch.from_numpy(x), (12,), torch.from_numpy(g), torch.from_numpy(beta), 1e-5)
    np.testing.assert_allclose(layer_norm(x, g, beta), ln.numpy(), rtol=1e-5, atol=1e-5)
