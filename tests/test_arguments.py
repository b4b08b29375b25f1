"""engine.arguments' integer validators: bools refused, numpy integers taken, the wording of the errors."""

from __future__ import annotations

import numpy as np
import pytest

from engine.arguments import is_int, non_negative_int, positive_int
from engine.errors import InputError

INTEGERS = [1, 7, 2**40, np.int64(3), np.int32(1), np.uint8(255), np.intp(12)]


@pytest.mark.parametrize("value", INTEGERS, ids=repr)
def test_positive_int_takes_python_and_numpy_integers(value):
    got = positive_int(value, "batch_size")
    assert got == int(value) and type(got) is int


@pytest.mark.parametrize(
    "value", [True, False, np.True_, np.False_, 0, -1, np.int64(0), np.int8(-3), 2.0, 1.5, "2", [1]], ids=repr
)
def test_positive_int_refuses_bools_zero_negatives_and_non_integers(value):
    with pytest.raises(InputError) as e:
        positive_int(value, "batch_size")
    assert str(e.value) == f"batch_size must be a positive integer, got {value!r}"


def test_positive_int_none_per_allow_none():
    assert positive_int(None, "max_tokens", allow_none=True) is None
    with pytest.raises(InputError, match=r"^max_tokens must be a positive integer, got None$"):
        positive_int(None, "max_tokens")
    with pytest.raises(InputError, match=r"^max_tokens must be a positive integer or None, got 0$"):
        positive_int(0, "max_tokens", allow_none=True)
    with pytest.raises(InputError, match=r"^max_tokens must be a positive integer or None, got True$"):
        positive_int(True, "max_tokens", allow_none=True)


def test_positive_int_hint_names_the_fix():
    with pytest.raises(InputError) as e:
        positive_int(0, "batch_workers", hint="(1 turns worker threads off)")
    assert str(e.value) == "batch_workers must be a positive integer (1 turns worker threads off), got 0"


@pytest.mark.parametrize("value", [0, *INTEGERS], ids=repr)
def test_non_negative_int_takes_zero_and_up(value):
    got = non_negative_int(value, "k")
    assert got == int(value) and type(got) is int


@pytest.mark.parametrize("value", [True, False, np.bool_(True), -1, np.int64(-1), 0.0, None], ids=repr)
def test_non_negative_int_refuses_bools_negatives_and_non_integers(value):
    with pytest.raises(InputError) as e:
        non_negative_int(value, "k")
    assert str(e.value) == f"k must be an integer >= 0, got {value!r}"
    assert non_negative_int(None, "k", allow_none=True) is None


def test_is_int_agrees_with_the_validators():
    for value in [*INTEGERS, 0, -1]:
        assert is_int(value), value
    for value in [True, False, np.True_, 1.0, "1", None]:
        assert not is_int(value), value
