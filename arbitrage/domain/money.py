"""Exact money arithmetic: integer minor units, exact fractions, one half-even rounding.

Every fee quantity is ``amount × numerator / denominator`` with integer parts, so it can be
computed exactly and rounded once, both for one value (``round_half_even``) and for a whole
column at once (``round_half_even_array``) with identical results.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import numpy.typing as npt

# int64 products must stay below this so the vectorised path cannot overflow.
INT64_SAFE = 2**62


def round_half_even(numerator: int, denominator: int) -> int:
    """numerator / denominator rounded to the nearest integer, ties to even (banker's rounding)."""
    if denominator <= 0:
        raise ValueError("denominator must be positive")
    quotient, remainder = divmod(numerator, denominator)
    twice = 2 * remainder
    if twice > denominator or (twice == denominator and quotient % 2 == 1):
        quotient += 1
    return quotient


def round_fraction(value: Fraction) -> int:
    return round_half_even(value.numerator, value.denominator)


def round_half_even_array(
    numerator: npt.NDArray[np.int64], denominator: npt.NDArray[np.int64] | int
) -> npt.NDArray[np.int64]:
    """Element-wise ``round_half_even`` on int64 arrays (floor division keeps negatives exact).

    Object arrays of Python ints (for products too wide for int64) are rounded the same way
    and returned as int64: the rounded amounts themselves always fit.
    """
    if numerator.dtype == object:
        quotient = numerator // denominator
        twice = 2 * (numerator - quotient * denominator)
        round_up = (twice > denominator) | ((twice == denominator) & (quotient % 2 == 1))
        return (quotient + round_up.astype(np.int64)).astype(np.int64)
    # floor_divide by one divisor is several times faster than divmod (numpy divides by a
    # scalar without a division instruction per element); the remainder follows exactly, and
    # ``& 1`` is the parity of negative quotients too (two's complement).
    quotient = numerator // denominator
    twice = numerator - quotient * denominator
    twice += twice
    round_up = twice > denominator
    round_up |= (twice == denominator) & (quotient & 1).astype(bool)
    quotient += round_up
    return quotient


def convert_to_eur_cents(amount_minor: int, eur_per_unit: Fraction) -> int:
    """Minor units of a currency → EUR cents at an exact rate, rounded half-even once."""
    # Same exact value as round_fraction(amount_minor * eur_per_unit), without building (and
    # reducing) a Fraction per call: this runs for every price of every record.
    numerator, denominator = eur_per_unit.numerator, eur_per_unit.denominator
    if denominator == 1:
        return amount_minor * numerator  # a whole rate (EUR itself): nothing to round
    return round_half_even(amount_minor * numerator, denominator)


def format_minor(amount_minor: int, currency: str) -> str:
    """1234, "EUR" → "12.34 EUR" for people; never parsed back."""
    sign = "-" if amount_minor < 0 else ""
    units, cents = divmod(abs(amount_minor), 100)
    return f"{sign}{units}.{cents:02d} {currency}"
