"""The eight patterns, table-driven: just above and just below every threshold, per regime.

Thresholds are written out below as literal numbers from analytics-spec section 5 (not
recomputed with the code's formula), so a wrong multiplier or comparison fails here.
Every scenario also checks that :func:`explain` agrees with :func:`evaluate` and leaves
the state alone.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any

import pytest

from core.bars import Bar
from core.patterns import (
    ALERT_FIELDS,
    PATTERNS,
    Alert,
    PatternConfig,
    PatternResult,
    PatternState,
    confidence,
    evaluate,
    explain,
    make_config,
)

START = 1_795_500_900  # a minute boundary: 2026-11-24 11:45 IST
TOKEN = 408065
CONFIG = PatternConfig()
REGIMES = ("LOW", "NORMAL", "HIGH", "PANIC")

# analytics-spec section 5, multiplied out by hand.
T = {
    "volume_spike": {"LOW": 1.54, "NORMAL": 2.2, "HIGH": 2.86, "PANIC": 3.96},
    "volume_breakout": {"LOW": 1.44, "NORMAL": 1.8, "HIGH": 2.52, "PANIC": 3.6},
    "volume_price_divergence": {"LOW": 1.05, "NORMAL": 1.5, "HIGH": 1.95, "PANIC": 2.7},
    "upside_momentum": {"LOW": 0.91, "NORMAL": 1.3, "HIGH": 1.69, "PANIC": 2.34},
    "downside_momentum": {"LOW": 0.91, "NORMAL": 1.3, "HIGH": 1.69, "PANIC": 2.34},
    "breakout": {"LOW": 1.44, "NORMAL": 1.8, "HIGH": 2.52, "PANIC": 3.6},
    "reversal": {"LOW": 1.12, "NORMAL": 1.6, "HIGH": 2.08, "PANIC": 2.88},
    "hidden_accumulation": {"LOW": 1.12, "NORMAL": 1.6, "HIGH": 2.08, "PANIC": 2.88},
}
# Price thresholds x m (HIGH 1.4, LOW 0.8, else 1.0: PANIC too).
P03 = {"LOW": 0.24, "NORMAL": 0.3, "HIGH": 0.42, "PANIC": 0.3}
P05 = {"LOW": 0.4, "NORMAL": 0.5, "HIGH": 0.7, "PANIC": 0.5}
P04 = {"LOW": 0.32, "NORMAL": 0.4, "HIGH": 0.56, "PANIC": 0.4}
P02 = {"LOW": 0.16, "NORMAL": 0.2, "HIGH": 0.28, "PANIC": 0.2}


# --------------------------------------------------------------------------------------
# scenario helpers


def bar(start: int, close: float, *, high: float | None = None, low: float | None = None,
        ticks: int = 5) -> Bar:  # fmt: skip
    """A bar whose own range is wide: the breakout rule must not read it."""
    return Bar(TOKEN, start, close, close + 5 if high is None else high,
               close - 5 if low is None else low, close, 1000, ticks)  # fmt: skip


def state_with(closes: list[float], *, high: float = 100.05, low: float = 99.95) -> PatternState:
    """A state that has seen one bar per close, the last one just before START."""
    bars = [(max(high, c), min(low, c), c) for c in closes]
    return PatternState(last_bar_start=START - 60, bars=bars)


def flat_history(n: int = 20) -> list[float]:
    return [100.0] * n


@dataclass
class Case:
    pattern: str
    regime: str | None
    r: float | None
    pc: float = 0.0  # percent over the previous close of 100
    rsi: float | None = 50.0
    expected: str | None = None
    history: list[float] = field(default_factory=flat_history)
    close: float | None = None  # overrides pc (reversal: p4)
    high: float = 100.05
    low: float = 99.95

    @property
    def id(self) -> str:
        return (f"{self.pattern}-{self.regime}-r{self.r}-pc{self.pc}-rsi{self.rsi}"
                f"-n{len(self.history)}-c{self.close}-{self.expected}")  # fmt: skip


def run(
    state: PatternState,
    current: Bar,
    *,
    r: float | None,
    rsi: float | None = 50.0,
    atr: float | None = 1.0,
    regime: str | None = "NORMAL",
    vix: float | None = 17.0,
    config: PatternConfig = CONFIG,
) -> PatternResult | None:
    """evaluate(), after checking that explain() on the same input agrees and is pure."""
    before = json.dumps(state.to_dict())
    inputs: dict[str, Any] = dict(
        volume_ratio=r, rsi=rsi, atr=atr, regime=regime, vix=vix, config=config
    )
    report = explain(state, current, **inputs)
    assert json.dumps(state.to_dict()) == before, "explain changed the state"
    json.dumps(report)  # JSON-ready for the debug command
    result = evaluate(state, current, symbol="INFY", exchange="NSE", **inputs)
    predicted = {(name, p["signal"]) for name, p in report["patterns"].items() if p["alerts"]}
    emitted = set() if result is None else {(a.pattern, a.signal) for a in result.alerts}
    assert predicted == emitted, "explain disagrees with evaluate"
    assert set(report["patterns"]) == set(PATTERNS)
    if result is not None:
        for a in result.alerts:
            assert report["patterns"][a.pattern]["confidence"] == a.confidence
    return result


def signal(case: Case) -> str | None:
    close = round(100.0 + case.pc, 6) if case.close is None else case.close
    state = state_with(case.history, high=case.high, low=case.low)
    result = run(state, bar(START, close), r=case.r, rsi=case.rsi, regime=case.regime)
    assert result is not None
    signals = [a.signal for a in result.alerts if a.pattern == case.pattern]
    assert len(signals) <= 1
    return signals[0] if signals else None


# --------------------------------------------------------------------------------------
# the threshold tables


def spike_cases() -> list[Case]:
    out = []
    for g in REGIMES:
        t = T["volume_spike"][g]
        p = "volume_spike"
        out += [
            Case(p, g, r=t, pc=0.5, expected="BUY"),
            Case(p, g, r=round(t - 0.01, 2), pc=0.5),
            Case(p, g, r=t, pc=-0.5, expected="SELL"),
            Case(p, g, r=t + 1, pc=0.1, expected="BUY"),  # >= 0.1, not scaled by m
            Case(p, g, r=t + 1, pc=0.09),
            Case(p, g, r=t + 1, pc=-0.1, expected="SELL"),
            Case(p, g, r=t + 1, pc=-0.09),
        ]
    return out


def volume_breakout_cases() -> list[Case]:
    out = []
    for g in REGIMES:
        t, m = T["volume_breakout"][g], P03[g]
        p = "volume_breakout"
        out += [
            Case(p, g, r=t, pc=m + 0.01, expected="BUY"),
            Case(p, g, r=round(t - 0.01, 2), pc=m + 0.01),
            Case(p, g, r=t + 1, pc=m),  # strictly above 0.3m
            Case(p, g, r=t + 1, pc=-(m + 0.01), expected="SELL"),
            Case(p, g, r=t + 1, pc=-m),
        ]
    return out


def divergence_cases() -> list[Case]:
    out = []
    for g in REGIMES:
        t, m = T["volume_price_divergence"][g], P05[g]
        p = "volume_price_divergence"
        out += [
            # absorption: heavy volume into a fall
            Case(p, g, r=t, pc=-(m + 0.01), expected="BUY"),
            Case(p, g, r=round(t - 0.01, 2), pc=-(m + 0.01)),
            Case(p, g, r=t + 1, pc=-m),
            # unconfirmed rise: a rise on thin volume (0.8 is not scaled)
            Case(p, g, r=0.79, pc=m + 0.01, expected="SELL"),
            Case(p, g, r=0.8, pc=m + 0.01),
            Case(p, g, r=0.79, pc=m),
            Case(p, g, r=0.0, pc=m + 0.01, expected="SELL"),
        ]
    return out


def momentum_cases() -> list[Case]:
    out = []
    for g in REGIMES:
        t, m = T["upside_momentum"][g], P05[g]
        up, down = "upside_momentum", "downside_momentum"
        out += [
            Case(up, g, r=t, pc=m + 0.01, rsi=69.99, expected="BUY"),
            Case(up, g, r=t, pc=m + 0.01, rsi=70.0),
            Case(up, g, r=round(t - 0.01, 2), pc=m + 0.01, rsi=50.0),
            Case(up, g, r=t, pc=m, rsi=50.0),
            Case(up, g, r=t, pc=m + 0.01, rsi=None),
            Case(up, g, r=t, pc=-(m + 0.01), rsi=50.0),
            Case(down, g, r=t, pc=-(m + 0.01), rsi=30.01, expected="SELL"),
            Case(down, g, r=t, pc=-(m + 0.01), rsi=30.0),
            Case(down, g, r=round(t - 0.01, 2), pc=-(m + 0.01), rsi=50.0),
            Case(down, g, r=t, pc=-m, rsi=50.0),
            Case(down, g, r=t, pc=-(m + 0.01), rsi=None),
            Case(down, g, r=t, pc=m + 0.01, rsi=50.0),
        ]
    return out


def breakout_cases() -> list[Case]:
    out = []
    for g in REGIMES:
        t, m = T["breakout"][g], P03[g]
        p = "breakout"
        up, down = m + 0.01, -(m + 0.01)
        out += [
            Case(p, g, r=t, pc=up, rsi=70.0, expected="BUY"),  # RSI bounds inclusive
            Case(p, g, r=t, pc=up, rsi=30.0, expected="BUY"),
            Case(p, g, r=t, pc=up, rsi=70.01),
            Case(p, g, r=t, pc=up, rsi=29.99),
            Case(p, g, r=t, pc=up, rsi=None),
            Case(p, g, r=round(t - 0.01, 2), pc=up),
            Case(p, g, r=t, pc=m),  # close above the high, but abs(pc) not > 0.3m
            Case(p, g, r=t, pc=down, expected="SELL"),
            Case(p, g, r=t, pc=down, rsi=30.0, expected="SELL"),
            # 19 earlier bars: no level to break
            Case(p, g, r=t, pc=up, history=[100.0] * 19),
            # close inside the earlier range: no breakout, whatever the move
            Case(p, g, r=t, pc=up, high=100.0 + up),
            Case(p, g, r=t, pc=up, high=round(100.0 + up - 0.01, 6), expected="BUY"),
            Case(p, g, r=t, pc=down, low=100.0 + down),
            Case(p, g, r=t, pc=down, low=round(100.0 + down + 0.01, 6), expected="SELL"),
        ]
    return out


def legs(first: float, second: float) -> tuple[list[float], float]:
    """Earlier closes p0..p3 and the current close p4 with these legs in percent."""
    p0 = 100.0
    p2 = round(p0 * (1 + first / 100), 8)
    p4 = round(p2 * (1 + second / 100), 8)
    return [100.0] * 16 + [p0, (p0 + p2) / 2, p2, (p2 + p4) / 2], p4


def reversal_cases() -> list[Case]:
    out = []
    p = "reversal"
    for g in REGIMES:
        t, f, s = T["reversal"][g], P04[g], P02[g]

        def case(r: float, first: float, second: float, expected: str | None = None,
                 *, g: str = g) -> Case:  # fmt: skip
            history, close = legs(first, second)
            return Case(p, g, r=r, history=history, close=close, expected=expected)

        out += [
            case(t, f + 0.01, -(s + 0.01), "SELL"),
            case(round(t - 0.01, 2), f + 0.01, -(s + 0.01)),
            case(t, f, -(s + 0.01)),
            case(t, f + 0.01, -s),
            case(t, -(f + 0.01), s + 0.01, "BUY"),
            case(round(t - 0.01, 2), -(f + 0.01), s + 0.01),
            case(t, -f, s + 0.01),
            case(t, -(f + 0.01), s),
            case(t, f + 0.01, s + 0.01),  # two rises are no reversal
        ]
        history, close = legs(f + 0.5, -(s + 0.5))
        out.append(Case(p, g, r=t + 1, history=history[-3:], close=close))  # 4 closes
    return out


def hidden_cases() -> list[Case]:
    out = []
    p = "hidden_accumulation"
    for g in ("LOW", "NORMAL"):
        t = T[p][g]
        out += [
            Case(p, g, r=t, pc=0.05, rsi=50.0, expected="BUY"),
            Case(p, g, r=round(t - 0.01, 2), pc=0.05, rsi=50.0),
            Case(p, g, r=1.99, pc=0.05, rsi=50.0, expected="BUY"),
            Case(p, g, r=2.0, pc=0.05, rsi=50.0),  # r < 2.0, not scaled
            Case(p, g, r=t, pc=0.0, rsi=45.01, expected="BUY"),
            Case(p, g, r=t, pc=0.0, rsi=45.0),
            Case(p, g, r=t, pc=0.0, rsi=64.99, expected="BUY"),
            Case(p, g, r=t, pc=0.0, rsi=65.0),
            Case(p, g, r=t, pc=0.0, rsi=None),
            Case(p, g, r=t, pc=0.09, expected="BUY"),
            Case(p, g, r=t, pc=-0.09, expected="BUY"),
            Case(p, g, r=t, pc=0.1),  # abs(pc) < 0.1, not scaled
            Case(p, g, r=t, pc=-0.1),
        ]
    # HIGH (T = 2.08) and PANIC (T = 2.88) leave no room below the 2.0 cap: never fires.
    for g in ("HIGH", "PANIC"):
        for r in (1.99, 2.0, T[p][g], T[p][g] + 0.5):
            out.append(Case(p, g, r=r, pc=0.0, rsi=55.0))
    return out


ALL_CASES = [
    *spike_cases(),
    *volume_breakout_cases(),
    *divergence_cases(),
    *momentum_cases(),
    *breakout_cases(),
    *reversal_cases(),
    *hidden_cases(),
]


@pytest.mark.parametrize("case", ALL_CASES, ids=[c.id for c in ALL_CASES])
def test_threshold_table(case: Case) -> None:
    assert signal(case) == case.expected


def test_every_pattern_fires_and_stays_quiet_in_every_regime() -> None:
    """The tables cover each pattern x regime both ways (hidden: quiet in HIGH/PANIC)."""
    seen = {(c.pattern, c.regime, c.expected is not None) for c in ALL_CASES}
    for pattern in PATTERNS:
        for regime in REGIMES:
            assert (pattern, regime, False) in seen
            if pattern != "hidden_accumulation" or regime in ("LOW", "NORMAL"):
                assert (pattern, regime, True) in seen


def test_regime_none_is_normal_and_says_so() -> None:
    quiet = Case("volume_spike", None, r=2.19, pc=0.5)
    loud = Case("volume_spike", None, r=2.2, pc=0.5, expected="BUY")
    assert signal(quiet) is None and signal(loud) == "BUY"
    state = state_with(flat_history())
    report = explain(state, bar(START, 100.5), volume_ratio=2.2, rsi=50.0, atr=1.0,
                     regime=None, vix=None, config=CONFIG)  # fmt: skip
    assert report["inputs"]["regime"] == "NORMAL" and report["inputs"]["regime_assumed"]
    result = evaluate(state, bar(START, 100.5), volume_ratio=2.2, rsi=50.0, atr=1.0,
                      regime=None, vix=None, config=CONFIG)  # fmt: skip
    assert result is not None
    fields = result.alerts[0].to_redis()
    assert fields["regime"] == "NORMAL" and fields["vix"] == ""


def test_regime_is_case_insensitive_and_unknown_is_an_error() -> None:
    assert signal(Case("volume_spike", "high", r=2.86, pc=0.5, expected="BUY")) == "BUY"
    state = state_with(flat_history())
    before = state.to_dict()
    with pytest.raises(ValueError, match="regime"):
        evaluate(state, bar(START, 101.0), volume_ratio=9.0, rsi=50.0, atr=1.0,
                 regime="EXTREME", vix=40.0, config=CONFIG)  # fmt: skip
    assert state.to_dict() == before


def test_missing_inputs_stop_the_patterns_that_read_them() -> None:
    state = state_with(flat_history())
    result = run(state, bar(START, 101.0), r=None)
    assert result is not None and result.alerts == ()  # every pattern needs r
    state = state_with(flat_history())
    result = run(state, bar(START, 101.0), r=9.0, rsi=None, atr=None)
    assert result is not None
    assert {a.pattern for a in result.alerts} == {"volume_spike", "volume_breakout"}
    assert all(a.stop_loss is None and a.rsi is None for a in result.alerts)
    # No previous bar: no pc, nothing fires.
    result = run(PatternState(), bar(START, 101.0), r=9.0)
    assert result is not None and result.alerts == ()
    # NaN counts as missing.
    result = run(state_with(flat_history()), bar(START, 101.0), r=float("nan"))
    assert result is not None and result.alerts == ()


def test_bad_bar_is_an_error_and_changes_nothing() -> None:
    state = state_with(flat_history())
    before = state.to_dict()
    with pytest.raises(ValueError, match="non-finite"):
        evaluate(state, bar(START, float("nan")), volume_ratio=3.0, rsi=50.0, atr=1.0,
                 regime="NORMAL", vix=17.0, config=CONFIG)  # fmt: skip
    assert state.to_dict() == before


# --------------------------------------------------------------------------------------
# cooldown, redelivery, determinism


def spike(state: PatternState, start: int, pc: float) -> PatternResult | None:
    """A bar that is a volume_spike and nothing else (0.1 <= abs(pc) < 0.3)."""
    previous = state.bars[-1][2]
    return run(state, bar(start, round(previous * (1 + pc / 100), 6)), r=2.5, rsi=None)


@pytest.mark.parametrize(("gap", "again"), [(299, False), (300, True), (240, False), (360, True)])
def test_cooldown_boundary(gap: int, again: bool) -> None:
    state = state_with(flat_history())
    first = spike(state, START, 0.25)
    assert first is not None and [a.pattern for a in first.alerts] == ["volume_spike"]
    second = spike(state, START + gap, 0.25)
    assert second is not None
    assert [a.pattern for a in second.alerts] == (["volume_spike"] if again else [])
    expected_suppressed = () if again else (f"{TOKEN}:volume_spike:BUY:{START + gap}",)
    assert second.suppressed == expected_suppressed


def test_cooldown_is_per_signal_and_counted_from_the_last_alert() -> None:
    state = state_with(flat_history())
    assert len(spike(state, START, 0.25).alerts) == 1  # type: ignore[union-attr]
    # The opposite signal has its own cooldown.
    sell = spike(state, START + 60, -0.25)
    assert sell is not None and [(a.pattern, a.signal) for a in sell.alerts] == [
        ("volume_spike", "SELL")
    ]
    # Suppressed at +240 s; that does not re-arm it, so +300 s fires.
    assert spike(state, START + 240, 0.25).alerts == ()  # type: ignore[union-attr]
    assert len(spike(state, START + 300, 0.25).alerts) == 1  # type: ignore[union-attr]
    assert state.cooldowns == {
        "volume_spike:SELL": START + 60 + 60,
        "volume_spike:BUY": START + 300 + 60,
    }


def test_cooldown_comes_from_the_config() -> None:
    config = make_config(cooldown=60)
    state = state_with(flat_history())
    for minute in range(3):  # the default 300 s would hold back the second and third
        previous = state.bars[-1][2]
        result = run(state, bar(START + 60 * minute, previous * 1.0025), r=2.5, rsi=None,
                     config=config)  # fmt: skip
        assert result is not None and [a.pattern for a in result.alerts] == ["volume_spike"]


def test_expired_cooldowns_are_pruned() -> None:
    state = state_with(flat_history())
    spike(state, START, 0.25)
    assert "volume_spike:BUY" in state.cooldowns
    spike(state, START + 300, 0.0)  # nothing fires; the cooldown has run out
    assert state.cooldowns == {}


def test_redelivered_bars_produce_nothing_and_change_nothing() -> None:
    state = state_with(flat_history())
    current = bar(START, 101.0)
    first = run(state, current, r=9.0)
    assert first is not None and first.alerts
    snapshot = state.to_dict()
    assert run(state, current, r=9.0) is None
    assert run(state, bar(START - 60, 90.0), r=9.0) is None  # late
    assert state.to_dict() == snapshot
    report = explain(state, current, volume_ratio=9.0, rsi=50.0, atr=1.0, regime="NORMAL",
                     vix=17.0, config=CONFIG)  # fmt: skip
    assert report["redelivered"] is True
    assert not any(p["alerts"] for p in report["patterns"].values())


def random_walk(seed: int, n: int) -> list[tuple[Bar, float, float]]:
    rng = random.Random(seed)
    price, out = 100.0, []
    for i in range(n):
        price = round(price * (1 + rng.gauss(0, 0.006)), 2)
        current = bar(START + 60 * i, price, high=price + 0.2, low=price - 0.2)
        out.append((current, round(rng.uniform(0.3, 6.0), 2), round(rng.uniform(20, 80), 2)))
    return out


def replay(state: PatternState, series: list[tuple[Bar, float, float]]) -> list[Alert]:
    alerts: list[Alert] = []
    for current, r, rsi in series:
        result = run(state, current, r=r, rsi=rsi, regime="NORMAL")
        if result is not None:
            alerts.extend(result.alerts)
    return alerts


def test_ids_are_deterministic_and_a_restored_state_continues_exactly() -> None:
    series = random_walk(7, 240)
    straight = replay(PatternState(), series)
    assert len(straight) > 20 and len({a.pattern for a in straight}) >= 5
    assert len({a.id for a in straight}) == len(straight)
    first = straight[0]
    assert first.id == f"{TOKEN}:{first.pattern}:{first.signal}:{first.bar_start}"

    # A worker that checkpoints (JSON) at bar 100, crashes, restores and replays from 90.
    state = PatternState()
    before = replay(state, series[:100])
    restored = PatternState.from_dict(json.loads(json.dumps(state.to_dict())))
    after = replay(restored, series[90:])
    assert before + after == straight
    assert len(restored.bars) == CONFIG.history_bars


def test_state_rejects_an_unknown_version() -> None:
    with pytest.raises(ValueError, match="version"):
        PatternState.from_dict({"v": 99, "last_bar_start": None, "bars": [], "cooldowns": {}})


def test_flat_bars_feed_the_history_but_never_alert() -> None:
    state = state_with(flat_history())
    flat = bar(START, 100.0, high=100.0, low=100.0, ticks=0)
    result = run(state, flat, r=1.7, rsi=55.0)  # would be hidden accumulation
    assert result is not None and result.alerts == () and result.suppressed == ()
    report = explain(state_with(flat_history()), flat, volume_ratio=1.7, rsi=55.0, atr=1.0,
                     regime="NORMAL", vix=17.0, config=CONFIG)  # fmt: skip
    assert report["patterns"]["hidden_accumulation"]["blocked_by"] == "flat bar"
    assert state.last_bar_start == START and state.bars[-1] == (100.0, 100.0, 100.0)


# --------------------------------------------------------------------------------------
# confidence, stop-loss, alert fields


@pytest.mark.parametrize(
    ("volume", "price", "expected"),
    [
        (1.0, 1.0, 0.10),
        (1.49, 1.49, 0.10),
        (1.5, 1.0, 0.242),
        (1.0, 1.5, 0.242),
        (3.3 / 2.2, 1.0, 0.242),  # 1.4999999999999998 is 1.5x
        (1.99, 1.0, 0.242),
        (2.0, 1.0, 0.383),
        (2.99, 1.0, 0.383),
        (3.0, 1.0, 0.525),
        (3.0, 1.5, 0.667),
        (3.0, 2.0, 0.808),
        (3.0, 3.0, 0.95),
        (50.0, float("inf"), 0.95),
    ],
)
def test_confidence_steps(volume: float, price: float, expected: float) -> None:
    assert confidence(volume, price) == expected


def test_confidence_through_the_rules() -> None:
    # volume_spike: r = 2 x 2.2 (step 2), pc = 3 x 0.1 (step 3): 0.10 + 0.85 x 5/6.
    state = state_with(flat_history())
    result = run(state, bar(START, 100.3), r=4.4, rsi=None)
    assert result is not None
    assert {a.pattern: a.confidence for a in result.alerts} == {"volume_spike": 0.808}
    # hidden_accumulation: r just at T (step 0), pc = 0: infinitely still (step 3).
    result = run(state_with(flat_history()), bar(START, 100.0), r=1.6, rsi=55.0)
    assert result is not None
    assert {a.pattern: a.confidence for a in result.alerts} == {"hidden_accumulation": 0.525}
    # divergence SELL: r = 0.4 is 2x below 0.8 (step 2), pc = 0.51 of 0.5 (step 0).
    result = run(state_with(flat_history()), bar(START, 100.51), r=0.4, rsi=90.0)
    assert result is not None
    assert {a.pattern: a.confidence for a in result.alerts} == {"volume_price_divergence": 0.383}


def test_confidence_stays_in_bounds_on_random_markets() -> None:
    allowed = {0.1, 0.242, 0.383, 0.525, 0.667, 0.808, 0.95}
    for seed in range(3):
        for a in replay(PatternState(), random_walk(seed, 200)):
            assert 0.10 <= a.confidence <= 0.95 and a.confidence in allowed


@pytest.mark.parametrize(
    ("close", "pc", "atr", "expected_signal", "stop"),
    [
        (100.5, 0.5, 1.0, "BUY", 99.0),  # 100.5 - 1.5
        (99.5, -0.5, 1.0, "SELL", 101.0),  # 99.5 + 1.5
        (100.5, 0.5, 10.0, "BUY", 95.475),  # 15 capped at 5% of 100.5 = 5.025
        (99.5, -0.5, 10.0, "SELL", 104.475),
        (100.5, 0.5, 3.35, "BUY", 95.475),  # 1.5 ATR = 5.025: exactly the cap
        (100.5, 0.5, None, "BUY", None),
        (100.5, 0.5, 0.0, "BUY", None),
    ],
)
def test_stop_loss(close: float, pc: float, atr: float | None, expected_signal: str,
                   stop: float | None) -> None:  # fmt: skip
    result = run(state_with(flat_history()), bar(START, close), r=2.2, rsi=None, atr=atr)
    assert result is not None
    (alert,) = [a for a in result.alerts if a.pattern == "volume_spike"]
    assert alert.signal == expected_signal and alert.stop_loss == stop


def test_alert_fields_match_the_spec() -> None:
    result = run(state_with(flat_history()), bar(START, 100.5), r=2.2, rsi=61.5, vix=17.25)
    assert result is not None
    (alert,) = [a for a in result.alerts if a.pattern == "volume_spike"]
    fields = alert.to_redis()
    assert tuple(fields) == ALERT_FIELDS
    assert fields == {
        "id": f"{TOKEN}:volume_spike:BUY:{START}",
        "token": str(TOKEN),
        "symbol": "INFY",
        "exchange": "NSE",
        "pattern": "volume_spike",
        "signal": "BUY",
        "confidence": "0.525",  # r at 1x (step 0), pc = 5x of 0.1 (step 3)
        "price": "100.5",
        "volume_ratio": "2.2",
        "pc": "0.5",
        "rsi": "61.5",
        "regime": "NORMAL",
        "vix": "17.25",
        "bar_start": "2026-11-24T11:45:00+05:30",
        "event_time": "2026-11-24T11:46:00+05:30",  # the bar's end
        "stop_loss": "99.0",
    }
    assert json.loads(alert.to_json()) == alert.to_public()
    assert Alert.from_dict(json.loads(json.dumps(alert.to_dict()))) == alert
    assert alert.event_ms == (START + 60) * 1000


def test_explain_lists_inputs_and_conditions() -> None:
    report = explain(state_with(flat_history()), bar(START, 100.43), volume_ratio=2.52,
                     rsi=55.0, atr=1.0, regime="HIGH", vix=22.0, config=CONFIG)  # fmt: skip
    assert report["inputs"]["m"] == 1.4 and report["inputs"]["pc"] == 0.43
    brk = report["patterns"]["breakout"]
    assert brk["inputs"]["T"] == 2.52 and brk["inputs"]["highest_high"] == 100.05
    assert brk["signal"] == "BUY" and brk["alerts"] is True
    names = [(c["name"], c["branch"], c["passed"]) for c in brk["conditions"]]
    assert names == [
        ("earlier bars >= lookback", None, True),
        ("abs(pc) > move*m", None, True),
        ("r >= T", None, True),
        ("RSI >= rsi_min", None, True),
        ("RSI <= rsi_max", None, True),
        ("close > highest_high", "BUY", True),
        ("close < lowest_low", "SELL", False),
    ]
    spike = report["patterns"]["volume_spike"]
    assert spike["signal"] is None and spike["conditions"][0] == {
        "name": "r >= T", "value": 2.52, "threshold": 2.86, "passed": False, "branch": None
    }  # fmt: skip


# --------------------------------------------------------------------------------------
# configuration


def test_make_config_merges_partial_overrides_and_rejects_typos() -> None:
    config = make_config(
        volume_thresholds={"volume_spike": 2.5},
        volume_multipliers={"breakout": {"HIGH": 1.6}},
        price_multipliers={"PANIC": 1.2},
        breakout_lookback=5,
    )
    assert config.volume_threshold("volume_spike", "NORMAL") == 2.5
    assert config.volume_threshold("volume_spike", "HIGH") == 3.25
    assert config.volume_threshold("breakout", "HIGH") == 2.88
    assert config.volume_threshold("breakout", "PANIC") == 3.6
    assert config.price_multiplier("PANIC") == 1.2
    assert config.history_bars == 5
    with pytest.raises(ValueError, match="unknown"):
        make_config(volume_thresholds={"volume_spyke": 2.5})
    with pytest.raises(ValueError, match="unknown"):
        make_config(volume_multipliers={"breakout": {"EXTREME": 3.0}})
    with pytest.raises(ValueError, match="positive"):
        make_config(spike_min_move=0.0)
    with pytest.raises(ValueError, match="rsi"):
        make_config(hidden_rsi_min=70.0)
    with pytest.raises(ValueError, match="lookback"):
        make_config(breakout_lookback=0)
    with pytest.raises(TypeError):
        make_config(no_such_setting=1.0)


def test_a_shorter_breakout_window_from_the_config() -> None:
    config = make_config(breakout_lookback=5)
    state = state_with([100.0] * 5)
    result = run(state, bar(START, 100.4), r=1.8, config=config)
    assert result is not None and "breakout" in {a.pattern for a in result.alerts}


def test_settings_defaults_are_the_spec_and_env_overrides_merge(monkeypatch) -> None:
    from config.patterns import pattern_config
    from config.settings import Settings

    assert pattern_config(Settings(_env_file=None)) == PatternConfig()
    monkeypatch.setenv("TICKFLOW_PATTERN_VOLUME_THRESHOLDS", '{"volume_spike": 2.5}')
    monkeypatch.setenv("TICKFLOW_PATTERN_COOLDOWN", "120")
    config = pattern_config(Settings(_env_file=None))
    assert config.volume_threshold("volume_spike", "NORMAL") == 2.5
    assert config.volume_threshold("reversal", "NORMAL") == 1.6
    assert config.cooldown == 120
