"""engine.quantize_embeddings against sentence-transformers' quantize_embeddings (the oracle)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from engine import InputError, quantize_embeddings

st_quantize = pytest.importorskip("sentence_transformers").quantize_embeddings

PRECISIONS = ["float32", "int8", "uint8", "binary", "ubinary"]
DIMS = [1, 7, 8, 9, 13, 64, 384]


def _data(n: int, dim: int, dtype=np.float32, seed: int = 0) -> np.ndarray:
    """Random rows with exact zeros, -0.0, repeated values (ties) and a constant column."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)).astype(dtype)
    x[::3, ::2] = 0.0
    x[1::5, 1::3] = -0.0
    x[2::4] = x[0]  # duplicate rows: equal values at every bucket boundary they hit
    x[:, dim // 2] = 0.25  # constant column: max == min, step 0 -> 1
    return x


def _same(ours: np.ndarray, theirs: np.ndarray) -> None:
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("dim", DIMS, ids=lambda d: f"dim{d}")
@pytest.mark.parametrize("precision", PRECISIONS)
def test_self_calibrated_matches_sentence_transformers(precision, dim):
    x = _data(300, dim)
    _same(quantize_embeddings(x, precision), st_quantize(x, precision))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64], ids=lambda t: np.dtype(t).name)
@pytest.mark.parametrize("precision", PRECISIONS)
def test_dtypes_match_sentence_transformers(precision, dtype):
    x = _data(200, 40, dtype)
    _same(quantize_embeddings(x, precision), st_quantize(x, precision))


@pytest.mark.parametrize("precision", ["int8", "uint8"])
def test_given_ranges_and_calibration_match(precision):
    cal = _data(500, 48, seed=1)
    x = _data(50, 48, seed=2) * 1.5  # values outside the calibrated range saturate at 0 / 255
    ranges = np.vstack((cal.min(axis=0), cal.max(axis=0)))
    ref = st_quantize(x, precision, ranges=ranges)
    _same(quantize_embeddings(x, precision, ranges=ranges), ref)
    via_cal = st_quantize(x, precision, calibration_embeddings=cal)
    _same(quantize_embeddings(x, precision, calibration_embeddings=cal), via_cal)
    _same(quantize_embeddings(x, precision, calibration_embeddings=cal), ref)
    # float64 ranges promote the arithmetic exactly as in sentence-transformers
    r64 = ranges.astype(np.float64) + 1e-9
    _same(quantize_embeddings(x, precision, ranges=r64), st_quantize(x, precision, ranges=r64))
    assert (ref.min(), ref.max()) == ((-128, 127) if precision == "int8" else (0, 255))


@pytest.mark.parametrize("precision", ["int8", "uint8"])
def test_bucket_boundaries_match(precision):
    """Values exactly on bucket edges lo + k * step (floor's ties) and at both ends of the range."""
    lo, hi = np.float32(-1.0), np.float32(1.0)
    ranges = np.array([[lo] * 4, [hi] * 4], np.float32)
    step = (hi - lo) / 255
    x = np.stack([lo + k * step * np.ones(4, np.float32) for k in range(256)]).astype(np.float32)
    _same(quantize_embeddings(x, precision, ranges=ranges), st_quantize(x, precision, ranges=ranges))


@pytest.mark.parametrize("precision", PRECISIONS)
def test_inf_matches(precision):
    """+-inf has a sign and saturates the 8-bit buckets: same results as sentence-transformers."""
    x = _data(10, 16)
    x[3, 4], x[5, 9] = np.inf, -np.inf
    ranges = np.vstack((np.full(16, -2.0, np.float32), np.full(16, 2.0, np.float32)))
    kw = {"ranges": ranges} if precision.endswith("int8") else {}
    _same(quantize_embeddings(x, precision, **kw), st_quantize(x, precision, **kw))


