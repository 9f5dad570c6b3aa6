"""core.scenarios: the file, the plans, the rule check that makes labels trustworthy."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from core.patterns import PATTERNS, make_config
from core.scenarios import (
    Episode,
    EpisodePlan,
    Scenario,
    ScenarioError,
    check_overlaps,
    parse_scenario,
    plan_episode,
    realized_ratios,
    score,
    size_volumes,
)
from core.sessions import MINUTE_S
from core.timeutil import IST

AT = int(datetime(2026, 11, 24, 10, 23, tzinfo=IST).timestamp())
TOKEN = 738561  # NSE equity


def expected(start: int) -> float:
    """A baseline that varies by slot, as a real one does."""
    return 5000.0 + (start // 60 % 7) * 173.0


def plan(kind: str, signal: str | None = "BUY", **scenario: Any) -> EpisodePlan:
    episode = Episode(TOKEN, kind, AT, signal, name=kind)
    return plan_episode(episode, Scenario((), **scenario), expected, base_price=1512.4, tick=0.05)


# --- the file ------------------------------------------------------------------------


def test_parse_times_symbols_aliases_and_signal_words() -> None:
    data = {
        "date": "2026-11-24",
        "regime": "normal",
        "episodes": [
            {"token": TOKEN, "kind": "spike", "at": "10:23"},
            {"symbol": "NSE:INFY", "kind": "breakout", "signal": "down", "at": "2026-11-24T10:30"},
            {"token": 2953217, "kind": "divergence", "signal": "SELL",
             "at": "2026-11-24T04:53:00+00:00"},
            {"token": 2953217, "kind": "quiet", "at": "11:00", "minutes": 5, "shape": "natural"},
        ],
    }  # fmt: skip
    scenario = parse_scenario(
        data, resolve_symbol=lambda ex, sym: 408065 if sym == "INFY" else None
    )
    kinds = [(e.token, e.kind, e.signal, e.at) for e in scenario.episodes]
    assert kinds == [
        (TOKEN, "volume_spike", "BUY", AT),
        (408065, "breakout", "SELL", AT + 7 * 60),
        (2953217, "volume_price_divergence", "SELL", AT),
        (2953217, "quiet", None, AT + 37 * 60),
    ]
    assert scenario.regime == "NORMAL" and scenario.tokens == [TOKEN, 408065, 2953217]
    assert not scenario.episodes[3].scripted


@pytest.mark.parametrize(
    ("episode", "message"),
    [
        ({"token": TOKEN, "kind": "moonshot", "at": "10:00"}, "unknown kind"),
        ({"token": TOKEN, "kind": "upside_momentum", "signal": "SELL", "at": "10:00"}, "only"),
        ({"token": TOKEN, "kind": "breakout", "signal": "sideways", "at": "10:00"}, "signal"),
        ({"token": TOKEN, "kind": "quiet", "at": "10:00"}, "minutes"),
        ({"token": TOKEN, "kind": "reversal", "at": "10:00", "minutes": 3}, "quiet stretches"),
        ({"token": TOKEN, "kind": "reversal", "at": "2026-11-24T10:00:30"}, "not on a minute"),
        ({"token": "738561", "kind": "reversal", "at": "10:00"}, "positive integer"),
        ({"symbol": "NSE:NOPE", "kind": "reversal", "at": "10:00"}, "not in the instrument"),
    ],
)
def test_bad_episodes_are_named(episode: dict[str, object], message: str) -> None:
    data = {"date": "2026-11-24", "episodes": [{"token": 1, "kind": "quiet", "at": "9:30",
                                                "minutes": 1}, episode]}  # fmt: skip
    with pytest.raises(ScenarioError, match=message) as exc:
        parse_scenario(data, resolve_symbol=lambda ex, sym: None)
    assert "episode 2" in str(exc.value)


def test_a_time_of_day_needs_a_date() -> None:
    with pytest.raises(ScenarioError, match="needs a date"):
        parse_scenario({"episodes": [{"token": TOKEN, "kind": "reversal", "at": "10:00"}]})
    got = parse_scenario(
        {"episodes": [{"token": TOKEN, "kind": "reversal", "at": "10:23"}]},
        default_date=datetime(2026, 11, 24).date(),
    )
    assert got.episodes[0].at == AT


# --- volumes ---------------------------------------------------------------------------


def test_volumes_reach_the_ratio_targets_exactly() -> None:
    starts = [AT + i * MINUTE_S for i in range(12)]
    targets = [1.0, 1.0, 1.0, 1.0, 1.0, 2.5, 2.5, 2.5, 1.4, 1.0, 1.0, 1.0]
    volumes = size_volumes(starts, targets, 1, expected, window=5)
    got = realized_ratios(starts, volumes, 1, expected, 5)
    # 2.5 then 1.4 is infeasible (the big minute is still in the window): the minimum
    # is taken and the ratio actually reached is reported, not the target.
    for target, ratio, volume in zip(targets, got, volumes, strict=True):
        if volume > 1:
            assert ratio == pytest.approx(target, abs=1e-3)
    assert volumes[8] == 1 and got[8] > 1.4


# --- plans -----------------------------------------------------------------------------

KINDS = [
    ("volume_spike", "BUY"), ("volume_spike", "SELL"), ("volume_breakout", "BUY"),
    ("volume_breakout", "SELL"), ("breakout", "BUY"), ("breakout", "SELL"),
    ("reversal", "BUY"), ("reversal", "SELL"), ("volume_price_divergence", "BUY"),
    ("volume_price_divergence", "SELL"), ("hidden_accumulation", "BUY"),
    ("upside_momentum", "BUY"), ("downside_momentum", "SELL"),
]  # fmt: skip


@pytest.mark.parametrize(("kind", "signal"), KINDS)
def test_every_kind_alerts_exactly_as_intended(kind: str, signal: str) -> None:
    got = plan(kind, signal)
    assert got.target == AT
    assert got.window_start == AT - 22 * MINUTE_S and got.window_end == AT + 7 * MINUTE_S
    fired = {(a.pattern, a.signal, a.bar_start) for a in got.alerts}
    want = {(kind, signal, AT)} | (
        {("volume_breakout", signal, AT)} if kind == "breakout" else set()
    )
    assert fired == want
    assert [a.id for a in got.alerts if a.pattern == kind] == [f"{TOKEN}:{kind}:{signal}:{AT}"]
    assert all(m.volume >= 6 for m in got.minutes)


def test_all_eight_patterns_are_covered() -> None:
    assert {kind for kind, _ in KINDS} == set(PATTERNS)


def test_a_quiet_stretch_plans_no_alert() -> None:
    episode = Episode(TOKEN, "quiet", AT, None, minutes=15, name="q")
    got = plan_episode(episode, Scenario(()), expected, base_price=1500.0, tick=0.05)
    assert got.alerts == () and len(got.minutes) == 15 and got.target is None
    natural = plan_episode(
        Episode(TOKEN, "quiet", AT, None, minutes=15, shape="natural", name="n"),
        Scenario(()), expected, base_price=1500.0, tick=0.05,
    )  # fmt: skip
    assert natural.minutes == () and (natural.window_start, natural.window_end) == (AT, AT + 900)


def test_what_the_rules_cannot_label_is_refused() -> None:
    # Hidden accumulation cannot fire in HIGH (T = 2.08 > its ratio cap 2.0).
    with pytest.raises(ScenarioError, match="not one hidden_accumulation"):
        plan("hidden_accumulation", regime="HIGH")
    # Too short a lead-in: RSI depends on the unknown past, so the label would too.
    with pytest.raises(ScenarioError, match="depend on the history"):
        plan("hidden_accumulation", lead_in=6)
    # A coarse grid cannot place 0.1% moves.
    with pytest.raises(ScenarioError, match="too coarse"):
        plan_episode(Episode(TOKEN, "reversal", AT, "BUY"), Scenario(()), expected,
                     base_price=40.0, tick=0.05)  # fmt: skip


def test_plans_follow_the_configured_thresholds() -> None:
    config = make_config(volume_thresholds={"volume_spike": 3.0})
    got = plan("volume_spike", config=config)
    starts = [m.start for m in got.minutes]
    ratios = realized_ratios(starts, [m.volume for m in got.minutes], 1, expected, 5)
    assert ratios[starts.index(AT)] == pytest.approx(3.6, abs=1e-3)  # 1.2 x T


def test_overlapping_episodes_of_a_token_are_refused() -> None:
    one = plan("reversal", "BUY")
    two = plan_episode(Episode(TOKEN, "reversal", AT + 10 * MINUTE_S, "SELL", name="two"),
                       Scenario(()), expected, base_price=1512.4, tick=0.05)  # fmt: skip
    with pytest.raises(ScenarioError, match="overlap"):
        check_overlaps([one, two])
    check_overlaps([one])


def test_score_counts_only_the_labelled_windows() -> None:
    labels = {
        "episodes": [
            {"token": 1, "window_start": "2026-11-24T10:00:00+05:30",
             "window_end": "2026-11-24T10:30:00+05:30",
             "alerts": [{"id": f"1:volume_spike:BUY:{AT}"}]},
            {"token": 2, "window_start": "2026-11-24T10:00:00+05:30",
             "window_end": "2026-11-24T10:30:00+05:30", "alerts": []},
        ]
    }  # fmt: skip
    perfect = score(labels, [f"1:volume_spike:BUY:{AT}", f"3:reversal:BUY:{AT}"])
    assert (perfect["precision"], perfect["recall"]) == (1.0, 1.0)
    assert perfect["unlabelled"] == [f"3:reversal:BUY:{AT}"]
    noisy = score(labels, [f"2:reversal:SELL:{AT}"])
    assert (noisy["precision"], noisy["recall"]) == (0.0, 0.0)
    assert noisy["false"] == [f"2:reversal:SELL:{AT}"]
    assert noisy["missed"] == [f"1:volume_spike:BUY:{AT}"]
