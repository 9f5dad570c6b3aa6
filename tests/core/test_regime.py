"""Market regime from India VIX (core.regime): boundaries, thresholds, the Redis hash."""

from __future__ import annotations

import json
import math
from datetime import datetime

import pytest

from core.regime import (
    REGIME_FIELDS,
    Regime,
    RegimeState,
    classify,
    record_state,
    regime_state,
    state_at,
)
from core.timeutil import IST


@pytest.mark.parametrize(
    ("vix", "expected"),
    [
        (0.0, Regime.LOW),
        (11.8, Regime.LOW),
        (14.99, Regime.LOW),
        (math.nextafter(15.0, 0.0), Regime.LOW),
        (15.0, Regime.NORMAL),  # a boundary belongs to the higher regime
        (17.5, Regime.NORMAL),
        (math.nextafter(20.0, 0.0), Regime.NORMAL),
        (20.0, Regime.HIGH),
        (24.99, Regime.HIGH),
        (25.0, Regime.PANIC),
        (86.64, Regime.PANIC),  # March 2020
    ],
)
def test_default_boundaries(vix: float, expected: Regime) -> None:
    assert classify(vix) is expected


def test_thresholds_are_parameters() -> None:
    bands = {"normal_from": 12.0, "high_from": 18.0, "panic_from": 30.0}
    assert classify(11.9, **bands) is Regime.LOW
    assert classify(12.0, **bands) is Regime.NORMAL
    assert classify(20.0, **bands) is Regime.HIGH
    assert classify(29.9, **bands) is Regime.HIGH
    assert classify(30.0, **bands) is Regime.PANIC
    # equal thresholds leave a regime empty, which is a valid (if odd) configuration
    assert classify(20.0, normal_from=15.0, high_from=20.0, panic_from=20.0) is Regime.PANIC


@pytest.mark.parametrize(
    "bands",
    [
        {"normal_from": 20.0, "high_from": 15.0},
        {"high_from": 30.0, "panic_from": 25.0},
        {"normal_from": math.nan},
        {"panic_from": math.inf},
    ],
)
def test_bad_thresholds_are_a_configuration_error(bands: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="threshold"):
        classify(18.0, **bands)


@pytest.mark.parametrize("vix", [math.nan, math.inf, -1.0])
def test_bad_vix_is_rejected(vix: float) -> None:
    with pytest.raises(ValueError, match="VIX"):
        regime_state(vix, 1_769_664_600.0)


def test_redis_hash_and_table_form() -> None:
    event_time = datetime(2026, 1, 29, 10, 15, 3, tzinfo=IST).timestamp()
    state = regime_state(20.0, event_time)
    assert state == RegimeState(20.0, Regime.HIGH, event_time)
    out = state.to_redis()
    assert tuple(out) == REGIME_FIELDS
    assert out == {"vix": "20.0", "regime": "HIGH", "event_time": "2026-01-29T10:15:03+05:30"}
    odd = regime_state(13.370000000000001, event_time).to_redis()
    assert float(odd["vix"]) == 13.370000000000001  # repr-exact
    table_value = json.loads(json.dumps(state.to_dict()))
    assert RegimeState.from_dict(table_value) == state
    assert RegimeState.from_dict(table_value).regime is Regime.HIGH


def test_a_redelivered_older_tick_does_not_replace_a_newer_regime() -> None:
    newer = regime_state(26.0, 1_769_664_660.0)
    older = regime_state(14.0, 1_769_664_600.0)
    assert newer.supersedes(None)
    assert newer.supersedes(older)
    assert not older.supersedes(newer)
    assert newer.supersedes(newer)  # a redelivery of the same tick writes the same value


def test_regime_is_a_string_for_the_wire() -> None:
    assert Regime.PANIC == "PANIC"
    assert json.dumps({"regime": Regime.NORMAL}) == '{"regime": "NORMAL"}'
    assert [r.value for r in Regime] == ["LOW", "NORMAL", "HIGH", "PANIC"]


def test_the_regime_of_a_bar_is_the_one_in_effect_at_its_end_not_the_latest():
    value = None
    for t, vix in ((1000.0, 14.0), (1060.0, 14.5), (1120.0, 21.0), (1180.0, 26.0), (1240.0, 19)):
        value = record_state(value, regime_state(vix, t)) or value
    assert value is not None
    assert [change[1] for change in value["history"]] == ["LOW", "HIGH", "PANIC", "NORMAL"]
    assert state_at(value, 1100.0).regime is Regime.LOW  # a late bar: LOW then, NORMAL now
    assert state_at(value, 1120.0).regime is Regime.HIGH
    assert state_at(value, 1200.0).regime is Regime.PANIC
    assert state_at(value, 5000.0) == regime_state(19, 1240.0)
    assert state_at(value, 10.0).regime is Regime.LOW  # before any change: the earliest
    assert state_at(None, 10.0) is None
    # A redelivered older tick changes nothing.
    assert record_state(value, regime_state(30.0, 1100.0)) is None


def test_the_history_is_bounded():
    value = None
    for i in range(20):
        value = record_state(value, regime_state(10.0 if i % 2 else 30.0, float(i)), keep=5)
    assert value is not None and len(value["history"]) == 5
    assert value["history"][-1][0] == 19.0