@pytest.mark.parametrize("dim", [5, 8, 13, 384], ids=lambda d: f"dim{d}")
@pytest.mark.parametrize("precision", PRECISIONS)
def test_single_vector(precision, dim):
    x = _data(3, dim)[:1]
    cal = _data(200, dim, seed=3)
    kw = {"calibration_embeddings": cal} if precision.endswith("int8") else {}
    ref = st_quantize(x, precision, **kw)
    _same(quantize_embeddings(x, precision, **kw), ref)  # (1, dim)
    _same(quantize_embeddings(x[0], precision, **kw), ref[0])  # (dim,) gives the 1-d row
    if precision.endswith("int8"):  # one row calibrating itself: every step 0 -> code 0 (-128 for int8)
        _same(quantize_embeddings(x, precision), st_quantize(x, precision))


@pytest.mark.parametrize("dim", [1, 7, 9, 13, 385], ids=lambda d: f"dim{d}")
def test_binary_padding_bits_are_zero(dim):
    x = np.ones((4, dim), np.float32)
    ub = quantize_embeddings(x, "ubinary")
    assert ub.shape == (4, -(-dim // 8))
    tail = dim % 8
    if tail:
        assert (ub[:, -1] == ((0xFF << (8 - tail)) & 0xFF)).all()
    _same(ub, st_quantize(x, "ubinary"))
    _same(quantize_embeddings(x, "binary"), st_quantize(x, "binary"))


def test_zero_is_bit_zero():
    """sentence-transformers' rule is x > 0: 0.0 and -0.0 are 0 bits, the smallest positive float is 1."""
    x = np.array([[0.0, -0.0, np.finfo(np.float32).tiny, -np.finfo(np.float32).tiny, 1e-45, 1, -1, 0]], np.float32)
    assert quantize_embeddings(x, "ubinary").tolist() == [[0b00101100]]
    _same(quantize_embeddings(x, "ubinary"), st_quantize(x, "ubinary"))


@settings(max_examples=60, deadline=None)
@given(
    x=hnp.arrays(
        np.float32,
        hnp.array_shapes(min_dims=2, max_dims=2, min_side=2, max_side=24),
        elements=st.floats(-4, 4, width=32) | st.sampled_from([0.0, -0.0, 1.0, -1.0]),
    ),
    precision=st.sampled_from(PRECISIONS),
)
def test_property_matches_sentence_transformers(x, precision):
    logging.getLogger("engine.quantization").disabled = True  # < 100 rows warns every example
    try:
        _same(quantize_embeddings(x, precision), st_quantize(x, precision))
    finally:
        logging.getLogger("engine.quantization").disabled = False


def test_torch_and_list_inputs():
    torch = pytest.importorskip("torch")
    x = _data(20, 24)
    for precision in PRECISIONS:
        ref = quantize_embeddings(x, precision)
        _same(quantize_embeddings(torch.from_numpy(x), precision), ref)
        _same(quantize_embeddings(list(x), precision), ref)
        _same(quantize_embeddings([torch.from_numpy(r) for r in x], precision), ref)


def test_empty_batch():
    x = np.empty((0, 13), np.float32)
    assert quantize_embeddings(x, "ubinary").shape == (0, 2)
    assert quantize_embeddings(x, "binary").dtype == np.int8
    assert quantize_embeddings(x, "float32").shape == (0, 13)
    assert quantize_embeddings(x, "int8", ranges=np.vstack((-np.ones(13), np.ones(13)))).shape == (0, 13)
    with pytest.raises(InputError, match="0 rows"):
        quantize_embeddings(x, "uint8")


def test_small_self_calibration_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="engine.quantization"):
        quantize_embeddings(_data(10, 8), "int8")
    assert "only 10 embedding" in caplog.text and "calibration_embeddings=" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="engine.quantization"):
        quantize_embeddings(_data(10, 8), "int8", calibration_embeddings=_data(10, 8))
    assert caplog.text == ""


