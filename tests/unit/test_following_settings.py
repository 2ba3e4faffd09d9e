"""How long a sensor-launched run follows its partition comes from the environment."""

from __future__ import annotations

import pytest

from arbitrage.settings import Settings, SettingsError


def test_the_follow_window_and_linger_are_read_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "ARBITRAGE_RUN_IDLE_S": "7",
            "ARBITRAGE_RUN_MAX_S": "120",
            "ARBITRAGE_BATCH_LINGER_MS": "0",
        }
    )
    assert (settings.run_idle_s, settings.run_max_s, settings.batch_linger_ms) == (7, 120, 0)
    defaults = Settings.from_env({})
    assert (defaults.run_idle_s, defaults.run_max_s, defaults.batch_linger_ms) == (60, 900, 200)


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("ARBITRAGE_RUN_IDLE_S", "0", "ARBITRAGE_RUN_IDLE_S=0 must be at least 1"),
        ("ARBITRAGE_RUN_MAX_S", "soon", "ARBITRAGE_RUN_MAX_S='soon' is not an integer"),
        ("ARBITRAGE_BATCH_LINGER_MS", "-5", "ARBITRAGE_BATCH_LINGER_MS=-5 must be at least 0"),
    ],
)
def test_a_bad_value_is_refused_with_its_name(variable: str, value: str, says: str) -> None:
    with pytest.raises(SettingsError, match=says):
        Settings.from_env({variable: value})
