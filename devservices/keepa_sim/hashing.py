"""Counter-based random numbers: each draw is a pure function of (seed, keys), so the market
at any moment is computed directly, for any products, without keeping or replaying state."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

_MASK = np.uint64(0xFFFFFFFFFFFFFFFF)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """SplitMix64's finaliser: every input bit moves every output bit."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def hashed(seed: int, *keys: npt.ArrayLike) -> npt.NDArray[np.uint64]:
    """64 well-mixed bits per element of the broadcast ``keys`` (integers)."""
    with np.errstate(over="ignore"):
        state = _mix(np.asarray(seed & 0xFFFFFFFFFFFFFFFF, dtype=np.uint64) + _GOLDEN)
        for key in keys:
            as_int = np.asarray(key).astype(np.int64).astype(np.uint64)
            state = _mix((state ^ as_int) * _GOLDEN + _GOLDEN)
    return state


def uniform(seed: int, *keys: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Uniform in [0, 1) per element: the top 53 bits of ``hashed``."""
    return (hashed(seed, *keys) >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def log_uniform(u: npt.NDArray[np.float64], low: float, high: float) -> npt.NDArray[np.float64]:
    return np.exp(np.log(low) + u * (np.log(high) - np.log(low)))