@pytest.mark.parametrize("precision", PRECISIONS)
def test_nan_rejected(precision):
    x = _data(10, 16)
    x[4, 7] = np.nan
    with pytest.raises(InputError, match=r"NaN \(first at index \(4, 7\)\)"):
        quantize_embeddings(x, precision)
    with pytest.raises(InputError, match="NaN"):
        quantize_embeddings(x[4], precision, ranges=np.vstack((-np.ones(16), np.ones(16))))


BAD = [
    ("precision", lambda x: quantize_embeddings(x, "int4"), "precision must be one of 'float32', 'int8'"),
    ("precision-case", lambda x: quantize_embeddings(x, "INT8"), "got 'INT8'"),
    ("already-int8", lambda x: quantize_embeddings(x.astype(np.int8), "binary"), "already quantized"),
    ("int32", lambda x: quantize_embeddings(x.astype(np.int32), "binary"), r"float array .*astype\(np.float32\)"),
    ("strings", lambda x: quantize_embeddings([["a", "b"]], "binary"), "float array"),
    ("none", lambda x: quantize_embeddings(None, "binary"), "embeddings is None"),
    ("3d", lambda x: quantize_embeddings(x[None], "binary"), r"shape \(n, dim\) or \(dim,\)"),
    ("dim0", lambda x: quantize_embeddings(np.empty((3, 0), np.float32), "binary"), "dim >= 1"),
    ("ragged", lambda x: quantize_embeddings([[1.0, 2.0], [3.0]], "binary"), "same length"),
    ("ranges-shape", lambda x: quantize_embeddings(x, "int8", ranges=np.ones((2, 5))), r"shape \(2, 16\)"),
    (
        "ranges-inverted",
        lambda x: quantize_embeddings(x, "int8", ranges=np.vstack((np.ones(16), -np.ones(16)))),
        "maximum.*below",
    ),
    ("ranges-nan", lambda x: quantize_embeddings(x, "uint8", ranges=np.full((2, 16), np.nan)), "NaN or inf"),
    ("both", lambda x: quantize_embeddings(x, "int8", ranges=np.ones((2, 16)), calibration_embeddings=x), "not both"),
    ("calibration-dim", lambda x: quantize_embeddings(x, "int8", calibration_embeddings=x[:, :4]), r"\(m, 16\)"),
    (
        "calibration-inf",
        lambda x: quantize_embeddings(x, "int8", calibration_embeddings=np.full((3, 16), np.inf)),
        "NaN or inf",
    ),
    ("calibration-empty", lambda x: quantize_embeddings(x, "int8", calibration_embeddings=x[:0]), "non-empty"),
    ("1d-uncalibrated", lambda x: quantize_embeddings(x[0], "int8"), "single 1-d vector needs per-dimension ranges"),
]


@pytest.mark.parametrize("call,match", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_messages(call, match):
    with pytest.raises(InputError, match=match):
        call(_data(8, 16))


def test_pack_signs_is_packbits_up_to_bit_order():
    """The docstring's claim: kernels.binary.pack_signs (x > 0, little-endian uint64 words) gives
    sentence-transformers' bytes after reversing each byte's bits, for float32 input."""
    from engine.kernels import pack_signs

    rev = np.array([int(f"{i:08b}"[::-1], 2) for i in range(256)], np.uint8)
    for dim in (7, 64, 100, 384):
        x = _data(50, dim)
        words = pack_signs(x)
        _same(rev[words.view(np.uint8)[:, : -(-dim // 8)]], quantize_embeddings(x, "ubinary"))


def test_exported_lazily():
    import engine

    assert "quantize_embeddings" in engine.__all__
    assert engine.quantize_embeddings is quantize_embeddings


def test_import_is_light():
    """quantize_embeddings needs numpy only: no torch, numba or sentence-transformers at import or call."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np; from engine import quantize_embeddings as q; "
        "q(np.ones((2, 9), np.float32), 'binary'); q(np.ones((2, 9)), 'int8', ranges=np.zeros((2, 9))); "
        "print(sorted(m for m in ('torch', 'numba', 'sentence_transformers', 'onnxruntime') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
