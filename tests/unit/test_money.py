from __future__ import annotations

from fractions import Fraction

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from arbitrage.domain.money import (
    convert_to_eur_cents,
    format_minor,
    round_fraction,
    round_half_even,
    round_half_even_array,
)


def test_half_even_ties_go_to_the_even_cent() -> None:
    assert round_half_even(1145, 10) == 114  # 114.5 → 114
    assert round_half_even(3435, 10) == 344  # 343.5 → 344
    assert round_half_even(-5, 10) == 0  # -0.5 → 0
    assert round_half_even(-15, 10) == -2  # -1.5 → -2
    assert round_half_even(1146, 10) == 115


def test_conversion_rounds_once() -> None:
    assert convert_to_eur_cents(100, Fraction("1.145")) == 114
    assert convert_to_eur_cents(300, Fraction("1.145")) == 344
    assert convert_to_eur_cents(1999, Fraction(1)) == 1999


@given(st.integers(-(10**12), 10**12), st.integers(1, 10**6))
def test_vectorised_rounding_equals_scalar(numerator: int, denominator: int) -> None:
    array = round_half_even_array(np.array([numerator], dtype=np.int64), np.array([denominator]))
    assert int(array[0]) == round_half_even(numerator, denominator)
    assert round_half_even(numerator, denominator) == round(Fraction(numerator, denominator))


def test_format_minor() -> None:
    assert format_minor(1234, "EUR") == "12.34 EUR"
    assert format_minor(-5, "GBP") == "-0.05 GBP"
    assert round_fraction(Fraction(5, 2)) == 2
